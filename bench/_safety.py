"""The fault matrix: every fault class x state x isolation, run on the real Supervisor.

Each *cell* drives a real :class:`~vigil.supervisor.Supervisor` (inline, thread, or process
isolation with a real :class:`~vigil.workers.WorkerPool`) into a state (NORMAL, DEGRADED,
RECOVERING), injects one fault with the toolkit of :mod:`vigil.testing` (``FaultPlan`` and
``FaultyModel`` in process, ``triggered_model`` in a worker) and observes, from the result and
from the flight log alone:

* the *observation*: the diagnostic code of the faulty call, its outcome, who served it, the
  transitions it caused and the kinds of records it left (the evidence);
* the *times*, on CLOCK_MONOTONIC: fault-detection time (from the call's start to the append of
  the record that names the fault) and time to safe reaction (to the moment the caller holds
  a checked answer or an explicit refusal, with the transition, if any, already recorded --
  write-ahead makes that order certain).

Every run of a cell must give the same observation; docs/SAFETY.md and
tests/safety/matrix.json hold the committed observations, tests/test_safety.py reruns the
matrix with a small N and compares. Between runs the supervisor is put back to NORMAL with an
audited operator reset; a DEVICE_FATAL in process is never reset (the machine refuses), so
those cells build a fresh supervisor per run.

Time is real, except that the supervisor's clock can be shifted forward (a cooldown is skipped,
never waited for) -- measured spans never contain a shift.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vigil import _diagnostics as D
from vigil.auditlog import FlightRecorder, LogReader, RingConfig, SystemClock
from vigil.errors import VigilError
from vigil.fsm import Policy
from vigil.schemas import (
    ClockSource,
    Contract,
    LifecycleEvent,
    Outcome,
    RecordType,
    ServedBy,
    State,
    TensorSpec,
    lookup,
)
from vigil.supervisor import Constant, KnownAnswer, Supervisor
from vigil.testing import TRIGGERS, Fault, FaultPlan, FaultyModel
from vigil.workers import WorkerPool, WorkerSpec

MS = 1_000_000
ISOLATIONS = ("inline", "thread", "process")
STATES = (State.NORMAL, State.DEGRADED, State.RECOVERING)
DEADLINE_NS = {"inline": 50 * MS, "thread": 50 * MS, "process": 1000 * MS}
RING = RingConfig(size=4096 + 16 * 65536, segment_size=65536)
# A worker lost mid-call must be seen as lost well before the call's deadline: a caller sees
# the loss only when the kernel closes the dead worker's pipe, after it has torn down the
# process's memory (exit_mm comes before exit_files), which took up to 300 ms on this loaded
# host; a frozen one (SIGSTOP) is found by its heartbeat (timeout + up to 50 ms heartbeat
# period + 50 ms monitor period, then that teardown). With a 500 ms deadline and a 400 ms
# heartbeat timeout the two raced: the cells ended either way (WORKER_LOST or DEADLINE_MISSED)
# from run to run. Hence a 1 s deadline for the process column and a 250 ms heartbeat timeout.
HEARTBEAT_TIMEOUT_NS = 250 * MS
# silent_wrong's rig runs known-answer probes this far apart: never during a run unless the
# run shifts its clock by as much (outside any measured span) to make one due at the fault
KA_INTERVAL_NS = 3600 * 10**9
GOOD = torch.full((1, 4), 0.5)
EXPECTED = GOOD * 2
OUT = Contract(TensorSpec(shape=(1, 4), dtype=torch.float32, min=-1e4, max=1e4))
IN = Contract(TensorSpec(shape=(1, 4), dtype=torch.float32))

# class -> (FaultPlan fault or base mode, trigger name in a worker, description)
MODEL_FAULTS: dict[str, tuple[Fault | str, str | None, str]] = {
    "exception": (Fault.EXCEPTION, "error", "the model raises"),
    "nan": (Fault.NAN, "nan", "NaN in the output"),
    "wrong_shape": (Fault.WRONG_SHAPE, "wrong_shape", "one extra output element"),
    "wrong_dtype": ("wrong_dtype", "wrong_dtype", "float64 instead of float32"),
    "out_of_contract": ("out_of_contract", "out_of_range", "1e9 against max=1e4"),
    "hang": (Fault.HANG, "hang", "no return (inline: returns at 2x the deadline)"),
    "slow": (Fault.SLOW, "slow", "returns after 0.6x the deadline (slow_call_ns = 0.4x)"),
    "oom": (Fault.OOM, "oom", "torch.OutOfMemoryError"),
    "device_fatal": (Fault.DEVICE_FATAL, "fatal", "process-fatal device error (simulated)"),
    "bad_input": ("bad_input", None, "float64 input against a float32 contract"),
    "silent_wrong": (
        "wrong",
        None,
        "a finite, in-contract wrong answer (3x, not 2x); a known-answer probe falls due at "
        "the faulty call",
    ),
}
WORKER_FAULTS = {
    "worker_sigkill": "the worker process is SIGKILLed (mid-call; between calls in DEGRADED)",
    "worker_exit": "the worker process exits mid-call (os._exit)",
    "worker_sigstop": "the worker process is SIGSTOPped (frozen)",
}
# bench/_safety_more.py: faults that are not of one model call (load, start, clock, log...)
EXTRA_CLASSES = (
    "tampered_load",
    "tampered_reload",
    "worker_start",
    "standby_start",
    "supervisor_kill",
    "clock_back",
    "log_eio",
    "log_truncated",
)
CLASSES = (*MODEL_FAULTS, *WORKER_FAULTS, *EXTRA_CLASSES)
NOT_APPLICABLE = {
    ("worker_sigkill", "inline"): "no worker process: the model runs in the caller's process",
    ("worker_sigkill", "thread"): "no worker process: a thread cannot be killed alone",
    ("worker_exit", "inline"): "no worker process",
    ("worker_exit", "thread"): "no worker process",
    ("worker_sigstop", "inline"): "no worker process",
    ("worker_sigstop", "thread"): "no worker process",
    ("silent_wrong", "process"): "the workers' test model answers wrongly only for its "
    "trigger input, which a known-answer probe never sends; the known-answer probe is the "
    "supervisor's (the thread column runs the same code)",
}
# Faults of the model itself never happen in DEGRADED: the primary is not called there.
# (worker_exit is chosen by the call's input, so it is a fault of the model's call too.)
_IDLE_IN_DEGRADED = (set(MODEL_FAULTS) - {"bad_input"}) | {"worker_exit"}


class ShiftClock:
    """CLOCK_MONOTONIC and CLOCK_REALTIME plus offsets the matrix may move."""

    source = ClockSource.INJECTED

    def __init__(self) -> None:
        self.boot_uuid = SystemClock().boot_uuid
        self.mono_offset = 0
        self.real_offset = 0

    def monotonic_ns(self) -> int:
        return time.monotonic_ns() + self.mono_offset

    def realtime_ns(self) -> int:
        return time.time_ns() + self.real_offset


class Base:
    """``y = 2x``; ``mode`` makes the next call answer wrongly in ways FaultPlan has no Fault
    for (a wrong dtype, a value out of the contract)."""

    def __init__(self) -> None:
        self.mode: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mode, self.mode = self.mode, None
        y = x * 2
        if mode == "wrong_dtype":
            return y.double()
        if mode == "out_of_contract":
            y[0, 0] = 1e9
        if mode == "wrong":
            y = x * 3
        if mode == "oom_real":  # on CUDA: the caching allocator refuses 1 PiB for real
            torch.empty(1 << 50, dtype=torch.uint8, device=x.device)
        return y


@dataclass
class Observation:
    """What one run of a cell showed (compared across runs and with the committed table)."""

    code: str
    outcome: str
    served_by: str
    transitions: list[str]
    evidence: list[str]

    def key(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass
class Cell:
    cls: str
    state: str
    isolation: str
    deadline_ns: int
    na: str | None = None
    runs: int = 0
    detected: int = 0
    observations: dict[str, int] = field(default_factory=dict)
    detect_ns: list[int] = field(default_factory=list)
    react_ns: list[int] = field(default_factory=list)
    # further named spans of a run (ns), for the cells whose story has more than one step
    spans: dict[str, list[int]] = field(default_factory=dict)

    @property
    def observation(self) -> dict[str, Any] | None:
        """The one observation of every run (None: not applicable or not stable)."""
        if len(self.observations) != 1:
            return None
        return dict(json.loads(next(iter(self.observations))))


def policy() -> Policy:
    return Policy(
        consecutive_failures=1,
        window=10,
        min_calls=10,
        cooldown_ns=10**9,
        cooldown_backoff=1.0,
        probes_required=2,
        probe_mode="live",
        max_failed_recoveries=10**6,
        failed_recovery_period_ns=10**9,
    )


class Rig:
    """One supervisor for one (class, isolation): states reached by real calls, faults
    injected by the toolkit, records read back from the log."""

    def __init__(
        self,
        root: Path,
        name: str,
        isolation: str,
        pool: WorkerPool | None,
        log: FlightRecorder | None = None,
        *,
        known_answer: bool = False,
    ) -> None:
        self.isolation = isolation
        self.deadline_ns = DEADLINE_NS[isolation]
        self.clock = ShiftClock()
        self.base = Base()
        self.plan = FaultPlan(0)
        self.path = Path(log.path) if log is not None else root / f"{name}.vigil"
        pol = policy()
        pol = Policy(
            **{
                **pol.__dict__,
                "slow_call_ns": self.deadline_ns * 4 // 10,
                "probe_interval_ns": KA_INTERVAL_NS if known_answer else None,
            }
        )
        self.faulty = FaultyModel(self.base, self.plan)
        primary: Any = pool if pool is not None else self.faulty
        self.pool = pool
        self.sup = Supervisor(
            primary,
            isolation=isolation,
            log=log or self.path,
            fallback=Constant(torch.zeros(1, 4)),
            policy=pol,
            deadline_ns=self.deadline_ns,
            input_contract=IN,
            output_contract=OUT,
            clock=self.clock,
            workers=1,
            ring=RING,
            known_answer=KnownAnswer(GOOD, GOOD * 2) if known_answer else None,
        )
        self.events: queue.SimpleQueue[tuple[LifecycleEvent, int]] = queue.SimpleQueue()
        self.counted = threading.Condition()
        self.counts: dict[str, int] = {"READY": 0, "LOST": 0}
        if pool is not None:
            record = pool.on_event
            assert record is not None

            def tee(event: Any, detail: dict[str, Any]) -> None:
                record(event, detail)
                self.events.put((event, time.monotonic_ns()))
                with self.counted:
                    self.counts[event.name] = self.counts.get(event.name, 0) + 1
                    self.counted.notify_all()

            pool.on_event = tee

    def infer(self, x: torch.Tensor) -> tuple[str, str, str]:
        try:
            r = self.sup.infer(x)
        except VigilError as exc:
            return exc.diagnostic.name, type(exc).__name__, "NONE"
        return (r.code.name if r.code else "-"), r.outcome.name, r.served_by.name

    def trip(self) -> None:
        if self.pool is None:
            self.plan.at_calls([self.plan.calls], Fault.EXCEPTION)
            self.infer(GOOD)
        else:
            self.infer(torch.full((1, 4), TRIGGERS["error"]))
        assert self.sup.state is State.DEGRADED, self.sup.state

    def fresh_plan(self) -> None:
        """Forget a fault that never fired (the primary is not called in DEGRADED)."""
        self.plan.release()
        self.plan = self.faulty.plan = FaultPlan(0)
        self.base.mode = None

    def to_state(self, state: State) -> None:
        self.fresh_plan()
        # always, even in NORMAL: the reset also empties the failure/slow-rate window, so
        # that no run sees the calls of the runs before it
        self.sup.reset("safety matrix: the next run starts in NORMAL")
        if state is State.NORMAL:
            return
        self.trip()
        if state is State.RECOVERING:
            # the first good live probe. Reaching the state is set-up, not the measured fault:
            # a probe the loaded host made slow or late (it fails, back to DEGRADED) is tried
            # again after another cooldown, at most twice
            for _ in range(3):
                self.clock.mono_offset += 10**9  # the cooldown, skipped
                got = self.infer(GOOD)
                if self.sup.state is State.RECOVERING:
                    break
            assert got[2] == "PRIMARY", (self.path, got)
            assert self.sup.state is State.RECOVERING, (self.path, got, self.sup.state)

    def settle(self) -> None:
        """Wait until every lost worker has its WORKER_READY record: the pool reports the new
        standby ready (``wait_standby``) just before the event that records it, so reading
        the log at once sometimes missed that record (an unstable cell)."""
        with self.counted:
            assert self.counted.wait_for(
                lambda: self.counts["READY"] >= self.counts["LOST"], timeout=60
            ), self.counts

    def head(self) -> int:
        return self.sup.log.head_seq

    def records_after(self, seq: int) -> list[Any]:
        with LogReader(self.path) as r:
            return list(r.records(since_seq=seq + 1))

    def close(self) -> None:
        self.plan.release()
        self.sup.close()


def _evidence(recs: list[Any]) -> list[str]:
    kinds = set()
    for r in recs:
        if r.type is RecordType.LIFECYCLE:
            kinds.add(f"LIFECYCLE:{LifecycleEvent(r.body['event']).name}")
        elif r.type is RecordType.ANNOTATION:
            kinds.add(f"ANNOTATION:{r.body['key']}")
        elif r.type is not RecordType.CHECKPOINT:
            kinds.add(r.type.name)
    return sorted(kinds)


def _transitions(recs: list[Any]) -> list[str]:
    """The transitions a run caused (the operator resets between runs left out)."""
    return [
        f"{State(r.body['from_state']).name}->{State(r.body['to_state']).name} "
        f"({lookup(r.body['code']).name})"
        for r in recs
        if r.type is RecordType.TRANSITION and r.body["code"] != D.OPERATOR_RESET.number
    ]


def _fault_record_time(recs: list[Any], code: str) -> int | None:
    """When the first record naming the fault's code was appended (mono ns), or None."""
    diag = getattr(D, code, None)
    if diag is None:
        return None
    for r in recs:
        if r.type in (RecordType.INFERENCE, RecordType.REJECTED) and r.body["code"] == diag.number:
            return int(r.mono_ns)
    return None


