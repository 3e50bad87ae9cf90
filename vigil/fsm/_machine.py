"""The safety state machine: pure, clock-free, and audited transition by transition.

Theory of operation
-------------------
Four states. NORMAL: the primary answers. DEGRADED: the fallback answers while the primary
cools down. RECOVERING: the primary is probed -- its answers are served (``live``) or only
checked (``shadow``, ``known_answer``) -- until enough probes in a row are good. SAFE_STOP:
recovery kept failing; terminal, only an operator reset leaves it.

The machine owns no thread, clock, file or tensor. Every event carries its own time
(``now_ns``, a monotonic clock of the caller's choosing), so tests drive it with a fake clock
and ``vigil replay`` re-runs it over the times recorded in a flight log. Time-driven changes
(a cooldown elapsed, recovery took too long) take effect at the next event: the next call's
:meth:`route`, or an explicit :meth:`tick`.

The transition table is data (:data:`TRANSITIONS`), run by the ``transitions`` library with
no automatic transitions: nothing outside this module changes the state, and an event that
is not allowed in a state raises and changes nothing. A trigger costs ~8 µs, so it fires
only when the state must change; counting calls, failures and slow calls is plain Python.

Invariants: the state changes only through the table; DEGRADED is left only through
RECOVERING (or an operator reset); after a process-fatal outcome the primary is never probed
again until :meth:`primary_replaced` says a fresh process runs it; every change is returned to
the caller as a :class:`Transition` so that it can be recorded.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from transitions import Machine, MachineError

from vigil import _diagnostics as D
from vigil.errors import InvalidArgument
from vigil.fsm._policy import Policy
from vigil.schemas import Outcome, State

NORMAL, DEGRADED, RECOVERING, SAFE_STOP = (
    State.NORMAL,
    State.DEGRADED,
    State.RECOVERING,
    State.SAFE_STOP,
)
ACTIVE = [NORMAL, DEGRADED, RECOVERING]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "trip", "source": NORMAL, "dest": DEGRADED},
    {"trigger": "fatal", "source": [NORMAL, RECOVERING], "dest": DEGRADED},
    {"trigger": "cooled_down", "source": DEGRADED, "dest": RECOVERING},
    {"trigger": "recovered", "source": RECOVERING, "dest": NORMAL},
    {"trigger": "probe_failed", "source": RECOVERING, "dest": DEGRADED},
    {"trigger": "recovery_timed_out", "source": RECOVERING, "dest": DEGRADED},
    {"trigger": "give_up", "source": ACTIVE, "dest": SAFE_STOP},
    {"trigger": "operator_reset", "source": [*ACTIVE, SAFE_STOP], "dest": NORMAL},
]
"""Every allowed change of state. Read top to bottom; nothing else changes the state."""

FAILURES = frozenset(
    {
        Outcome.TIMEOUT,
        Outcome.ERROR,
        Outcome.INVALID_OUTPUT,
        Outcome.OUT_OF_MEMORY,
    }
)
FATAL = frozenset({Outcome.WORKER_LOST, Outcome.DEVICE_FATAL})
_FAIL, _SLOW = 1, 2


class Route(enum.Enum):
    """Who answers the next call."""

    PRIMARY = "primary"
    FALLBACK = "fallback"
    PROBE = "probe"  # RECOVERING: see Policy.probe_mode for who answers


class Transition(NamedTuple):
    """One change of state, to be recorded as a TRANSITION record."""

    source: State
    dest: State
    trigger: str
    code: D.Diagnostic
    reason: str
    at_ns: int


class Decision(NamedTuple):
    """What :meth:`SafetyMachine.route` decided for one call.

    ``known_answer_probe``: run the known-answer probe now (its result goes to
    :meth:`SafetyMachine.record` with ``known_answer=True``).
    """

    route: Route
    transitions: tuple[Transition, ...]
    known_answer_probe: bool


_PRIMARY = Decision(Route.PRIMARY, (), False)


@dataclass(frozen=True)
class MachineStatistics:
    """A snapshot of the machine (see :meth:`SafetyMachine.statistics`)."""

    state: State
    since_ns: int
    calls: int
    failures: int
    consecutive_failures: int
    window_calls: int
    window_failures: int
    window_slow: int
    good_probes: int
    failed_recoveries_in_period: int
    failed_recoveries_in_a_row: int
    next_cooldown_ns: int
    primary_dead: bool
    transitions: int


@dataclass(frozen=True)
class Snapshot:
    """What a supervisor restores from its flight log at start-up.

    ``failed_recovery_ages_ns``: how long ago each recent failed recovery (or unclean
    restart) happened, so a crash loop is still seen as one.
    """

    state: State = NORMAL
    failed_recovery_ages_ns: tuple[int, ...] = ()
    failed_in_a_row: int = 0


class SafetyMachine:
    """The state machine. Not thread-safe: its owner serialises calls (never around a model
    call, only around these few microseconds of bookkeeping)."""

    state: State  # maintained by the transitions library ...
    trigger: Callable[..., bool]  # ... which also adds this method

    def __init__(self, policy: Policy, now_ns: int, restore: Snapshot | None = None) -> None:
        self.policy = policy
        snap = restore or Snapshot()
        initial = snap.state if snap.state in (*ACTIVE, SAFE_STOP) else NORMAL
        self._machine = Machine(
            model=self,
            states=[NORMAL, DEGRADED, RECOVERING, SAFE_STOP],
            transitions=TRANSITIONS,
            initial=initial,
            auto_transitions=False,
            send_event=True,
            after_state_change="_after_change",
        )
        self._since = now_ns
        self._window: collections.deque[int] = collections.deque()
        self._window_fails = self._window_slow = 0
        self._consecutive = 0
        self._calls = self._failures = 0
        self._good_probes = 0
        self._failed_recoveries = collections.deque(
            now_ns - a for a in sorted(snap.failed_recovery_ages_ns, reverse=True)
        )
        self._failed_in_a_row = snap.failed_in_a_row
        self._primary_dead = False
        self._last_known_answer = now_ns
        self._known_answer_due = False
        self._ka_interval = policy.probe_interval_ns
        self._window_size = policy.window
        self._transitions = 0
        self._pending: list[Transition] = []

    # --- events ---------------------------------------------------------------------------

    def route(self, now_ns: int) -> Decision:
        """Decide who answers a call arriving at ``now_ns`` (time-driven changes first)."""
        if self.state is NORMAL and (
            self._ka_interval is None
            or self._known_answer_due
            or now_ns - self._last_known_answer < self._ka_interval
        ):
            return _PRIMARY  # the common case: nothing to allocate, nothing to decide
        self._pending = []
        self._advance(now_ns)
        state = self.state
        if state is NORMAL:
            route = Route.PRIMARY
            interval = self._ka_interval
            ka = interval is not None and now_ns - self._last_known_answer >= interval
        elif state is RECOVERING:
            route = Route.PROBE
            ka = self.policy.probe_mode == "known_answer"
        else:
            route, ka = Route.FALLBACK, False
        if ka and self._known_answer_due:
            ka = False  # one known-answer probe at a time
        if ka:
            self._known_answer_due = True
            self._last_known_answer = now_ns
        return Decision(route, tuple(self._pending), ka)

    def record(
        self,
        outcome: Outcome,
        now_ns: int,
        *,
        probe: bool = False,
        known_answer: bool = False,
        code: D.Diagnostic | None = None,
        reason: str = "",
    ) -> tuple[Transition, ...]:
        """Count the outcome of a call in which the primary ran; return the transitions.

        Args:
            outcome: how the primary's part of the call ended. UNAVAILABLE is ignored, and so
                is REJECTED (bad input) unless the policy counts bad input as a failure.
            probe: the call was a recovery probe (its route was PROBE).
            known_answer: it was a known-answer probe (not a user call).
            code, reason: the outcome's diagnostic, carried into a transition it causes.
        """
        if outcome is Outcome.OK and self.state is NORMAL and not known_answer:
            self._calls += 1  # the common case, counted inline
            self._consecutive = 0
            window = self._window
            if len(window) == self._window_size:
                old = window.popleft()
                self._window_fails -= old & _FAIL
                self._window_slow -= (old & _SLOW) >> 1
            window.append(0)
            return ()
        self._pending = []
        if known_answer:
            self._known_answer_due = False
        if outcome is Outcome.UNAVAILABLE or (
            outcome is Outcome.REJECTED and not self.policy.count_bad_input
        ):
            return ()
        state = self.state
        bad = (
            outcome in FAILURES
            or outcome is Outcome.REJECTED
            or (outcome is Outcome.SLOW and (probe or known_answer) and state is RECOVERING)
        )
        why = reason or f"{outcome.name.lower()}"
        if outcome in FATAL:
            self._calls += 1
            self._failures += 1
            if state in (NORMAL, RECOVERING):
                self._primary_dead = outcome is Outcome.DEVICE_FATAL
                self._fire(
                    "fatal",
                    D.TRIP_FATAL,
                    f"{why}: {code.name if code else outcome.name}",
                    now_ns,
                )
                if state is RECOVERING:
                    self._failed_recovery(now_ns)
            return tuple(self._pending)
        if state is NORMAL and known_answer and bad and self.policy.known_answer_trips:
            self._calls += 1
            self._failures += 1
            self._consecutive += 1
            self._fire("trip", D.TRIP_KNOWN_ANSWER, f"known-answer probe failed: {why}", now_ns)
        elif state is NORMAL:
            self._count(outcome, now_ns, bad, why)
        elif state is RECOVERING and (probe or known_answer):
            self._calls += 1
            if bad:
                self._failures += 1
                self._fire("probe_failed", D.PROBE_FAILED, f"probe failed: {why}", now_ns)
                self._failed_recovery(now_ns)
            else:
                self._good_probes += 1
                if self._good_probes >= self.policy.probes_required:
                    self._fire(
                        "recovered",
                        D.RECOVERED,
                        f"{self._good_probes} consecutive good probes",
                        now_ns,
                    )
        return tuple(self._pending)

    def tick(self, now_ns: int) -> tuple[Transition, ...]:
        """Apply time-driven changes without a call (cooldown elapsed, recovery too long)."""
        self._pending = []
        self._advance(now_ns)
        return tuple(self._pending)

    def reset(self, now_ns: int, reason: str) -> tuple[Transition, ...]:
        """Operator reset: back to NORMAL with every counter cleared.

        Raises:
            InvalidArgument: the primary hit a process-fatal error in this process; only a
                fresh process can run it again (see :meth:`primary_replaced`).
        """
        if self._primary_dead:
            raise InvalidArgument(
                "the primary's process is lost (a process-fatal device error, or no worker "
                "left); a reset cannot bring it back: wait for a fresh worker, or restart the "
                "primary in a fresh process"
            )
        self._pending = []
        self._failed_recoveries.clear()
        self._failed_in_a_row = 0
        self._fire("operator_reset", D.OPERATOR_RESET, reason or "operator reset", now_ns)
        return tuple(self._pending)

    def primary_replaced(self) -> None:
        """A fresh process now runs the primary: it may be probed again after the cooldown."""
        self._primary_dead = False

    def primary_lost(self, now_ns: int, reason: str) -> tuple[Transition, ...]:
        """No process is left to run the primary (every worker lost, outside any call): trip
        to DEGRADED (DIA-7011; from RECOVERING it is a failed recovery) and probe nothing
        until :meth:`primary_replaced` says a fresh process runs it."""
        self._pending = []
        self._primary_dead = True
        state = self.state
        if state in (NORMAL, RECOVERING):
            self._fire("fatal", D.NO_WORKER_LEFT, reason or "every worker was lost", now_ns)
            if state is RECOVERING:
                self._failed_recovery(now_ns)
        return tuple(self._pending)

    # --- internals ------------------------------------------------------------------------

    def _count(self, outcome: Outcome, now_ns: int, bad: bool, why: str) -> None:
        p = self.policy
        self._calls += 1
        slow = outcome is Outcome.SLOW
        flags = (_FAIL if bad else 0) | (_SLOW if slow else 0)
        window = self._window
        if len(window) == self._window_size:
            old = window.popleft()
            self._window_fails -= old & _FAIL
            self._window_slow -= (old & _SLOW) >> 1
        window.append(flags)
        self._window_fails += flags & _FAIL
        self._window_slow += slow
        if bad:
            self._failures += 1
            self._consecutive += 1
        else:
            self._consecutive = 0
        n = len(window)
        if self._consecutive >= p.consecutive_failures:
            self._fire(
                "trip",
                D.TRIP_CONSECUTIVE,
                f"{self._consecutive} consecutive failures (last: {why})",
                now_ns,
            )
        elif n >= p.min_calls and self._window_fails >= p.failure_rate * n:
            self._fire(
                "trip",
                D.TRIP_FAILURE_RATE,
                f"{self._window_fails} failures in the last {n} calls",
                now_ns,
            )
        elif (
            p.slow_call_ns is not None and n >= p.min_calls and self._window_slow >= p.slow_rate * n
        ):
            self._fire(
                "trip",
                D.TRIP_SLOW_RATE,
                f"{self._window_slow} slow calls in the last {n} calls",
                now_ns,
            )

    def _advance(self, now_ns: int) -> None:
        state = self.state
        if state is DEGRADED and not self._primary_dead:
            cooldown = self.policy.cooldown_after(self._failed_in_a_row)
            if now_ns - self._since >= cooldown:
                self._fire(
                    "cooled_down",
                    D.COOLDOWN_ELAPSED,
                    f"cooldown of {cooldown / 1e9:.3f} s elapsed",
                    now_ns,
                )
        elif state is RECOVERING and now_ns - self._since >= self.policy.max_recovering_ns:
            self._fire(
                "recovery_timed_out",
                D.RECOVERY_TIMEOUT,
                f"still recovering after {self.policy.max_recovering_ns / 1e9:.3f} s",
                now_ns,
            )
            self._failed_recovery(now_ns)

    def _failed_recovery(self, now_ns: int) -> None:
        """Count a failed recovery; more than the policy allows in its period: SAFE_STOP."""
        self._failed_in_a_row += 1
        self._failed_recoveries.append(now_ns)
        self._give_up_if_too_many(
            now_ns,
            f"failed recoveries within {self.policy.failed_recovery_period_ns / 1e9:.0f} s "
            f"(at most {self.policy.max_failed_recoveries} allowed)",
        )

    def check_restart_intensity(self, now_ns: int) -> tuple[Transition, ...]:
        """After a restore: SAFE_STOP at once when restored failures already exceed the
        policy (a crash loop is one incident, not a fresh start each time)."""
        self._pending = []
        self._give_up_if_too_many(
            now_ns,
            "failed recoveries or unclean restarts within the policy's period, counted "
            "from the flight log at start-up",
        )
        return tuple(self._pending)

    def _give_up_if_too_many(self, now_ns: int, what: str) -> None:
        """Forget failed recoveries older than the policy's period; SAFE_STOP when more
        than it allows remain."""
        recent = self._failed_recoveries
        horizon = now_ns - self.policy.failed_recovery_period_ns
        while recent and recent[0] < horizon:
            recent.popleft()
        if len(recent) > self.policy.max_failed_recoveries and self.state is not SAFE_STOP:
            self._fire("give_up", D.RESTART_INTENSITY, f"{len(recent)} {what}", now_ns)

    def _fire(self, trigger: str, code: D.Diagnostic, reason: str, now_ns: int) -> None:
        try:
            self.trigger(trigger, code=code, reason=reason, now_ns=now_ns)
        except MachineError as exc:  # a bug in this module, never caller input
            raise AssertionError(f"illegal {trigger!r} in {self.state.name}: {exc}") from exc

    def _after_change(self, event: Any) -> None:
        kw = event.kwargs
        self._pending.append(
            Transition(
                event.transition.source
                if isinstance(event.transition.source, State)
                else State[event.transition.source],
                self.state,
                event.event.name,
                kw["code"],
                kw["reason"],
                kw["now_ns"],
            )
        )
        self._transitions += 1
        self._since = kw["now_ns"]
        state = self.state
        if state is NORMAL:
            self._window.clear()
            self._window_fails = self._window_slow = self._consecutive = 0
            self._failed_in_a_row = 0
        elif state is RECOVERING:
            self._good_probes = 0

    # --- reading --------------------------------------------------------------------------

    def statistics(self) -> MachineStatistics:
        """A frozen snapshot of the counters."""
        return MachineStatistics(
            state=self.state,
            since_ns=self._since,
            calls=self._calls,
            failures=self._failures,
            consecutive_failures=self._consecutive,
            window_calls=len(self._window),
            window_failures=self._window_fails,
            window_slow=self._window_slow,
            good_probes=self._good_probes,
            failed_recoveries_in_period=len(self._failed_recoveries),
            failed_recoveries_in_a_row=self._failed_in_a_row,
            next_cooldown_ns=self.policy.cooldown_after(self._failed_in_a_row),
            primary_dead=self._primary_dead,
            transitions=self._transitions,
        )

    def snapshot(self) -> Snapshot:
        """What a restarted supervisor would need to carry on (see :class:`Snapshot`)."""
        last = self._since
        return Snapshot(
            state=self.state,
            failed_recovery_ages_ns=tuple(last - t for t in self._failed_recoveries),
            failed_in_a_row=self._failed_in_a_row,
        )
