"""``vigil demo``: the supervisor around the reference model, driven through every state.

Frames arrive at 1 kHz, like a sensor stream. A seeded fault plan makes the primary fail in
every way the supervisor must handle --
exceptions, NaN outputs, wrong shapes, out-of-memory, slow calls, a hang past the deadline,
and finally a persistent failure whose recoveries keep failing until SAFE_STOP -- while bad
inputs are sent now and then (rejected by the input contract; an output contract catches
wrong shapes). An operator reset (audited) ends the safe stop. A progress
line shows the state, the calls, the fallbacks and the p99 latency. At the end the log is
verified and replayed against its policy, and a timeline picture is drawn from it.

The faults are scheduled by the primary's own call count, so the sequence of outcomes is the
same on every machine; how many calls the fallback answers in between depends on timing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from typing import Any

import torch

from vigil.auditlog import LogReader, RingConfig
from vigil.errors import InvalidInput, Unavailable
from vigil.fsm import Policy
from vigil.model import IN_FEATURES, TinyFallback, TinyReference
from vigil.runtime import Constant, FallbackModel, LastGood, Supervisor, replay
from vigil.runtime._faults import Fault, FaultPlan, FaultyModel
from vigil.schemas import Contract, ServedBy, State, TensorSpec

MS = 1_000_000
POLICY = Policy(
    consecutive_failures=3,
    window=20,
    min_calls=10,
    failure_rate=0.5,
    slow_call_ns=10 * MS,
    slow_rate=0.5,
    cooldown_ns=15 * MS,
    cooldown_backoff=2.0,
    cooldown_max_ns=120 * MS,
    probes_required=5,
    probe_mode="shadow",
    max_recovering_ns=2_000 * MS,
    max_failed_recoveries=3,
    failed_recovery_period_ns=60_000 * MS,
)
DEADLINE_NS = 25 * MS
FRAME_PERIOD_S = 0.001  # the frames arrive like a 1 kHz sensor stream
SAFE_STOP_HOLD = 100  # calls answered in SAFE_STOP before the operator resets


def plan_for(seed: int, calls: int) -> FaultPlan:
    """The fault schedule, by the primary's call index, scaled to the demo's length."""
    k = max(calls // 2000, 1)
    plan = FaultPlan(seed)
    plan.at_calls([150 * k], Fault.SLOW, delay_s=0.012)
    plan.at_calls(range(200 * k, 200 * k + 3), Fault.EXCEPTION)  # trip: 3 in a row
    plan.at_calls([400 * k], Fault.NAN)
    plan.at_calls([400 * k + 1], Fault.OOM)
    plan.at_calls([400 * k + 2], Fault.WRONG_SHAPE)  # trip again ...
    plan.at_calls([400 * k + 3], Fault.EXCEPTION)  # ... and the first probe fails
    plan.at_calls([550 * k], Fault.HANG, hang_s=0.15)  # past the deadline, hung for a while
    plan.at_calls(range(700 * k, 700 * k + 7), Fault.EXCEPTION)  # recovery keeps failing
    plan.with_probability(0.01, Fault.SLOW, delay_s=0.012)
    return plan


def run(out: str, calls: int, seed: int, device: str) -> int:
    """Write ``out/flight.vigil`` and ``out/timeline.png``; return the exit code."""
    dev = _device(device)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "flight.vigil")
    if os.path.exists(path):
        os.remove(path)  # the demo's own output from a previous run
    torch.manual_seed(seed)
    reference = TinyReference(seed).to(dev)
    fallback = TinyFallback(reference).to(dev)
    plan = plan_for(seed, calls)
    primary = FaultyModel(_no_grad(reference), plan)
    contract = Contract(TensorSpec(shape=(1, IN_FEATURES), dtype=torch.float32, device=dev.type))
    output_contract = Contract(TensorSpec(shape=(1, 8), dtype=torch.float32, device=dev.type))
    frames = torch.randn(64, 1, IN_FEATURES, device=dev)
    bad = torch.full((1, IN_FEATURES), float("nan"), device=dev)
    progress = _Progress(calls)
    start = time.perf_counter()
    held = 0
    with Supervisor(
        primary,
        log=path,
        policy=POLICY,
        deadline_ns=DEADLINE_NS,
        input_contract=contract,
        output_contract=output_contract,
        fallback=[
            FallbackModel(_no_grad(fallback)),
            LastGood(200 * MS),
            Constant(torch.zeros(1, 8, device=dev)),
        ],
        ring=RingConfig(size=32 << 20, segment_size=256 << 10),
    ) as sup:
        sup.log.annotate("vigil.demo", f"{calls} calls, seed {seed}, device {dev}")
        next_frame = time.perf_counter()
        for i in range(calls):
            next_frame += FRAME_PERIOD_S
            time.sleep(max(0.0, next_frame - time.perf_counter()))
            x = bad if i % 250 == 249 else frames[i % len(frames)]
            with contextlib.suppress(InvalidInput, Unavailable):  # both are recorded
                sup.infer(x)
            if sup.state is State.SAFE_STOP:
                held += 1
                if held == SAFE_STOP_HOLD:
                    sup.reset("demo operator: the persistent fault was cleared")
            if i % 50 == 0 or i == calls - 1:
                progress.show(i + 1, sup)
        stats = sup.statistics()
        plan.release()
    progress.done()
    elapsed = time.perf_counter() - start
    with LogReader(path) as reader:
        report = reader.verify()
    replayed = replay(path)
    png = os.path.join(out, "timeline.png")
    from vigil.cli import _timeline  # noqa: PLC0415 - matplotlib only when drawing

    _timeline.render(path, png, f"vigil demo: {calls} calls on {dev} (seed {seed})")
    served = stats.served
    print(f"vigil demo: wrote {path} and {png}")
    print(
        f"  {calls} calls in {elapsed:.1f} s on {dev}: "
        f"{served.get('PRIMARY', 0)} by the primary, {served.get('FALLBACK', 0)} by the "
        f"fallback model, {served.get('LAST_GOOD', 0) + served.get('CONSTANT', 0)} by "
        f"last-good/constant, {stats.rejected} bad inputs rejected; "
        f"{stats.machine.transitions} transitions, faults injected: {len(plan.history)}"
    )
    print(
        f"  latency p50 {stats.latency_p50_ns / 1e6:.2f} ms, p99 "
        f"{stats.latency_p99_ns / 1e6:.2f} ms (deadline {DEADLINE_NS / 1e6:.0f} ms)"
    )
    print(
        f"  verify: {'INTACT' if report.intact else 'NOT INTACT'} ({report.records} records); "
        f"replay: {'AGREES' if replayed.agrees else 'DISAGREES'} "
        f"({replayed.transitions} transitions)"
    )
    vigil = _command_name()
    print("  next:")
    print(f"    {vigil} verify {path}")
    print(f"    {vigil} replay {path}")
    print(f"    {vigil} dump {path} --type transition")
    print(f"    {vigil} inspect {path}")
    return 0 if report.intact and replayed.agrees else 1


def _no_grad(model: torch.nn.Module) -> Any:
    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = model(x)
        return out

    return call


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class _Progress:
    """One status line: rewritten in place on a terminal, a line per quarter otherwise."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.tty = sys.stderr.isatty()
        self.quarter = 0

    def show(self, done: int, sup: Supervisor) -> None:
        s = sup.statistics()
        fallbacks = s.calls - s.served.get(ServedBy.PRIMARY.name, 0)
        line = (
            f"  [{s.state.name:<10}] calls {done:>6}/{self.calls}  fallbacks {fallbacks:>5}"
            f"  rejected {s.rejected:>3}  p99 {s.latency_p99_ns / 1e6:6.2f} ms"
        )
        if self.tty:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        elif done * 4 >= (self.quarter + 1) * self.calls:
            self.quarter += 1
            print(line, file=sys.stderr)

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _command_name() -> str:
    """``vigil`` when that is on PATH, else the path this command was started by."""
    invoked = sys.argv[0]
    if shutil.which("vigil") or not invoked.endswith("vigil"):
        return "vigil"
    return invoked