def run_cell(rig: Rig, cls: str, state: State) -> tuple[Observation, int | None, int]:
    """One run: the state, the fault, the call; back to no hung call and a full pool."""
    rig.to_state(state)
    seq = rig.head()
    x = GOOD
    pid = None
    if rig.pool is not None:
        stats = rig.pool.statistics()
        pid = stats.active_pid
        assert pid is not None
        assert stats.standby_ready
    external = False
    if cls in MODEL_FAULTS:
        fault, trigger, _ = MODEL_FAULTS[cls]
        if cls == "bad_input":
            x = GOOD.double()
        elif rig.pool is not None:
            assert trigger is not None
            x = torch.full((1, 4), TRIGGERS[trigger])
            if cls == "slow":
                x[0, 1] = rig.deadline_ns * 0.6 / 1e6  # milliseconds
        elif isinstance(fault, Fault):
            params: dict[str, Any] = {}
            if fault is Fault.SLOW:
                params["delay_s"] = rig.deadline_ns * 0.6 / 1e9
            if fault is Fault.HANG and rig.isolation == "inline":
                params["hang_s"] = rig.deadline_ns * 2 / 1e9
            rig.plan.at_calls([rig.plan.calls], fault, **params)
        else:
            rig.base.mode = fault
        if cls == "silent_wrong" and state is State.NORMAL:  # a known-answer probe runs first
            rig.clock.mono_offset += KA_INTERVAL_NS
    elif cls == "worker_sigkill":
        if state is State.DEGRADED:
            external = True
        else:
            x = torch.full((1, 4), TRIGGERS["crash"])
    elif cls == "worker_exit":
        x = torch.full((1, 4), TRIGGERS["exit"])
    elif cls == "worker_sigstop":
        external = state is State.DEGRADED
    t0 = rig.clock.monotonic_ns()
    if external:  # a signal between calls: the pool's monitor must find it
        assert pid is not None
        with contextlib.suppress(queue.Empty):
            while True:  # events of earlier runs
                rig.events.get_nowait()
        t0 = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL if cls == "worker_sigkill" else signal.SIGSTOP)
        lost = promoted = None
        limit = time.monotonic() + 10
        while (lost is None or promoted is None) and time.monotonic() < limit:
            with contextlib.suppress(queue.Empty):
                event, at = rig.events.get(timeout=0.5)
                if event.name == "LOST" and lost is None:
                    lost = at
                elif event.name == "PROMOTED" and promoted is None:
                    promoted = at
        code, outcome, served = "-", "-", "-"
        detect = None if lost is None else lost - t0
        react = (promoted or time.monotonic_ns()) - t0
    else:
        if cls == "worker_sigstop":
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
        code, outcome, served = rig.infer(x)
        t1 = rig.clock.monotonic_ns()
        react = t1 - t0
        detect = None
    if rig.pool is None and cls == "hang" and rig.isolation == "thread":
        rig.plan.release()
        assert rig.sup.wait_hung(0, 10)
    if rig.pool is not None:
        assert rig.pool.wait_standby(60), "no standby came back"
        rig.settle()
    recs = rig.records_after(seq)
    trs = _transitions(recs)
    if cls == "silent_wrong" and _fault_record_time(recs, "WRONG_ANSWER") is not None:
        code = "WRONG_ANSWER"  # the known-answer probe's record; the call itself is served
    elif cls == "silent_wrong" and state is State.RECOVERING:
        code = "not detected: a live probe takes a finite wrong answer as good (residual risk)"
    if not external:
        t = _fault_record_time(recs, code)
        detect = None if t is None else t - t0
    if external and cls == "worker_sigstop":
        code = "WORKER_HEARTBEAT"
    elif external:
        code = "WORKER_LOST"
    obs = Observation(code, outcome, served, trs, _evidence(recs))
    return obs, detect, react


