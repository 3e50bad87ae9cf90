"""The fault matrix's cells that are not a fault of one model call (bench/_safety.py runs those).

* ``tampered_load``: a signed model directory whose weights changed after signing, loaded at
  start (in process by :func:`~vigil.supervisor.load_signed_model`; with workers by each
  worker, ``WorkerSpec(model_dir=...)``).
* ``tampered_reload``: the same directory published to a running supervisor's
  :class:`~vigil.supervisor.ModelReloader`.
* ``worker_start``: the worker process dies while it starts (its factory calls ``os._exit``).
* ``standby_start``: with worker processes, the active worker is lost and the replacement
  the pool starts dies while it starts; later the last worker is lost and its replacement
  dies too (no worker left: DIA-7011).
* ``supervisor_kill``: the supervisor's own process is SIGKILLed in a state; a new
  supervisor starts on its log (here, in the measuring process: the times exclude Python's
  and torch's start-up, but with worker processes include the start of its workers) and
  restores the state.
* ``clock_back``: the supervisor's (injected) CLOCK_MONOTONIC steps 1 s backwards between
  two calls; nothing at run time may depend on it going forward, ``vigil verify`` reports it.
* ``log_eio``: the log's storage returns EIO on sync (injected at the storage layer,
  bench/_storage_faults.py); ``log_truncated``: the log file is really truncated under the
  writer's mapping. Both under the default ``batch`` durability: the group commit finds the
  fault, the next call is refused (DIA-4012).

Each function runs one (class, state, isolation) run and returns the observation, the
detection time (None where nothing at run time detects), the time to safe reaction,
whether the fault was detected at all, and optionally further named spans of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import _safety as S
import _storage_faults as SF
import torch
from torch import nn

from vigil import _diagnostics as D
from vigil import keys as K
from vigil.auditlog import FlightRecorder, LogReader
from vigil.errors import VigilError
from vigil.model import WEIGHTS, save_model_dir
from vigil.schemas import LifecycleEvent, RecordType, State
from vigil.supervisor import ModelReloader, Supervisor, load_signed_model
from vigil.testing import TRIGGERS
from vigil.workers import WorkerPool, WorkerSpec

BENCH = Path(__file__).resolve().parent
EXTRA: dict[str, str] = {
    "tampered_load": "a signed model directory altered after signing, loaded at start",
    "tampered_reload": "a signed model directory altered after signing, published to a "
    "running supervisor's reloader",
    "worker_start": "the worker process dies while it starts (os._exit in its factory)",
    "standby_start": "after a worker is lost, its replacement dies while it starts (and again "
    "after the last worker is lost)",
    "supervisor_kill": "the supervisor's process is SIGKILLed; a new one starts on its log",
    "clock_back": "the supervisor's CLOCK_MONOTONIC steps 1 s backwards between calls",
    "log_eio": "the log's storage returns EIO on sync (batch durability)",
    "log_truncated": "the log file is truncated under the writer's mapping (batch durability)",
}
# a process start per run
HEAVY = {"tampered_load", "worker_start", "standby_start", "supervisor_kill"}
NOT_APPLICABLE: dict[tuple[str, str | None, str | None], str] = {
    ("tampered_load", "DEGRADED", None): "a model is loaded before the supervisor serves "
    "(a change of model while it serves: tampered_reload)",
    ("tampered_load", "RECOVERING", None): "as DEGRADED",
    ("tampered_reload", None, "process"): "a process-isolated supervisor does not hot-swap "
    "(swap_primary: ConfigError); its workers load the model at start: tampered_load",
    ("worker_start", None, "inline"): "no worker process",
    ("worker_start", None, "thread"): "no worker process",
    ("worker_start", "DEGRADED", "process"): "a pool starts before the supervisor serves; a "
    "replacement that dies at start while it serves: standby_start",
    ("worker_start", "RECOVERING", "process"): "as DEGRADED",
    ("standby_start", None, "inline"): "no worker process",
    ("standby_start", None, "thread"): "no worker process",
    ("clock_back", None, "process"): "the clock is the supervisor's (the thread column); "
    "workers' heartbeats are judged on the pool's own CLOCK_MONOTONIC",
    ("log_eio", None, "process"): "the recorder is the supervisor's, not the worker's: the "
    "thread column runs the same code",
    ("log_truncated", None, "process"): "as log_eio",
}


def not_applicable(cls: str, state: str, isolation: str) -> str | None:
    for key in ((cls, state, isolation), (cls, None, isolation), (cls, state, None)):
        if key in NOT_APPLICABLE:
            return NOT_APPLICABLE[key]
    return None


# --- signed model directories -------------------------------------------------------------


class Scale(nn.Module):
    """``y = x * w``: the signed model of the artifact cells."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def build(config: dict[str, Any]) -> nn.Module:
    return Scale()


