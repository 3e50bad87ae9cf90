"""The safety state machine, driven by a fake clock (plain integers): the whole state is
asserted after every step, and illegal events are shown to change nothing."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import MachineError

from vigil import _diagnostics as D
from vigil.errors import ConfigError, InvalidArgument
from vigil.fsm import TRANSITIONS, Policy, Route, SafetyMachine, Snapshot
from vigil.schemas import Outcome, State

from conftest import examples

OK, ERR, SLOW = Outcome.OK, Outcome.ERROR, Outcome.SLOW
N, D_, R, S = State.NORMAL, State.DEGRADED, State.RECOVERING, State.SAFE_STOP
MS = 1_000_000

POLICY = Policy(
    consecutive_failures=3,
    window=10,
    min_calls=5,
    failure_rate=0.5,
    slow_call_ns=50 * MS,
    slow_rate=0.6,
    cooldown_ns=100 * MS,
    cooldown_backoff=2.0,
    cooldown_max_ns=300 * MS,
    probes_required=2,
    probe_mode="live",
    max_recovering_ns=1000 * MS,
    max_failed_recoveries=2,
    failed_recovery_period_ns=10_000 * MS,
)


def expect(m: SafetyMachine, **want: object) -> None:
    """Assert the named fields of the statistics snapshot (and always the state)."""
    stats = dataclasses.asdict(m.statistics())
    got = {k: stats[k] for k in want}
    assert got == want, f"state {m.state.name}: {got} != {want}"


def call(m: SafetyMachine, t: int, outcome: Outcome) -> tuple[Route, list[str]]:
    """One call at ``t``: route, then record its outcome when the primary ran."""
    decision = m.route(t)
    names = [f"{x.trigger}:{x.dest.name}" for x in decision.transitions]
    if decision.route is not Route.FALLBACK:
        names += [
            f"{x.trigger}:{x.dest.name}"
            for x in m.record(outcome, t, probe=decision.route is Route.PROBE)
        ]
    return decision.route, names


# --- the policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("consecutive_failures", 0, "positive integer"),
        ("window", -1, "positive integer"),
        ("min_calls", 11, "exceeds window"),
        ("failure_rate", 0, r"\(0, 1\]"),
        ("failure_rate", 1.5, r"\(0, 1\]"),
        ("slow_rate", "half", r"\(0, 1\]"),
        ("cooldown_backoff", 0.5, ">= 1"),
        ("cooldown_max_ns", 1, ">= cooldown_ns"),
        ("probe_mode", "hopeful", "probe_mode"),
        ("slow_call_ns", 0, "positive integer or None"),
        ("max_failed_recoveries", -1, ">= 0"),
        ("probes_required", True, "positive integer"),
    ],
)
def test_bad_policy_is_a_clear_config_error(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        dataclasses.replace(POLICY, **{field: value})
    assert info.value.code == "DIA-1001"


def test_policy_is_recorded_canonically_and_rebuilt() -> None:
    again = Policy.from_json(POLICY.to_json())
    assert again == POLICY and again.digest() == POLICY.digest()
    assert dataclasses.replace(POLICY, window=11).digest() != POLICY.digest()
    with pytest.raises(ConfigError, match="unknown policy fields"):
        Policy.from_json({**POLICY.to_json(), "hope": 1})
    with pytest.raises(ConfigError, match="version"):
        Policy.from_json({**POLICY.to_json(), "policy": 2})
    assert [POLICY.cooldown_after(k) for k in range(4)] == [100 * MS, 200 * MS, 300 * MS, 300 * MS]


# --- the table ----------------------------------------------------------------------------


@pytest.mark.requirement("SR-010")
def test_every_event_not_in_the_table_is_refused_and_changes_nothing() -> None:
    allowed = {
        (src, t["trigger"])
        for t in TRANSITIONS
        for src in (t["source"] if isinstance(t["source"], list) else [t["source"]])
    }
    triggers = {t["trigger"] for t in TRANSITIONS}
    for state, trigger in itertools.product([N, D_, R, S], sorted(triggers)):
        m = SafetyMachine(POLICY, 0, restore=Snapshot(state=state))
        before = m.statistics()
        if (state, trigger) in allowed:
            continue
        with pytest.raises(MachineError):
            m.trigger(trigger, code=D.OPERATOR_RESET, reason="illegal", now_ns=1)
        assert m.statistics() == before, (state, trigger)


@pytest.mark.requirement("SR-010")
def test_no_automatic_transitions_exist() -> None:
    m = SafetyMachine(POLICY, 0)
    assert not hasattr(m, "to_DEGRADED") and not hasattr(m, "to_NORMAL")


# --- scenarios, step by step ----------------------------------------------------------------


@pytest.mark.requirement("SR-003")
def test_trip_cooldown_probe_and_recover() -> None:
    m = SafetyMachine(POLICY, 0)
    expect(m, state=N, calls=0, consecutive_failures=0, transitions=0)
    assert call(m, 1, OK) == (Route.PRIMARY, [])
    assert call(m, 2, ERR) == (Route.PRIMARY, [])
    expect(m, state=N, calls=2, failures=1, consecutive_failures=1, window_calls=2)
    assert call(m, 3, ERR) == (Route.PRIMARY, [])
    assert call(m, 4, ERR) == (Route.PRIMARY, ["trip:DEGRADED"])
    expect(m, state=D_, since_ns=4, calls=4, failures=3, next_cooldown_ns=100 * MS)
    # DEGRADED: the fallback answers; the cooldown ends exactly at since + 100 ms
    assert call(m, 4 + 100 * MS - 1, ERR) == (Route.FALLBACK, [])
    expect(m, state=D_, calls=4)  # fallback calls are not the primary's
    assert call(m, 4 + 100 * MS, OK) == (Route.PROBE, ["cooled_down:RECOVERING"])
    expect(m, state=R, good_probes=1, calls=5)
    assert call(m, 5 + 100 * MS, OK) == (Route.PROBE, ["recovered:NORMAL"])
    expect(
        m,
        state=N,
        window_calls=0,
        consecutive_failures=0,
        failed_recoveries_in_a_row=0,
        transitions=3,
    )


@pytest.mark.requirement("SR-009")
def test_failed_probes_back_off_then_safe_stop() -> None:
    m = SafetyMachine(POLICY, 0)
    for t in (1, 2, 3):
        call(m, t, ERR)
    t = 3 + 100 * MS
    assert call(m, t, ERR) == (Route.PROBE, ["cooled_down:RECOVERING", "probe_failed:DEGRADED"])
    expect(
        m,
        state=D_,
        failed_recoveries_in_a_row=1,
        failed_recoveries_in_period=1,
        next_cooldown_ns=200 * MS,
    )
    assert call(m, t + 200 * MS - 1, OK)[0] is Route.FALLBACK  # the doubled cooldown holds
    t += 200 * MS
    assert call(m, t, ERR) == (Route.PROBE, ["cooled_down:RECOVERING", "probe_failed:DEGRADED"])
    expect(m, state=D_, failed_recoveries_in_period=2, next_cooldown_ns=300 * MS)
    t += 300 * MS
    assert call(m, t, ERR) == (
        Route.PROBE,
        ["cooled_down:RECOVERING", "probe_failed:DEGRADED", "give_up:SAFE_STOP"],
    )
    expect(m, state=S, failed_recoveries_in_period=3)
    # terminal: time and outcomes change nothing
    assert call(m, t + 10**12, OK) == (Route.FALLBACK, [])
    assert m.tick(t + 10**13) == ()
    expect(m, state=S)
    (reset,) = m.reset(t + 10**13, "checked the camera")
    assert (reset.source, reset.dest, reset.code) == (S, N, D.OPERATOR_RESET)
    expect(m, state=N, failed_recoveries_in_period=0, failed_recoveries_in_a_row=0)


def test_failed_recoveries_outside_the_period_are_forgotten() -> None:
    m = SafetyMachine(dataclasses.replace(POLICY, failed_recovery_period_ns=150 * MS), 0)
    t = 0
    for _ in range(4):  # four failed recoveries, each more than the period apart
        m.reset(t, "x") if m.state is not N else None
        for _ in range(3):
            t += 1
            call(m, t, ERR)
        t += m.statistics().next_cooldown_ns
        call(m, t, ERR)
        t += 200 * MS
    expect(m, state=D_, failed_recoveries_in_period=1)


def test_failure_rate_needs_min_calls() -> None:
    m = SafetyMachine(POLICY, 0)
    pattern = [ERR, OK, ERR, OK]  # never 3 in a row; 50 % once 5 calls are in the window
    for i, outcome in enumerate(pattern):
        assert call(m, i, outcome) == (Route.PRIMARY, [])
    expect(m, state=N, window_calls=4, window_failures=2)
    (_, names) = call(m, 4, ERR)
    assert names == ["trip:DEGRADED"]
    assert m.statistics().state is D_


def test_the_window_slides() -> None:
    m = SafetyMachine(POLICY, 0)
    for i in range(10):
        call(m, i, ERR if i % 5 == 0 else OK)  # 2 failures in 10
    for i in range(10, 30):
        call(m, i, OK)
    expect(m, state=N, window_calls=10, window_failures=0, calls=30, failures=2)


def test_slow_calls_trip_at_their_own_rate_and_fail_probes() -> None:
    m = SafetyMachine(POLICY, 0)
    for i in range(4):
        assert call(m, i, SLOW) == (Route.PRIMARY, [])
    expect(m, state=N, window_slow=4, failures=0, consecutive_failures=0)
    assert call(m, 4, SLOW)[1] == ["trip:DEGRADED"]  # the window now holds min_calls
    expect(m, state=D_, failures=0)
    m2 = SafetyMachine(dataclasses.replace(POLICY, slow_call_ns=None), 0)
    for i in range(10):
        call(m2, i, SLOW)
    expect(m2, state=N, window_slow=10)  # slow tracking disabled: never trips


def test_slow_rate_trip_boundary() -> None:
    m = SafetyMachine(POLICY, 0)  # min_calls 5, slow_rate 0.6: 3 of 5 trips
    assert call(m, 0, SLOW)[1] == []
    assert call(m, 1, SLOW)[1] == []
    assert call(m, 2, OK)[1] == []
    assert call(m, 3, OK)[1] == []
    assert call(m, 4, SLOW)[1] == ["trip:DEGRADED"]
    expect(m, state=D_, window_slow=3, window_calls=5, failures=0)


@pytest.mark.requirement("SR-012")
def test_rejected_and_unavailable_do_not_count() -> None:
    m = SafetyMachine(POLICY, 0)
    for i in range(20):
        assert m.record(Outcome.REJECTED, i) == ()
        assert m.record(Outcome.UNAVAILABLE, i) == ()
    expect(m, state=N, calls=0, failures=0)
    strict = SafetyMachine(dataclasses.replace(POLICY, count_bad_input=True), 0)
    strict.record(Outcome.REJECTED, 1)
    strict.record(Outcome.REJECTED, 2)
    (trip,) = strict.record(Outcome.REJECTED, 3)
    assert trip.code is D.TRIP_CONSECUTIVE


@pytest.mark.requirement("SR-004")
@pytest.mark.parametrize("outcome", [Outcome.DEVICE_FATAL, Outcome.WORKER_LOST])
def test_fatal_outcomes_trip_at_once(outcome: Outcome) -> None:
    m = SafetyMachine(POLICY, 0)
    (trip,) = m.record(outcome, 5)
    assert (trip.source, trip.dest, trip.code) == (N, D_, D.TRIP_FATAL)
    dead = outcome is Outcome.DEVICE_FATAL
    expect(m, state=D_, primary_dead=dead)
    route, names = call(m, 5 + 10**12, OK)  # long after any cooldown
    if dead:  # never probed again in this process
        assert (route, names) == (Route.FALLBACK, [])
        with pytest.raises(InvalidArgument, match="fresh process"):
            m.reset(10**13, "try again")
        m.primary_replaced()
        assert call(m, 10**13, OK) == (Route.PROBE, ["cooled_down:RECOVERING"])
    else:
        assert (route, names) == (Route.PROBE, ["cooled_down:RECOVERING"])


def test_recovery_that_takes_too_long_counts_as_failed() -> None:
    m = SafetyMachine(POLICY, 0)
    for t in (1, 2, 3):
        call(m, t, ERR)
    t = 3 + 100 * MS
    assert call(m, t, OK) == (Route.PROBE, ["cooled_down:RECOVERING"])
    expect(m, state=R, good_probes=1)
    (late,) = m.tick(t + 1000 * MS)
    assert (late.trigger, late.code) == ("recovery_timed_out", D.RECOVERY_TIMEOUT)
    expect(m, state=D_, failed_recoveries_in_a_row=1)


def test_shadow_and_live_probes_count_alike_and_slow_probes_fail() -> None:
    m = SafetyMachine(dataclasses.replace(POLICY, probe_mode="shadow"), 0)
    for t in (1, 2, 3):
        call(m, t, ERR)
    t = 3 + 100 * MS
    assert call(m, t, SLOW) == (Route.PROBE, ["cooled_down:RECOVERING", "probe_failed:DEGRADED"])


def test_known_answer_probes_are_scheduled_one_at_a_time() -> None:
    counted = dataclasses.replace(POLICY, probe_interval_ns=50 * MS, known_answer_trips=False)
    m = SafetyMachine(counted, 0)
    assert not m.route(49 * MS).known_answer_probe
    first = m.route(50 * MS)
    assert first.known_answer_probe and first.route is Route.PRIMARY
    assert not m.route(200 * MS).known_answer_probe  # one in flight
    assert m.record(Outcome.INVALID_OUTPUT, 201 * MS, known_answer=True, code=D.WRONG_ANSWER) == ()
    expect(m, state=N, failures=1, consecutive_failures=1)
    assert m.route(251 * MS).known_answer_probe
    ka = SafetyMachine(dataclasses.replace(POLICY, probe_mode="known_answer"), 0)
    for t in (1, 2, 3):
        call(ka, t, ERR)
    decision = ka.route(3 + 100 * MS)
    assert decision.route is Route.PROBE and decision.known_answer_probe
    assert ka.record(OK, 4 + 100 * MS, known_answer=True) == ()
    d2 = ka.route(5 + 100 * MS)
    assert d2.known_answer_probe
    (rec,) = ka.record(OK, 6 + 100 * MS, known_answer=True)
    assert rec.dest is N


@pytest.mark.requirement("SR-014")
def test_a_failed_known_answer_probe_trips_at_once_however_good_the_calls_around_it() -> None:
    m = SafetyMachine(dataclasses.replace(POLICY, probe_interval_ns=50 * MS), 0)
    call(m, 1, OK)
    assert m.route(50 * MS).known_answer_probe
    (trip,) = m.record(Outcome.INVALID_OUTPUT, 51 * MS, known_answer=True, code=D.WRONG_ANSWER)
    assert (trip.dest, trip.code) == (D_, D.TRIP_KNOWN_ANSWER)
    old = dataclasses.replace(m.policy, known_answer_trips=False)  # counted like a user call
    lax = SafetyMachine(old, 0)
    for t in range(1, 11):  # wrong answers among good user calls: never 3 in a row, and
        assert lax.route(t * 50 * MS).known_answer_probe  # a rate far below failure_rate
        assert lax.record(Outcome.INVALID_OUTPUT, t * 50 * MS + 1, known_answer=True) == ()
        for k in range(10):
            assert call(lax, t * 50 * MS + 2 + k, OK) == (Route.PRIMARY, [])
    expect(lax, state=N, failures=10)


def test_a_recorded_policy_without_known_answer_trips_replays_as_it_ran() -> None:
    recorded = Policy().to_json()
    del recorded["known_answer_trips"]  # a log written before the field existed
    assert Policy.from_json(recorded).known_answer_trips is False
    assert Policy.from_json(Policy().to_json()) == Policy()
    with pytest.raises(ConfigError):
        Policy(known_answer_trips="yes")  # type: ignore[arg-type]


@pytest.mark.requirement("SR-009")
def test_restore_sees_a_crash_loop_as_one() -> None:
    snap = Snapshot(state=D_, failed_recovery_ages_ns=(5 * MS, 50 * MS, 500 * MS))
    m = SafetyMachine(POLICY, 10**12, restore=snap)
    expect(m, state=D_, failed_recoveries_in_period=3)
    (stop,) = m.check_restart_intensity(10**12)
    assert (stop.dest, stop.code) == (S, D.RESTART_INTENSITY)
    calm = SafetyMachine(
        POLICY, 10**12, restore=Snapshot(state=D_, failed_recovery_ages_ns=(5 * MS, 20_000 * MS))
    )
    assert calm.check_restart_intensity(10**12) == ()
    expect(calm, state=D_, failed_recoveries_in_period=1)


def test_snapshot_round_trip() -> None:
    m = SafetyMachine(POLICY, 0)
    for t in (1, 2, 3):
        call(m, t, ERR)
    call(m, 3 + 100 * MS, ERR)
    snap = m.snapshot()
    assert snap.state is D_ and snap.failed_in_a_row == 1 and len(snap.failed_recovery_ages_ns) == 1
    again = SafetyMachine(POLICY, 7, restore=snap)
    expect(again, state=D_, failed_recoveries_in_a_row=1, next_cooldown_ns=200 * MS)


# --- invariants, for any sequence of events ------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["call", "tick", "reset", "fatal"]),
        st.sampled_from(
            [
                OK,
                ERR,
                SLOW,
                Outcome.TIMEOUT,
                Outcome.INVALID_OUTPUT,
                Outcome.OUT_OF_MEMORY,
                Outcome.REJECTED,
            ]
        ),
        st.integers(0, 400 * MS),
    ),
    max_size=120,
)


@pytest.mark.requirement("SR-010")
@settings(max_examples=examples(300), deadline=None)
@given(EVENTS)
def test_invariants_hold_for_any_event_sequence(events: list[tuple[str, Outcome, int]]) -> None:
    edges = {
        (src, t["dest"])
        for t in TRANSITIONS
        for src in (t["source"] if isinstance(t["source"], list) else [t["source"]])
    }
    m = SafetyMachine(POLICY, 0)
    t = 0
    for kind, outcome, dt in events:
        t += dt
        before = m.state
        if kind == "call":
            decision = m.route(t)
            seen = list(decision.transitions)
            if decision.route is not Route.FALLBACK:
                seen += m.record(outcome, t, probe=decision.route is Route.PROBE)
        elif kind == "tick":
            seen = list(m.tick(t))
        elif kind == "reset":
            seen = list(m.reset(t, "op")) if not m.statistics().primary_dead else []
        else:
            seen = list(m.record(Outcome.WORKER_LOST, t))
        state = before
        for tr in seen:
            assert tr.source is state and (tr.source, tr.dest) in edges
            if tr.source is D_:  # sticky degradation: DEGRADED is left only by recovery
                assert tr.dest in (R, S, N) and (tr.dest is not N or tr.trigger == "operator_reset")
            assert tr.at_ns == t
            state = tr.dest
        assert state is m.state
        stats = m.statistics()
        assert 0 <= stats.window_failures <= stats.window_calls <= POLICY.window
        assert 0 <= stats.window_slow <= stats.window_calls
        assert stats.failures <= stats.calls
