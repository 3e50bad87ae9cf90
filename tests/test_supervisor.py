"""The supervisor: who answers, within what time, and what the flight log says about it.

Time is a fake clock throughout: a hung model is released by an event, its deadline reached
by advancing the clock and poking the watchdog, never by sleeping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import LogReader, RingConfig
from vigil.errors import ConfigError, InputRefused, InvalidInput, Unavailable
from vigil.fsm import Policy
from vigil.model import Decoder, DecoderConfig, DecoderFallback
from vigil.schemas import CallFlags, Outcome, RecordType, ServedBy, State
from vigil.supervisor import Constant, FallbackModel, KnownAnswer, LastGood, Supervisor, digest
from vigil.testing._faults import Fault, FaultPlan, FaultyModel

from conftest import FakeClock

torch.set_num_threads(1)
MS = 1_000_000
RING = RingConfig(size=4096 + 32 * 16384, segment_size=16384)
POLICY = Policy(
    consecutive_failures=1,
    window=10,
    min_calls=5,
    cooldown_ns=100 * MS,
    probes_required=2,
    probe_mode="live",
    max_failed_recoveries=10,
    slow_call_ns=20 * MS,
)
X = torch.arange(16, dtype=torch.float32).reshape(1, 16) / 16
WEIGHT = torch.linspace(-1, 1, 64).reshape(4, 16)


def model(x: torch.Tensor) -> torch.Tensor:
    return x @ WEIGHT.T


def fallback_model(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], 4)


class Rig:
    """A supervisor around a faulty model, a fake clock and a plan of faults."""

    def __init__(self, tmp_path: Path, plan: FaultPlan | None = None, **kw: Any) -> None:
        self.clock = kw.pop("clock", FakeClock())
        self.plan = plan or FaultPlan(0, clock=self.clock.monotonic_ns, sleep=self.clock.sleep)
        self.path = str(tmp_path / f"sup-{kw.pop('name', 'a')}.vigil")
        kw.setdefault("policy", POLICY)
        kw.setdefault("fallback", FallbackModel(fallback_model))
        kw.setdefault("deadline_ns", 50 * MS)
        kw.setdefault("ring", RING)
        self.sup = Supervisor(FaultyModel(model, self.plan), log=self.path, clock=self.clock, **kw)

    def to_state(self, state: State) -> None:
        """Drive the supervisor into ``state`` with real calls (policy: 1 failure trips)."""
        if state is State.NORMAL:
            return
        self.plan.at_calls([self.plan.calls], Fault.EXCEPTION)
        assert self.sup.infer(X).served_by is ServedBy.FALLBACK
        assert self.sup.state is State.DEGRADED
        if state is State.RECOVERING:
            self.clock.advance(100 * MS)
            assert self.sup.infer(X).served_by is ServedBy.PRIMARY  # first good probe
            assert self.sup.state is State.RECOVERING

    def records(self) -> list[Any]:
        self.sup.log.flush()
        with LogReader(self.path) as r:
            return list(r.records())

    def close(self) -> None:
        self.plan.release()
        self.sup.close()


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    made: list[Rig] = []

    def make(**kw: Any) -> Rig:
        r = Rig(tmp_path, name=str(len(made)), **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def calls_of(records: list[Any]) -> list[Any]:
    return [
        r
        for r in records
        if r.type in (RecordType.INFERENCE, RecordType.REJECTED)
        and not (r.type is RecordType.INFERENCE and r.body["flags"] & CallFlags.KNOWN_ANSWER)
    ]


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"isolation": "fibre"}, "isolation"),
        ({"deadline_ns": 0}, "deadline_ns"),
        ({"workers": 0}, "workers"),
        ({"policy": dataclasses.replace(POLICY, probe_mode="known_answer")}, "known_answer"),
        ({"model_digest": b"short"}, "model_digest"),
        ({"fallback": 42}, "fallback 42"),
    ],
)
def test_bad_configuration_is_a_clear_error(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        Supervisor(model, log=str(tmp_path / "x.vigil"), **kwargs)


# --- the happy path and the record of it -------------------------------------------------------


@pytest.mark.requirement("SR-005")
@pytest.mark.parametrize("isolation", ["thread", "inline"])
def test_a_good_call_is_served_by_the_primary_and_recorded(rig: Any, isolation: str) -> None:
    r = rig(isolation=isolation)
    res = r.sup.infer(X, request_id=b"R" * 16)
    assert torch.equal(res.output, model(X))
    assert (res.served_by, res.outcome, res.state, res.code) == (
        ServedBy.PRIMARY,
        Outcome.OK,
        State.NORMAL,
        None,
    )
    rec = next(x for x in r.records() if x.seq == res.seq)
    b = rec.body
    assert b["request_id"] == b"R" * 16 and b["input_digest"] == digest(X)
    assert b["output_digest"] == digest(res.output)
    assert (b["served_by"], b["outcome"], b["flags"]) == (
        ServedBy.PRIMARY,
        Outcome.OK,
        CallFlags.COUNTED,
    )
    assert b["deadline_ns"] == 50 * MS and b["latency_ns"] > 0
    policy_note = [x for x in r.records() if x.type is RecordType.ANNOTATION]
    assert policy_note[0].body == {"key": "vigil.policy", "text": POLICY.canonical()}


@pytest.mark.requirement("SR-012")
def test_bad_input_is_rejected_recorded_and_not_held_against_the_model(rig: Any) -> None:
    class Shape16:
        def check(self, x: Any, field: str = "input") -> None:
            if tuple(x.shape) != (1, 16):
                raise InvalidInput(
                    f"{field} shape {tuple(x.shape)}",
                    diagnostic=D.SHAPE_MISMATCH,
                    field=field,
                    rule="shape",
                )

    r = rig(input_contract=Shape16())
    for _ in range(3):
        with pytest.raises(InvalidInput) as info:
            r.sup.infer(torch.zeros(1, 17))
        assert info.value.code == "DIA-2101"
    assert r.plan.history == [] and r.plan.calls == 0  # the model never saw it
    assert r.sup.state is State.NORMAL
    rejected = [x for x in r.records() if x.type is RecordType.REJECTED]
    assert len(rejected) == 3 and rejected[0].body["code"] == 2101
    assert r.sup.statistics().rejected == 3


@pytest.mark.requirement("SR-012")
@pytest.mark.parametrize("isolation", ["thread", "inline"])
@pytest.mark.parametrize("mode", ["live", "shadow"])
def test_a_model_refusing_its_input_is_a_rejection_not_a_failure(
    tmp_path: Path, isolation: str, mode: str
) -> None:
    decoder = Decoder(DecoderConfig.tiny())
    clock = FakeClock()
    policy = dataclasses.replace(POLICY, probe_mode=mode)
    bigram = DecoderFallback(decoder)
    with Supervisor(
        decoder, log=tmp_path / "r.vigil", policy=policy, clock=clock, isolation=isolation,
        fallback=FallbackModel(bigram), deadline_ns=5_000 * MS,
    ) as sup:  # fmt: skip
        bad = [torch.zeros(1, 0, dtype=torch.int64), torch.tensor([[300]]), torch.ones(1, 2)]
        for x in bad:  # no input contract: only the decoder's own boundary sees these
            with pytest.raises(InputRefused) as info:
                sup.infer(x)
            assert not info.value.message.startswith(("InputRefused", info.value.code))
        assert sup.state is State.NORMAL  # one counted failure would trip this policy
        nan = torch.tensor([[1, 2]])
        with torch.no_grad():
            decoder.lm_head.weight[0, 0] = float("nan")  # the model's own fault: it counts
        assert sup.infer(nan).served_by is ServedBy.FALLBACK
        assert sup.state is State.DEGRADED
        clock.advance(policy.cooldown_ns)  # recovering: refusals there are rejections too
        with pytest.raises(InputRefused):
            sup.infer(bad[1])
        assert sup.state is State.RECOVERING
        assert sup.statistics().rejected == len(bad) + 1
    with LogReader(tmp_path / "r.vigil") as r:
        codes = [x.body["code"] for x in r.records() if x.type is RecordType.REJECTED]
    out_of_range = D.TOKEN_ID_OUT_OF_RANGE
    refused = [D.TOKEN_IDS_SHAPE, out_of_range, D.TOKEN_IDS_DTYPE, out_of_range]
    assert codes == [c.number for c in refused]


# --- a scenario per fault type per state -----------------------------------------------------

FAULTS = [
    (Fault.EXCEPTION, Outcome.ERROR, D.MODEL_ERROR),
    (Fault.NAN, Outcome.INVALID_OUTPUT, D.INVALID_OUTPUT),
    (Fault.WRONG_SHAPE, Outcome.INVALID_OUTPUT, D.INVALID_OUTPUT),
    (Fault.OOM, Outcome.OUT_OF_MEMORY, D.OUT_OF_MEMORY),
    (Fault.DEVICE_FATAL, Outcome.DEVICE_FATAL, D.DEVICE_FATAL),
    (Fault.SLOW, Outcome.SLOW, D.SLOW_CALL),
]


class ShapeContract:
    def check(self, x: Any, field: str = "output") -> None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != (1, 4):
            raise InvalidInput(f"{field} shape", diagnostic=D.SHAPE_MISMATCH, field=field)
        if not bool(torch.isfinite(x).all()):
            raise InvalidInput(f"{field} NaN", diagnostic=D.NOT_FINITE, field=field)


@pytest.mark.requirement("SR-002")
@pytest.mark.requirement("SR-003")
@pytest.mark.requirement("SR-004")
@pytest.mark.parametrize("state", [State.NORMAL, State.RECOVERING, State.DEGRADED])
@pytest.mark.parametrize(("fault", "outcome", "code"), FAULTS, ids=lambda v: getattr(v, "name", ""))
def test_each_fault_in_each_state(
    rig: Any, state: State, fault: Fault, outcome: Outcome, code: D.Diagnostic
) -> None:
    r = rig(output_contract=ShapeContract(), isolation="inline")
    r.to_state(state)
    params = {"delay_s": 0.030} if fault is Fault.SLOW else {}
    r.plan.at_calls([r.plan.calls], fault, **params)
    before = len([x for x in r.records() if x.type is RecordType.TRANSITION])
    calls_before = r.plan.calls
    res = r.sup.infer(X)
    new = [x for x in r.records() if x.type is RecordType.TRANSITION][before:]
    moves = [(t.body["from_state"], t.body["to_state"]) for t in new]
    if state is State.DEGRADED:  # the primary is not called: the fault never happens
        assert (res.served_by, moves) == (ServedBy.FALLBACK, [])
        assert r.plan.calls == calls_before
        return
    assert res.outcome is outcome and res.code is code
    if fault is Fault.SLOW:  # served, but slow: a failed probe in RECOVERING
        assert res.served_by is ServedBy.PRIMARY
        want = [] if state is State.NORMAL else [(State.RECOVERING, State.DEGRADED)]
        assert moves == want
        return
    assert res.served_by is ServedBy.FALLBACK
    assert moves == [(state, State.DEGRADED)]
    assert new[0].body["cause_seq"] == res.seq
    if fault is Fault.DEVICE_FATAL:  # never probed again in this process
        r.clock.advance(10**12)
        assert r.sup.infer(X).served_by is ServedBy.FALLBACK
        assert r.sup.statistics().machine.primary_dead


@pytest.mark.requirement("SR-001")
def test_a_hung_primary_is_answered_around_at_the_deadline(rig: Any) -> None:
    r = rig(isolation="thread")
    r.plan.at_calls([0], Fault.HANG)
    got: list[Any] = []
    caller = threading.Thread(target=lambda: got.append(r.sup.infer(X)))
    caller.start()
    assert r.plan.wait_hanging(1, timeout=10)
    r.clock.advance(50 * MS)  # the deadline passes
    r.sup._watchdog.poke()
    caller.join(10)
    (res,) = got
    assert (res.served_by, res.outcome, res.code) == (
        ServedBy.FALLBACK,
        Outcome.TIMEOUT,
        D.DEADLINE_MISSED,
    )
    assert r.sup.state is State.DEGRADED and r.sup.statistics().hung == 1
    r.sup.reset("test")  # even in NORMAL, a hung primary is not called
    busy = r.sup.infer(X)
    assert (busy.served_by, busy.code) == (ServedBy.FALLBACK, D.PRIMARY_BUSY)
    assert r.plan.calls == 1  # the primary was not called again
    r.plan.release()
    assert r.sup.wait_hung(0, timeout=10)
    assert r.sup.infer(X).served_by is ServedBy.PRIMARY
    late = [
        x for x in r.records() if x.type is RecordType.ANNOTATION and x.body["key"] == "vigil.late"
    ]
    assert len(late) == 1


@pytest.mark.requirement("SR-001")
def test_a_busy_primary_without_a_fallback_is_recorded_with_its_cause(rig: Any) -> None:
    """No fallback and the primary still hung: the caller gets Unavailable (DIA-4009), and
    the record says why nobody answered (DIA-4008 busy), not just that nobody did."""
    r = rig(isolation="inline", fallback=None)
    r.plan.at_calls([0], Fault.HANG)

    def hung_call() -> None:
        with contextlib.suppress(Unavailable):  # TIMEOUT, and no fallback to answer it
            r.sup.infer(X)

    caller = threading.Thread(target=hung_call)
    caller.start()
    assert r.plan.wait_hanging(1, timeout=10)
    r.clock.advance(50 * MS)
    r.sup._watchdog.poke()
    assert r.sup.wait_hung(1, timeout=10)
    with pytest.raises(Unavailable, match="still running") as info:
        r.sup.infer(X)
    assert info.value.code == "DIA-4009"
    r.plan.release()
    caller.join(10)
    calls = [x.body for x in r.records() if x.type is RecordType.INFERENCE]
    (busy,) = [b for b in calls if b["outcome"] is Outcome.UNAVAILABLE]  # the hung: TIMEOUT
    assert busy["served_by"] is ServedBy.NONE
    assert busy["code"] == D.PRIMARY_BUSY.number and busy["flags"] == 0  # not counted


@pytest.mark.requirement("SR-001")
def test_inline_hang_holds_its_caller_but_protects_the_others(rig: Any) -> None:
    r = rig(isolation="inline")
    r.plan.at_calls([0], Fault.HANG)
    got: list[Any] = []
    caller = threading.Thread(target=lambda: got.append(r.sup.infer(X)))
    caller.start()
    assert r.plan.wait_hanging(1, timeout=10)
    r.clock.advance(50 * MS)
    r.sup._watchdog.poke()
    assert r.sup.wait_hung(1, timeout=10)  # the watchdog marks the primary hung
    other = r.sup.infer(X)
    assert (other.served_by, other.code) == (ServedBy.FALLBACK, D.PRIMARY_BUSY)
    assert not got  # the hung caller is still inside the model
    r.plan.release()
    caller.join(10)
    (res,) = got
    assert (res.served_by, res.outcome) == (ServedBy.FALLBACK, Outcome.TIMEOUT)
    assert r.sup.statistics().hung == 0


# --- fallbacks --------------------------------------------------------------------------------


def test_the_fallback_chain_in_order(rig: Any) -> None:
    r = rig(fallback=[LastGood(30 * MS), Constant(torch.full((1, 4), 7.0))])
    good = r.sup.infer(X)
    r.plan.at_calls([1, 2], Fault.EXCEPTION)
    r.clock.advance(10 * MS)
    last = r.sup.infer(X)
    assert last.served_by is ServedBy.LAST_GOOD and torch.equal(last.output, good.output)
    assert 10 * MS <= last.answer_age_ns < 30 * MS
    r.clock.advance(40 * MS)  # too old now
    const = r.sup.infer(X)
    assert const.served_by is ServedBy.CONSTANT and float(const.output[0, 0]) == 7.0
    recs = {x.seq: x for x in r.records()}
    assert recs[last.seq].body["answer_age_ns"] == last.answer_age_ns


@pytest.mark.requirement("SR-001")
def test_no_fallback_means_unavailable_not_a_guess(rig: Any) -> None:
    r = rig(fallback=None)
    r.plan.at_calls([0], Fault.EXCEPTION)
    with pytest.raises(Unavailable, match="no fallback") as info:
        r.sup.infer(X)
    assert info.value.code == "DIA-4009"
    with pytest.raises(Unavailable, match="DEGRADED"):
        r.sup.infer(X)
    served = [x.body["served_by"] for x in r.records() if x.type is RecordType.INFERENCE]
    assert served == [ServedBy.NONE, ServedBy.NONE]
    assert r.sup.statistics().unavailable == 2


@pytest.mark.requirement("SR-002")
def test_a_fallback_with_a_bad_output_is_skipped(rig: Any) -> None:
    r = rig(
        fallback=[
            FallbackModel(lambda x: torch.full((1, 4), float("nan"))),
            Constant(torch.ones(1, 4)),
        ]
    )
    r.plan.at_calls([0], Fault.EXCEPTION)
    assert r.sup.infer(X).served_by is ServedBy.CONSTANT


class ExplodingCheck:
    """A check whose own synchronisation fails, as a sticky CUDA error surfaces on a GPU."""

    def __init__(self, message: str = "CUDA error: device-side assert triggered") -> None:
        self.message = message
        self.calls = 0

    def check(self, x: Any, field: str = "output") -> None:
        self.calls += 1
        raise RuntimeError(self.message)


@pytest.mark.requirement("SR-002")
@pytest.mark.parametrize("isolation", ["thread", "inline"])
def test_an_output_check_that_fails_is_a_model_failure_not_a_crash(
    rig: Any, isolation: str
) -> None:
    r = rig(output_contract=ExplodingCheck(), isolation=isolation)
    res = r.sup.infer(X)  # fail closed: the unchecked output is not served
    assert (res.served_by, res.outcome, res.code) == (
        ServedBy.FALLBACK,
        Outcome.DEVICE_FATAL,
        D.DEVICE_FATAL,
    )
    assert "output check" in res.reason and "device-side assert" in res.reason
    assert r.sup.state is State.DEGRADED
    rec = next(x for x in r.records() if x.seq == res.seq)
    assert rec.body["outcome"] == Outcome.DEVICE_FATAL
    assert rec.body["output_digest"] == digest(res.output)  # the fallback's, not the primary's
    other = rig(output_contract=ExplodingCheck("a contract bug"))
    assert other.sup.infer(X).outcome is Outcome.ERROR  # any other failure: MODEL_ERROR


@pytest.mark.requirement("SR-002")
def test_an_unhashable_output_is_not_served(rig: Any) -> None:
    class Opaque:  # passes a permissive contract, but digest() reads repr(), which raises
        def __repr__(self) -> str:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    class Anything:
        def check(self, x: Any, field: str = "output") -> None:
            pass

    r = rig(output_contract=Anything())
    r.plan.at_calls([0], Fault.EXCEPTION)
    r.sup.infer(X)  # into DEGRADED, so that the next call is a live probe
    r.clock.advance(100 * MS)
    r.sup.primary = lambda x: Opaque()
    res = r.sup.infer(X)
    assert res.served_by is ServedBy.FALLBACK and res.outcome is Outcome.DEVICE_FATAL


@pytest.mark.requirement("SR-002")
def test_fallback_outputs_are_checked_with_the_fallback_contract(rig: Any) -> None:
    stateful = ExplodingCheck()  # stands for a stateful output contract: it must not see these
    wide = FallbackModel(lambda x: torch.zeros(1, 5))
    r = rig(
        output_contract=ShapeContract(),
        fallback_contract=ShapeContract(),
        fallback=[wide, Constant(torch.ones(1, 4))],
    )
    r.plan.at_calls([0], Fault.EXCEPTION)
    assert r.sup.infer(X).served_by is ServedBy.CONSTANT  # (1, 5) broke the fallback contract
    ok = rig(
        output_contract=stateful,
        fallback=[FallbackModel(lambda x: torch.zeros(1, 5))],  # default: finite is enough
    )
    res = ok.sup.infer(X)
    assert res.served_by is ServedBy.FALLBACK and tuple(res.output.shape) == (1, 5)
    assert stateful.calls == 1  # the primary's output only
    nan = rig(fallback=[FallbackModel(lambda x: torch.full((1, 4), float("inf")))])
    nan.plan.at_calls([0], Fault.EXCEPTION)
    with pytest.raises(Unavailable):
        nan.sup.infer(X)


def test_a_contract_without_check_is_a_configuration_error(tmp_path: Path) -> None:
    for name in ("input_contract", "output_contract", "fallback_contract"):
        with pytest.raises(ConfigError, match=name):
            Supervisor(model, log=str(tmp_path / "x.vigil"), **{name: object()})


@pytest.mark.requirement("SR-005")
def test_a_rejected_input_is_recorded_even_when_it_cannot_be_hashed(rig: Any) -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise ValueError("no repr")

    class TensorsOnly:
        def check(self, x: Any, field: str = "input") -> None:
            if not isinstance(x, torch.Tensor):
                raise InvalidInput(f"{field} is not a tensor", field=field, rule="tensor")

    r = rig(input_contract=TensorsOnly())
    with pytest.raises(InvalidInput, match="not a tensor"):
        r.sup.infer(Unprintable())
    (rejected,) = [x for x in r.records() if x.type is RecordType.REJECTED]
    assert rejected.body["input_digest"] == bytes(32)
    assert r.plan.calls == 0


# --- recovery modes ---------------------------------------------------------------------------


@pytest.mark.requirement("SR-003")
def test_shadow_recovery_never_serves_the_primary(rig: Any) -> None:
    r = rig(policy=dataclasses.replace(POLICY, probe_mode="shadow"))
    r.plan.at_calls([0], Fault.EXCEPTION)
    r.sup.infer(X)
    r.clock.advance(100 * MS)
    first = r.sup.infer(X)
    assert (first.served_by, r.sup.state) == (ServedBy.FALLBACK, State.RECOVERING)
    second = r.sup.infer(X)
    assert second.served_by is ServedBy.FALLBACK and r.sup.state is State.NORMAL
    flags = [x.body["flags"] for x in r.records() if x.seq in (first.seq, second.seq)]
    assert flags == [CallFlags.COUNTED | CallFlags.PROBE | CallFlags.SHADOW] * 2
    assert r.sup.infer(X).served_by is ServedBy.PRIMARY


@pytest.mark.requirement("SR-014")
def test_known_answer_probes_catch_wrong_answers(rig: Any) -> None:
    wrong = KnownAnswer(X, model(X) + 1)  # the model will never match this
    r = rig(
        known_answer=wrong,
        policy=dataclasses.replace(POLICY, probe_interval_ns=20 * MS, consecutive_failures=1),
    )
    assert r.sup.infer(X).served_by is ServedBy.PRIMARY  # no probe due yet
    r.clock.advance(20 * MS)
    res = r.sup.infer(X)  # the probe runs first, fails, trips
    assert res.served_by is ServedBy.FALLBACK and r.sup.state is State.DEGRADED
    ka = [
        x
        for x in r.records()
        if x.type is RecordType.INFERENCE and x.body["flags"] & CallFlags.KNOWN_ANSWER
    ]
    assert len(ka) == 1 and ka[0].body["code"] == D.WRONG_ANSWER.number
    right = rig(
        known_answer=KnownAnswer(X, model(X)),
        policy=dataclasses.replace(POLICY, probe_interval_ns=20 * MS),
    )
    right.clock.advance(20 * MS)
    assert right.sup.infer(X).served_by is ServedBy.PRIMARY and right.sup.state is State.NORMAL


# --- concurrency --------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["thread", "inline"])
def test_no_lock_is_held_across_the_model_call(tmp_path: Path, isolation: str) -> None:
    both_inside = threading.Barrier(2, timeout=10)

    def rendezvous(x: torch.Tensor) -> torch.Tensor:
        both_inside.wait()  # breaks (and fails the call) if calls were serialised
        return model(x)

    with Supervisor(
        rendezvous,
        log=str(tmp_path / "c.vigil"),
        isolation=isolation,
        fallback=Constant(torch.zeros(1, 4)),
        deadline_ns=30 * 10**9,
    ) as sup:
        out: list[Any] = []
        threads = [threading.Thread(target=lambda: out.append(sup.infer(X))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert [o.served_by for o in out] == [ServedBy.PRIMARY, ServedBy.PRIMARY]


def test_statistics_snapshot(rig: Any) -> None:
    r = rig()
    r.plan.at_calls([1], Fault.EXCEPTION)
    for _ in range(3):
        r.sup.infer(X)
    s = r.sup.statistics()
    assert (s.calls, s.served, s.state) == (3, {"PRIMARY": 1, "FALLBACK": 2}, State.DEGRADED)
    assert s.outcomes == {"OK": 2, "ERROR": 1} and s.latency_p99_ns >= s.latency_p50_ns > 0
    assert s.log_head_seq == r.sup.log.head_seq