@cache
def _key() -> K.PrivateKey:
    return K.generate(K.KeyAlgorithm.ECDSA_P384)


def _tamper(directory: Path) -> None:
    data = bytearray((directory / WEIGHTS).read_bytes())
    data[-1] ^= 0x40
    (directory / WEIGHTS).write_bytes(bytes(data))


def _signed(root: Path, name: str, *, tampered: bool) -> Path:
    d = root / name
    save_model_dir(d, {"w": torch.full((1,), 2.0)}, name="scale", version=name, config={},
                   key=_key())  # fmt: skip
    if tampered:
        _tamper(d)
    return d


@cache
def _reference_dir(root: str) -> tuple[Path, Path]:
    """A tampered reference model directory a worker can load, and its public key file."""
    from vigil.cli import main

    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    key, model = str(base / "signer"), base / "reference"
    with contextlib.redirect_stdout(None):
        assert main(["model", "keygen", "--out", key]) == 0
        assert main(["model", "export-reference", str(model), "--key", key, "--model",
                     "tiny-reference"]) == 0  # fmt: skip
    _tamper(model)
    return model, Path(key + ".pub")


def _records(path: Path | str, since: int = 0) -> list[Any]:
    with LogReader(path) as r:
        return list(r.records(since_seq=since + 1))


def _first(recs: list[Any], event: LifecycleEvent) -> Any:
    return next(
        (r for r in recs if r.type is RecordType.LIFECYCLE and r.body["event"] is event), None
    )


# --- the cells ------------------------------------------------------------------------------

# observation, detection ns, safe reaction ns, detected; and optionally further named spans
Run = tuple[Any, ...]


def tampered_load(root: Path, isolation: str, state: State, k: int) -> Run:
    log = root / f"tampered_load-{isolation}-{k}.vigil"
    if isolation == "process":
        model, pub = _reference_dir(str(root / "reference-model"))
        spec = WorkerSpec(model_dir=str(model), public_key=str(pub), threads=1)
        t0 = time.monotonic_ns()
        try:
            Supervisor(WorkerPool(spec, standby=False), isolation="process", log=log)
            raise AssertionError("a tampered model directory started")
        except VigilError as exc:
            react, err = time.monotonic_ns() - t0, exc
        event = LifecycleEvent.WORKER_START_FAILED
    else:
        d = _signed(root, f"tampered-{isolation}-{k}", tampered=True)
        rec = FlightRecorder.create(log, S.RING)
        try:
            t0 = time.monotonic_ns()
            try:
                load_signed_model(d, _key().public, build, log=rec)
                raise AssertionError("a tampered model directory loaded")
            except VigilError as exc:
                react, err = time.monotonic_ns() - t0, exc
        finally:
            rec.close()
        event = LifecycleEvent.MODEL_REFUSED
    recs = _records(log)
    refused = _first(recs, event)
    detect = None if refused is None else int(refused.mono_ns) - t0
    code = err.diagnostic.name
    if refused is not None and isolation != "process":
        code = D.lookup(_detail(refused)["code"]).name
    elif refused is not None:  # the worker's reason names the artifact's code
        named = re.search(r"DIA-\d{4}", _detail(refused).get("reason", ""))
        code += f" ({D.lookup(named.group()).name})" if named else ""
    obs = S.Observation(code, type(err).__name__, "NONE", [], _evidence(recs, start=True))
    return obs, detect, react, refused is not None


def _detail(rec: Any) -> dict[str, Any]:
    return dict(json.loads(rec.body["detail"]))


_ROUTINE = {"LIFECYCLE:OPENED", "LIFECYCLE:CLOSED", "ANNOTATION:vigil.policy", "ANNOTATION:bench"}


def _evidence(recs: list[Any], *, start: bool = False) -> list[str]:
    """The kinds of record a run left, without every session's opening and closing ones
    (nor, for a start, the restore note every start writes)."""
    skip = _ROUTINE | ({"ANNOTATION:vigil.restore"} if start else set())
    return [e for e in S._evidence(recs) if e not in skip]