def _pool(device: str = "cpu") -> WorkerPool:
    spec = WorkerSpec(
        factory="vigil.testing._models:triggered_model",
        kwargs={"device": device},
        device=device,
        warmup_input=torch.ones(1, 4),
        threads=1,
        spin_us=0,
    )
    return WorkerPool(spec, heartbeat_ns=50 * MS, heartbeat_timeout_ns=HEARTBEAT_TIMEOUT_NS)


@contextlib.contextmanager
def _rig(
    root: Path, name: str, isolation: str, device: str = "cpu", *, known_answer: bool = False
) -> Iterator[Rig]:
    pool = _pool(device) if isolation == "process" else None
    rig = Rig(root, name, isolation, pool, known_answer=known_answer)
    try:
        yield rig
    finally:
        rig.close()


def run_matrix(
    runs: int,
    *,
    isolations: tuple[str, ...] = ISOLATIONS,
    classes: tuple[str, ...] = CLASSES,
    root: Path | None = None,
    progress: Callable[[str], None] | None = None,
    heavy_runs: int | None = None,
) -> tuple[list[Cell], dict[str, Path]]:
    """Run every cell ``runs`` times (the classes that start a process per run at most
    ``heavy_runs`` times).

    Returns:
        The cells, and for each class one log to draw its timeline from (the thread rig's,
        or the process rig's for the worker classes).
    """
    root = root or Path(tempfile.mkdtemp(prefix="vigil-matrix-"))
    import _safety_more as M  # it imports this module

    cells: list[Cell] = []
    showcase: dict[str, Path] = {}
    for isolation in isolations:
        # One pool for the whole process column: starting workers costs seconds each, and
        # every run starts from NORMAL with a full pool (active + standby) either way.
        column = _rig(root, "process", isolation) if isolation == "process" else None
        with column or contextlib.nullcontext() as pooled:
            for cls in classes:
                if cls in EXTRA_CLASSES:
                    if progress:
                        progress(f"{isolation} {cls}")
                    n = min(runs, heavy_runs or runs) if cls in M.HEAVY else runs
                    got, log = _extra(M, root, cls, isolation, runs=n, pooled=pooled)
                    cells += got
                    if log is not None and (isolation == "thread" or cls not in showcase):
                        showcase[cls] = log
                    continue
                na = NOT_APPLICABLE.get((cls, isolation))
                if na is not None:
                    cells.extend(
                        Cell(cls, s.name, isolation, DEADLINE_NS[isolation], na=na) for s in STATES
                    )
                    continue
                if progress:
                    progress(f"{isolation} {cls}")
                # DEVICE_FATAL in process cannot be reset (only a fresh process runs it again)
                fresh = cls == "device_fatal" and isolation != "process"
                ka = cls == "silent_wrong"
                own = (
                    _rig(root, f"{cls}-{isolation}", isolation, known_answer=ka)
                    if pooled is None
                    else None
                )
                with own or contextlib.nullcontext() as mine:
                    shared = pooled or mine
                    assert shared is not None
                    if isolation == "thread" or cls in WORKER_FAULTS:
                        showcase[cls] = shared.path
                    cells.extend(
                        _run_runs(shared, root, cls, state, runs, fresh=fresh) for state in STATES
                    )
    return cells, showcase


