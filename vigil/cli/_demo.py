"""``vigil demo``: write a demonstration flight log, then verify it.

Until the supervisor lands, the workload is synthetic and says so in the log: a seeded stream
of inference calls whose primary "model" degrades for a while (NaN outputs), so that the log
shows the whole degradation cycle -- NORMAL, DEGRADED with fallback answers, RECOVERING with
probes, NORMAL again -- plus a rejected input and operator annotations. Every digest is a real
SHA-256 of the synthetic input and output bytes. The supervisor's real demo keeps this
command's contract: ``--out DIR`` gets ``DIR/flight.vigil``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
import time

from vigil.auditlog import FlightRecorder, LogReader, RingConfig
from vigil.schemas import Outcome, ServedBy, State, lookup

MODEL_DIGEST = hashlib.sha256(b"vigil synthetic reference workload v1").digest()
DEADLINE_NS = 20_000_000


def _command_name() -> str:
    """``vigil`` when that is on PATH, else the path this command was started by."""
    invoked = sys.argv[0]
    if shutil.which("vigil") or not invoked.endswith("vigil"):
        return "vigil"
    return invoked


def run(out: str, calls: int, seed: int) -> int:
    """Write ``out/flight.vigil`` with ``calls`` inference records; return the exit code."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "flight.vigil")
    if os.path.exists(path):
        os.remove(path)  # the demo's own output from a previous run
    rng = random.Random(seed)
    fail_from, fail_to = calls // 3, calls // 3 + max(calls // 10, 8)
    state = State.NORMAL
    good_probes = 0
    served = {ServedBy.PRIMARY: 0, ServedBy.FALLBACK: 0}
    transitions = 0
    start = time.perf_counter()
    with FlightRecorder.create(path, RingConfig(size=16 << 20, segment_size=256 << 10)) as log:
        log.annotate("vigil.demo", f"synthetic workload: {calls} calls, seed {seed}")

        def move(to: State, cause: int, reason: str) -> None:
            nonlocal state, transitions
            log.record_transition(state, to, cause_seq=cause, reason=reason)
            state, transitions = to, transitions + 1

        for i in range(calls):
            x = rng.randbytes(64)
            rid = rng.randbytes(16)
            if i == calls // 2:
                log.record_rejected(
                    request_id=rid,
                    input_digest=hashlib.sha256(x).digest(),
                    code=lookup("DIA-2047").number,
                    reason="input shape [1, 3, 17] != [1, 3, 16]",
                )
                continue
            failing = fail_from <= i < fail_to
            latency = int(rng.gauss(2_500_000, 300_000))
            if state is State.NORMAL or state is State.RECOVERING:
                outcome = Outcome.INVALID_OUTPUT if failing else Outcome.OK
                by = ServedBy.PRIMARY if outcome is Outcome.OK else ServedBy.FALLBACK
            else:
                outcome, by = Outcome.OK, ServedBy.FALLBACK
            y = rng.randbytes(32) if outcome is Outcome.OK else b"nan" * 8
            seq = log.record_inference(
                request_id=rid,
                model_digest=MODEL_DIGEST,
                input_digest=hashlib.sha256(x).digest(),
                output_digest=hashlib.sha256(y).digest(),
                state=state,
                served_by=by,
                outcome=outcome,
                latency_ns=max(latency, 1),
                deadline_ns=DEADLINE_NS,
                flags=1 if state is State.RECOVERING else 0,
            )
            served[by] += 1
            if state is State.NORMAL and failing:
                move(State.DEGRADED, seq, "primary returned NaN (output contract)")
            elif state is State.DEGRADED and i >= fail_to:
                move(State.RECOVERING, seq, "cooldown elapsed; probing the primary")
            elif state is State.RECOVERING:
                good_probes = good_probes + 1 if outcome is Outcome.OK else 0
                if outcome is not Outcome.OK:
                    move(State.DEGRADED, seq, "probe failed")
                elif good_probes == 5:
                    move(State.NORMAL, seq, "5 consecutive good probes")
        log.annotate("vigil.demo", "workload finished")
    elapsed = time.perf_counter() - start
    with LogReader(path) as reader:
        report = reader.verify()
    print(f"vigil demo: wrote {path}")
    print(
        f"  {calls} calls in {elapsed:.2f} s (synthetic workload on the CPU): "
        f"{served[ServedBy.PRIMARY]} answered by the primary, "
        f"{served[ServedBy.FALLBACK]} by the fallback, 1 rejected, {transitions} transitions"
    )
    print(
        f"  verify: {'INTACT' if report.intact else 'NOT INTACT'} "
        f"({report.records} records, {report.seconds * 1000:.1f} ms)"
    )
    vigil = _command_name()
    print("  next:")
    print(f"    {vigil} verify {path}")
    print(f"    {vigil} dump {path} --type transition")
    print(f"    {vigil} inspect {path}")
    return 0 if report.intact else 1