def tampered_reload(rig: S.Rig, root: Path, state: State, k: int) -> Run:
    rig.to_state(state)
    link = root / f"current-{rig.isolation}"
    target = _signed(root, f"reload-{rig.isolation}-{state.name}-{k}", tampered=True)
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(target)
    seq = rig.head()
    reloader = ModelReloader(
        rig.sup, link, _key().public, build, check=lambda m: True, warmup=[S.GOOD]
    )
    t0 = rig.clock.monotonic_ns()  # the clock the log's records carry
    result = reloader.check_now()
    react = rig.clock.monotonic_ns() - t0
    _, outcome, served = rig.infer(S.GOOD)  # the old model serves on
    recs = rig.records_after(seq)
    failed = _first(recs, LifecycleEvent.RELOAD_FAILED)
    detect = None if failed is None else int(failed.mono_ns) - t0
    assert result.code is not None, result
    obs = S.Observation(
        D.lookup(result.code).name,
        f"{result.status.name}; then {outcome}",
        served,
        S._transitions(recs),
        S._evidence(recs),
    )
    shutil.rmtree(target)
    return obs, detect, react, failed is not None


def dying_factory() -> Any:
    """A worker factory whose process dies while it starts."""
    os._exit(3)


def worker_start(root: Path, isolation: str, state: State, k: int) -> Run:
    log = root / f"worker_start-{k}.vigil"
    spec = WorkerSpec(factory="_safety_more:dying_factory", threads=1)
    t0 = time.monotonic_ns()
    try:
        Supervisor(WorkerPool(spec, standby=False), isolation="process", log=log)
        raise AssertionError("a worker that died at start started")
    except VigilError as exc:
        react, err = time.monotonic_ns() - t0, exc
    recs = _records(log)
    failed = _first(recs, LifecycleEvent.WORKER_START_FAILED)
    detect = None if failed is None else int(failed.mono_ns) - t0
    obs = S.Observation(
        err.diagnostic.name, type(err).__name__, "NONE", [], _evidence(recs, start=True)
    )
    return obs, detect, react, failed is not None


def armed_factory(arm: str) -> Any:
    """``triggered_model`` (vigil.testing), or a death while it starts once the file ``arm``
    exists: a pool's first workers start well, every replacement after that dies."""
    if os.path.exists(arm):
        os._exit(3)
    from vigil.testing._models import triggered_model  # in the worker only

    return triggered_model()


def _drain(rig: S.Rig) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            rig.events.get_nowait()


def _await_events(rig: S.Rig, want: tuple[str, ...], timeout_s: float = 60) -> dict[str, int]:
    """When (CLOCK_MONOTONIC) the pool first reported each event named in ``want``."""
    got: dict[str, int] = {}
    limit = time.monotonic() + timeout_s
    while not set(want) <= set(got):
        left = limit - time.monotonic()
        assert left > 0, f"the pool reported {sorted(got)}, not all of {want}"
        event, at = rig.events.get(timeout=left)
        got.setdefault(event.name, at)
    return got


def _real_ns(rig: S.Rig, rec: Any) -> int:
    """A record's time on the real CLOCK_MONOTONIC (the rig's clock may be shifted)."""
    return int(rec.mono_ns) - rig.clock.mono_offset


def _nothing_left(pool: WorkerPool) -> bool:
    """Wait until the pool has no worker ready or starting (its START_FAILED event is
    emitted just before the start is uncounted)."""
    with pool._changed:  # the predicate reads under the pool's own lock
        return pool._changed.wait_for(
            lambda: not (pool._actives or pool._standby or pool._starting), 10
        )