def _extra(
    M: Any, root: Path, cls: str, isolation: str, *, runs: int, pooled: Rig | None
) -> tuple[list[Cell], Path | None]:
    """The cells of bench/_safety_more.py (a rig of their own unless the process column's),
    and a log that shows the class for its timeline: the rig's, or the class's first own."""
    if cls in M.SHARED and isolation != "process":
        with _rig(root, f"{cls}-{isolation}", isolation) as mine:
            return list(M.run_class(cls, isolation, runs, root, mine)), Path(mine.path)
    cells = list(M.run_class(cls, isolation, runs, root, pooled))
    if cls in M.SHARED and pooled is not None:
        return cells, Path(pooled.path)
    own = sorted(root.glob(f"{cls}-*.vigil"))
    return cells, own[0] if own else None


def _run_runs(shared: Rig, root: Path, cls: str, state: State, runs: int, *, fresh: bool) -> Cell:
    cell = Cell(cls, state.name, shared.isolation, shared.deadline_ns)
    for k in range(runs):
        if fresh and state is not State.DEGRADED:
            name = f"{cls}-{shared.isolation}-{state.name}-{k}"
            with _rig(root, name, shared.isolation) as r:
                obs, detect, react = run_cell(r, cls, state)
        else:
            obs, detect, react = run_cell(shared, cls, state)
        cell.runs += 1
        cell.observations[obs.key()] = cell.observations.get(obs.key(), 0) + 1
        cell.react_ns.append(react)
        if detect is not None:
            cell.detected += 1
            cell.detect_ns.append(detect)
    return cell


