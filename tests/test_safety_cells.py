"""Safety-matrix gaps closed by unit tests: the operator reset and the slow-rate window."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vigil.auditlog import RingConfig
from vigil.fsm import Policy
from vigil.schemas import Outcome, State
from vigil.supervisor import Constant, Supervisor
from vigil.testing._faults import Fault, FaultPlan, FaultyModel

from conftest import FakeClock

MS = 1_000_000
RING = RingConfig(size=4096 + 8 * 16384, segment_size=16384)
X = torch.ones(1, 4)


@pytest.mark.requirement("SR-010")
def test_an_operator_reset_in_normal_clears_the_slow_rate_window(tmp_path: Path) -> None:
    clock = FakeClock()
    plan = FaultPlan(0, clock=clock.monotonic_ns, sleep=clock.sleep)
    policy = Policy(window=10, min_calls=4, slow_rate=0.5, slow_call_ns=20 * MS)
    sup = Supervisor(
        FaultyModel(lambda x: x * 2, plan),
        log=tmp_path / "s.vigil",
        fallback=Constant(torch.zeros(1, 4)),
        policy=policy,
        isolation="inline",
        clock=clock,
        ring=RING,
    )
    try:
        plan.at_calls([0, 1, 2], Fault.SLOW, delay_s=0.03)
        assert [sup.infer(X).outcome for _ in range(3)] == [Outcome.SLOW] * 3
        assert sup.statistics().machine.window_slow == 3
        sup.reset("the slow calls were an external load, now gone")
        m = sup.statistics().machine
        assert (m.state, m.window_calls, m.window_slow, m.consecutive_failures) == (
            State.NORMAL,
            0,
            0,
            0,
        )
        # one more slow call must not trip on the three from before the reset
        plan.at_calls([plan.calls], Fault.SLOW, delay_s=0.03)
        assert sup.infer(X).outcome is Outcome.SLOW
        assert sup.state is State.NORMAL
    finally:
        plan.release()
        sup.close()