def standby_start(root: Path, isolation: str, state: State, k: int) -> Run:
    """The active worker is lost in ``state`` (it SIGKILLs itself mid-call; in DEGRADED it
    is SIGKILLed between calls), the standby is promoted, and the replacement the pool starts
    dies while it starts. Then the recovery protocol brings the promoted worker back to
    NORMAL, the last worker is SIGKILLed, and its replacement dies at start too: no worker
    is left (DIA-7011), the fallback serves, the pool is dead and health says so."""
    from vigil.service._metrics import Health  # prometheus_client: here only

    name = f"standby_start-{state.name}-{k}"
    arm = root / f"{name}.arm"
    spec = WorkerSpec(
        factory="_safety_more:armed_factory",
        kwargs={"arm": str(arm)},
        warmup_input=torch.ones(1, 4),
        threads=1,
        spin_us=0,
    )
    pool = WorkerPool(spec, heartbeat_ns=50 * S.MS, heartbeat_timeout_ns=S.HEARTBEAT_TIMEOUT_NS)
    rig = S.Rig(root, name, "process", pool)
    try:
        rig.to_state(state)
        seq = rig.head()
        arm.touch()  # every worker started from now on dies while it starts
        _drain(rig)
        t0 = time.monotonic_ns()
        if state is State.DEGRADED:  # the primary is not called there: a kill between calls
            os.kill(_pid(pool), signal.SIGKILL)
            code, outcome, served = "WORKER_LOST", "-", "-"
            react = _await_events(rig, ("LOST", "PROMOTED"))["PROMOTED"] - t0
        else:
            code, outcome, served = rig.infer(torch.full((1, 4), TRIGGERS["crash"]))
            react = time.monotonic_ns() - t0
        _await_events(rig, ("START_FAILED",))
        one = pool.statistics()
        assert one.active_pid is not None, one
        assert not one.standby_ready, one
        failed = _first(rig.records_after(seq), LifecycleEvent.WORKER_START_FAILED)
        detect = None if failed is None else _real_ns(rig, failed) - t0
        rig.clock.mono_offset += 10**9  # the cooldown, skipped (outside the measured spans)
        probes = [rig.infer(S.GOOD)[2] for _ in range(2)]  # the promoted worker, probed
        _drain(rig)
        t1 = time.monotonic_ns()
        os.kill(_pid(pool), signal.SIGKILL)  # the last worker
        at = _await_events(rig, ("LOST", "START_FAILED"))
        assert _nothing_left(pool)
        health = Health.of(rig.sup, ready=True, fallback=True, workers_alive=pool.alive())
        _, outcome2, served2 = rig.infer(S.GOOD)
        recs = rig.records_after(seq)
    finally:
        rig.close()
    gone = next(
        (r for r in recs if r.type is RecordType.TRANSITION
         and r.body["code"] == D.NO_WORKER_LEFT.number), None,
    )  # fmt: skip
    spans = {"last worker lost -> its replacement's START_FAILED": at["START_FAILED"] - t1}
    if gone is not None:
        spans["last worker lost -> NO_WORKER_LEFT recorded"] = _real_ns(rig, gone) - t1
    obs = S.Observation(
        f"{code} -> WORKER_START_FAILED; last worker lost -> {'NO_WORKER_LEFT' if gone else '-'}",
        f"{outcome}; probes {'+'.join(probes)}; none left, watchdog alive="
        f"{health.alive()[0]}; then {outcome2}",
        f"{served}; then {served2}",
        S._transitions(recs),
        _evidence(recs),
    )
    return obs, detect, react, failed is not None, spans


def _pid(pool: WorkerPool) -> int:
    pid = pool.statistics().active_pid
    assert pid is not None
    return pid


_KILL_CHILD = """
import sys, torch
sys.path[:0] = [{bench!r}]
import _safety as S
from vigil.schemas import State
pool = S._pool() if {isolation!r} == "process" else None
rig = S.Rig(__import__("pathlib").Path({root!r}), {name!r}, {isolation!r}, pool)
rig.to_state(State[{state!r}])
print("ready", rig.head(), flush=True)
sys.stdin.readline()
"""


def supervisor_kill(root: Path, isolation: str, state: State, k: int) -> Run:
    name = f"supervisor_kill-{isolation}-{state.name}-{k}"
    script = _KILL_CHILD.format(
        bench=str(BENCH), root=str(root), name=name, isolation=isolation, state=state.name
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), str(BENCH)])}
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env,
    ) as child:  # fmt: skip
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line, "the child died before it was ready"
        assert line[0] == "ready", line
        seq = int(line[1])
        t0 = time.monotonic_ns()
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    assert child.returncode == -signal.SIGKILL
    # the restart, on the same log; with worker processes Supervisor() returns once its
    # pool's workers (active and standby) are ready: nothing is answered before that
    pool = S._pool() if isolation == "process" else None
    rig = S.Rig(root, name, isolation, pool)
    try:
        ready = time.monotonic_ns() - t0
        restored = rig.sup.state  # (a start longer than the cooldown: the call is a probe)
        _, outcome, served = rig.infer(S.GOOD)
        react = time.monotonic_ns() - t0
    finally:
        rig.close()
    spans = {"Supervisor() returned (with workers: once they are ready)": ready}
    if served == "PRIMARY":
        spans["first answer served by the primary"] = react
    recs = _records(rig.path, seq)
    note = next(
        (r for r in recs if r.type is RecordType.ANNOTATION and r.body["key"] == "vigil.restore"),
        None,
    )
    unclean = note is not None and json.loads(note.body["text"]).get("unclean_restart") is True
    detect = None if note is None else int(note.mono_ns) - t0
    obs = S.Observation(
        "UNCLEAN_RESTART" if unclean else "-",
        f"restored {restored.name}; then {outcome}",
        served,
        S._transitions(recs),
        _evidence([r for r in recs if r.seq <= _closing_seq(recs)]),
    )
    return obs, detect, react, unclean, spans