def quantiles(values: list[int]) -> tuple[float, float, float] | None:
    """p50, p99 and max in milliseconds (nearest rank), or None."""
    if not values:
        return None
    v = sorted(values)
    return (
        v[len(v) // 2] / 1e6,
        v[min(len(v) - 1, int(len(v) * 0.99))] / 1e6,
        v[-1] / 1e6,
    )


def expected_table(cells: list[Cell]) -> dict[str, Any]:
    """The committed form: per cell its observation (or why it is not applicable)."""
    out: dict[str, Any] = {}
    for c in cells:
        key = f"{c.cls}/{c.state}/{c.isolation}"
        out[key] = {"na": c.na} if c.na else (c.observation or {"unstable": c.observations})
    return out


def vocabulary(root: Path) -> dict[str, set[str]]:
    """Every value the matrix's logs under ``root`` hold (SOP §4.2: field coverage)."""
    seen: dict[str, set[str]] = {
        k: set() for k in ("record", "outcome", "served_by", "transition", "lifecycle", "code")
    }
    for path in sorted(root.glob("*.vigil")):
        with LogReader(path) as r:
            for rec in r.records():
                seen["record"].add(rec.type.name)
                b = rec.body
                if rec.type is RecordType.INFERENCE:
                    seen["outcome"].add(Outcome(b["outcome"]).name)
                    seen["served_by"].add(ServedBy(b["served_by"]).name)
                elif rec.type is RecordType.REJECTED:
                    seen["outcome"].add(Outcome.REJECTED.name)
                elif rec.type is RecordType.TRANSITION:
                    seen["transition"].add(lookup(b["code"]).name)
                elif rec.type is RecordType.LIFECYCLE:
                    seen["lifecycle"].add(LifecycleEvent(b["event"]).name)
                coded = (RecordType.INFERENCE, RecordType.REJECTED, RecordType.TRANSITION)
                if rec.type in coded and b["code"]:
                    seen["code"].add(lookup(b["code"]).name)
    return seen


def never_produced(seen: dict[str, set[str]]) -> dict[str, set[str]]:
    """What the matrix's logs never hold: every enum value, and every 4xxx code."""
    every = {
        "record": {x.name for x in RecordType},
        "outcome": {x.name for x in Outcome},
        "served_by": {x.name for x in ServedBy},
        "transition": {d.name for d in D.REGISTRY.values() if 4100 <= d.number < 4200},
        "lifecycle": {x.name for x in LifecycleEvent},
        "code": {d.name for d in D.REGISTRY.values() if 4000 <= d.number < 4200},
    }
    return {k: every[k] - seen[k] for k in every}
