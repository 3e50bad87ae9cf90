"""Supervisor, state machine and flight recorder together, under random interleavings of
calls, injected faults, bad inputs, clock advances, restarts (close and reopen on the same
log) and operator resets. After every step: each call was answered within its deadline or
refused with a vigil error; the log holds exactly one record per call, without a gap, and
verifies INTACT; and replay re-derives every transition from it.

The budget is small in the default suite (a few seconds: 20 examples of 25 steps, under the
``ci`` profile that tests/conftest.py loads by default); the slow suite runs the same machine
with the profile's whole budget (100 examples of 50 steps). Under ``explore``
(``VIGIL_HYPOTHESIS=explore``) both use the profile's own ``max_examples`` and
``stateful_step_count``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from vigil import _diagnostics as D
from vigil.auditlog import LogReader, RingConfig
from vigil.errors import InvalidArgument, InvalidInput, Unavailable
from vigil.fsm import Policy
from vigil.schemas import CallFlags, RecordType, State
from vigil.supervisor import Constant, Supervisor, replay
from vigil.testing._faults import Fault, FaultPlan, FaultyModel

from conftest import FakeClock

MS = 1_000_000
DEADLINE_NS = 50 * MS
RING = RingConfig(size=4096 + 32 * 16384, segment_size=16384)  # never wraps in one example
POLICY = Policy(
    consecutive_failures=2,
    window=6,
    min_calls=3,
    cooldown_ns=20 * MS,
    cooldown_max_ns=80 * MS,
    probes_required=2,
    probe_mode="live",
    max_recovering_ns=200 * MS,
    max_failed_recoveries=4,
    failed_recovery_period_ns=10_000 * MS,
    slow_call_ns=20 * MS,
)
X = torch.ones(1, 4)
FAULTS = [None, Fault.EXCEPTION, Fault.NAN, Fault.WRONG_SHAPE, Fault.OOM, Fault.SLOW]
FAULTS.append(Fault.DEVICE_FATAL)


class NonNegative:
    def check(self, x: Any, field: str = "input") -> None:
        if bool((x < 0).any()):
            raise InvalidInput(f"{field} negative", diagnostic=D.OUT_OF_RANGE, field=field)


class ShapeAndFinite:
    """The output contract: what the caller may be given."""

    def check(self, x: Any, field: str = "output") -> None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != (1, 4):
            raise InvalidInput(f"{field} shape", diagnostic=D.SHAPE_MISMATCH, field=field)
        if not bool(torch.isfinite(x).all()):
            raise InvalidInput(f"{field} not finite", diagnostic=D.NOT_FINITE, field=field)


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _budget(*, full: bool = False) -> settings:
    # "ci" is the profile of the default and the slow suite (tests/conftest.py)
    small = not full and settings.get_current_profile_name() in ("default", "ci")
    return settings(
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        **({"max_examples": 20, "stateful_step_count": 25} if small else {}),
    )


class SupervisedLog(RuleBasedStateMachine):
    """One log file across the whole example; one Supervisor at a time writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.path = Path(tempfile.mkdtemp(dir=_BASE[0] if _BASE else None)) / "log.vigil"
        self.clock = FakeClock()
        self.faulty = FaultyModel(lambda x: x * 2, FaultPlan(0))
        self.calls = 0  # every infer: one INFERENCE or REJECTED record
        self.sup: Supervisor | None = None
        self.isolation = "inline"

    def _open(self) -> None:
        self.sup = Supervisor(
            self.faulty,
            log=self.path,
            clock=self.clock,
            ring=RING,
            policy=POLICY,
            input_contract=NonNegative(),
            output_contract=ShapeAndFinite(),
            fallback=Constant(torch.zeros(1, 4)),
            isolation=self.isolation,
            deadline_ns=DEADLINE_NS,
        )

    @initialize(isolation=st.sampled_from(["inline", "thread"]))
    def start(self, isolation: str) -> None:
        self.isolation = isolation
        self._open()

    def teardown(self) -> None:
        if self.sup is not None:
            self.sup.close()

    # --- steps ---------------------------------------------------------------------------

    @rule(fault=st.sampled_from(FAULTS))
    def call(self, fault: Fault | None) -> None:
        assert self.sup is not None
        plan = FaultPlan(0, clock=self.clock.monotonic_ns, sleep=self.clock.sleep)
        if fault is not None:  # the primary's next run, if the state lets it run
            plan.at_calls([0], fault, **({"delay_s": 0.030} if fault is Fault.SLOW else {}))
        self.faulty.plan = plan
        self.clock.advance(MS)
        self.calls += 1
        try:
            result = self.sup.infer(X)
        except Unavailable:
            return  # refused, and recorded
        assert result.latency_ns <= DEADLINE_NS, result
        ShapeAndFinite().check(result.output)  # nothing bad reaches the caller

    @rule(kind=st.sampled_from(["contract", "unreadable", "request_id"]))
    def bad_call(self, kind: str) -> None:
        assert self.sup is not None
        self.clock.advance(MS)
        self.calls += 1
        try:
            if kind == "contract":
                self.sup.infer(-X)
            elif kind == "unreadable":
                self.sup.infer(Unprintable())
            else:
                self.sup.infer(X, request_id=b"short")
        except InvalidInput:
            return
        raise AssertionError(f"a {kind} call was answered")

    @rule(ms=st.sampled_from([5, 25, 100, 300]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms * MS)

    @rule()
    def restart(self) -> None:
        assert self.sup is not None
        before = self.sup.state
        self.sup.close()
        self._open()
        assert self.sup.state in (before, State.SAFE_STOP)  # restored (or one restart too many)

    @precondition(lambda self: self.sup is not None and self.sup.state is not State.NORMAL)
    @rule()
    def operator_reset(self) -> None:
        assert self.sup is not None
        try:
            self.sup.reset("stateful test")
        except InvalidArgument:  # after a process-fatal error: only a fresh process heals
            return
        assert self.sup.state is State.NORMAL

    # --- after every step ------------------------------------------------------------------

    @invariant()
    def log_is_complete_intact_and_replays(self) -> None:
        if self.sup is None:
            return
        with LogReader(self.path) as r:
            recs = list(r.records())
            report = r.verify()
        assert report.intact, report.findings
        seqs = [x.seq for x in recs]
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, nothing evicted
        calls = [
            x
            for x in recs
            if x.type is RecordType.REJECTED
            or (x.type is RecordType.INFERENCE and not x.body["flags"] & CallFlags.KNOWN_ANSWER)
        ]
        assert len(calls) == self.calls
        rep = replay(self.path)
        assert [f.code for f in rep.findings if f.code != D.REPLAY_NOTHING_CHECKED.code] == []
        assert rep.agrees or (rep.counted == rep.transitions == 0), rep.findings


_BASE: list[Path] = []  # where each example's log goes: pytest's temporary directory


def _run(tmp_path: Path, budget: settings) -> None:
    _BASE[:] = [tmp_path]
    try:
        run_state_machine_as_test(SupervisedLog, settings=budget)
    finally:
        _BASE.clear()


def test_supervised_log_stateful(tmp_path: Path) -> None:
    _run(tmp_path, _budget())


# the default suite runs the same machine (test_supervised_log_stateful) on a small budget
@pytest.mark.slow
def test_supervised_log_stateful_whole_budget(tmp_path: Path) -> None:
    _run(tmp_path, _budget(full=True))