def _closing_seq(recs: list[Any]) -> int:
    """The seq of the first call's record after the restart (what follows is close())."""
    return next((r.seq for r in recs if r.type is RecordType.INFERENCE), 1 << 62)


def clock_back(rig: S.Rig, root: Path, state: State, k: int) -> Run:
    rig.to_state(state)
    seq = rig.head()
    rig.clock.mono_offset -= 10**9
    t0 = time.monotonic_ns()
    code, outcome, served = rig.infer(S.GOOD)
    react = time.monotonic_ns() - t0
    recs = rig.records_after(seq)
    rig.sup.log.flush()
    with LogReader(rig.path) as r:
        found = [f for f in r.verify().findings if f.code == D.CLOCK.code and f.seq == seq + 1]
    obs = S.Observation(
        f"{D.CLOCK.name} (vigil verify)" if found else code,
        outcome,
        served,
        S._transitions(recs),
        S._evidence(recs),
    )
    return obs, None, react, bool(found)


def _storage_rig(root: Path, cls: str, isolation: str, state: State, k: int) -> tuple[S.Rig, Any]:
    path = str(root / f"{cls}-{isolation}-{state.name}-{k}.vigil")
    log, disk = SF.eio_recorder(path, "batch", clock=S.ShiftClock(), batch_interval=0.005)
    rig = S.Rig(root, "", isolation, None, log=log)
    return rig, disk


def storage(cls: str) -> Callable[[Path, str, State, int], Run]:
    def run(root: Path, isolation: str, state: State, k: int) -> Run:
        rig, disk = _storage_rig(root, cls, isolation, state, k)
        try:
            rig.to_state(state)
            rig.infer(S.GOOD)  # a record for the group commit
            assert rig.sup.log.wait_durable(rig.head(), 10)
            seq = rig.head()
            t0 = time.monotonic_ns()
            if cls == "log_eio":
                disk.armed = True
                rig.sup.log.annotate("bench", "one more record to sync")
            else:
                os.truncate(disk.path, 4096)
            found = rig.sup.log.wait_failed(10)
            detect = time.monotonic_ns() - t0 if found else None
            code, outcome, served = rig.infer(S.GOOD)
            react = time.monotonic_ns() - t0
            first = rig.sup.log.failed
        finally:
            rig.close()
            rig.sup.log.close()
        recs = _records(disk.path, seq) if cls == "log_eio" else []
        obs = S.Observation(
            f"{first.diagnostic.name if first else '-'} -> {code}",
            outcome,
            served,
            S._transitions(recs),
            _evidence(recs),
        )
        return obs, detect, react, found

    return run


SOLO: dict[str, Callable[[Path, str, State, int], Run]] = {
    "tampered_load": tampered_load,
    "worker_start": worker_start,
    "standby_start": standby_start,
    "supervisor_kill": supervisor_kill,
    "log_eio": storage("log_eio"),
    "log_truncated": storage("log_truncated"),
}
SHARED: dict[str, Callable[[S.Rig, Path, State, int], Run]] = {
    "tampered_reload": tampered_reload,
    "clock_back": clock_back,
}


def run_class(
    cls: str, isolation: str, runs: int, root: Path, shared: S.Rig | None
) -> list[S.Cell]:
    """Every state of ``cls`` in ``isolation``, ``runs`` times each."""
    cells = []
    for state in S.STATES:
        cell = S.Cell(cls, state.name, isolation, S.DEADLINE_NS[isolation])
        cell.na = not_applicable(cls, state.name, isolation)
        if cell.na is None:
            for k in range(runs):
                if cls in SHARED:
                    assert shared is not None
                    obs, detect, react, found, *more = SHARED[cls](shared, root, state, k)
                else:
                    obs, detect, react, found, *more = SOLO[cls](root, isolation, state, k)
                for span, ns in (more[0] if more else {}).items():
                    cell.spans.setdefault(span, []).append(ns)
                cell.runs += 1
                cell.observations[obs.key()] = cell.observations.get(obs.key(), 0) + 1
                cell.react_ns.append(react)
                cell.detected += found
                if detect is not None:
                    cell.detect_ns.append(detect)
        cells.append(cell)
    return cells
