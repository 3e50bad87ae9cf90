"""``vigil replay``: logical supervision of a flight log by its own policy.

Theory of operation
-------------------
A supervisor records, for each session, its policy (a ``vigil.policy`` annotation) and what
it restored at start-up (``vigil.restore``); then, in the order its state machine saw them,
every counted outcome (INFERENCE records flagged COUNTED, and REJECTED ones when the policy
counts bad input) each followed by the TRANSITION records it caused; and the time-driven or
operator transitions (``cause_seq`` 0) with the machine's own time (``at_ns``).

Replay rebuilds a fresh :class:`~vigil.fsm.SafetyMachine` from the recorded policy and
snapshot and feeds it the same events at the same times. Every transition it derives must be
recorded, right after its cause, and every recorded transition must be derived: a
disagreement is a finding (DIA-3201) naming both. History the ring has evicted cannot be
replayed; replay starts at the first session whose policy and snapshot are still in the log
and says so (DIA-3202, expected).

What replay cannot check: that a time-driven transition happened as soon as it was due (the
machine evaluates time only when a call arrives, and the log does not record arrival times);
it does check that none happened before it was due.

Hostile logs: a sealed record whose body does not decode (DIA-3210), or a policy or restore
record that decodes but holds no valid policy or snapshot (DIA-3211), is a finding with its
seq, never an exception; replay of that session stops there (its machine can no longer be
trusted to match the log) and resumes at the next session that records its policy. A replay
that checked nothing -- no session, or no counted call and no transition -- says so
(DIA-3212). Either makes the verdict INCONCLUSIVE, not AGREES: only a disagreement is
DISAGREES.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vigil import _diagnostics as D
from vigil.auditlog import LogReader, LogRecord
from vigil.errors import ConfigError, InvalidArgument
from vigil.fsm import Policy, SafetyMachine, Snapshot, Transition
from vigil.schemas import CallFlags, LifecycleEvent, Outcome, RecordType, State
from vigil.supervisor._restore import carried, json_object


@dataclass(frozen=True)
class ReplayFinding:
    """One disagreement (or gap) between the log and its policy."""

    kind: str  # REPLAY_DISAGREES or REPLAY_INCOMPLETE
    code: str
    seq: int
    message: str
    expected: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


AGREES = "AGREES"
DISAGREES = "DISAGREES"
INCONCLUSIVE = "INCONCLUSIVE"

# the record types replay reads; one of these whose body does not decode stops its session
_READ = frozenset(
    {
        RecordType.INFERENCE,
        RecordType.TRANSITION,
        RecordType.REJECTED,
        RecordType.ANNOTATION,
        RecordType.LIFECYCLE,
    }
)
_UNCHECKABLE = frozenset({D.REPLAY_UNDECODABLE.code, D.REPLAY_UNREADABLE.code})


@dataclass(frozen=True)
class ReplayReport:
    """The result of :func:`replay`.

    ``verdict`` is ``DISAGREES`` when a finding is a disagreement (DIA-3201), else
    ``INCONCLUSIVE`` when a record replay needs could not be read (DIA-3210, DIA-3211) or
    nothing was checked (DIA-3212), else ``AGREES``; ``agrees`` is ``verdict == AGREES``.
    """

    path: str
    verdict: str
    agrees: bool
    sessions: int
    counted: int
    transitions: int
    first_seq: int | None
    findings: tuple[ReplayFinding, ...]

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["findings"] = [f.to_json() for f in self.findings]
        return out


class _Peekable:
    """The records with one of look-ahead; ``seen`` is called once for each record read."""

    def __init__(self, records: Iterator[LogRecord], seen: Callable[[LogRecord], None]) -> None:
        self._it = records
        self._seen = seen
        self._next: LogRecord | None = None

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> LogRecord:
        if self._next is not None:
            rec, self._next = self._next, None
            return rec
        rec = next(self._it)
        self._seen(rec)
        return rec

    def peek(self) -> LogRecord | None:
        if self._next is None:
            self._next = next(self._it, None)
            if self._next is not None:
                self._seen(self._next)
        return self._next


def _same(derived: Transition, rec: LogRecord) -> bool:
    b = rec.body
    return (derived.source, derived.dest, derived.code.number) == (
        b["from_state"],
        b["to_state"],
        b["code"],
    )


def _describe(tr: Transition | LogRecord) -> str:
    if isinstance(tr, LogRecord):
        b = tr.body
        return f"{_name(b['from_state'])}->{_name(b['to_state'])} DIA-{b['code']:04d}"
    return f"{tr.source.name}->{tr.dest.name} {tr.code.code}"


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


def replay(path: str | os.PathLike[str], max_findings: int = 1000) -> ReplayReport:
    """Re-derive every state change of a flight log from its calls and its policy.

    Never raises for what the records hold: undecodable or meaningless records are findings
    (DIA-3210, DIA-3211), and the verdict says whether anything was checked.

    Raises:
        LogError: the file cannot be read as a flight log (see :mod:`vigil.errors`).
    """
    path = os.fspath(path)
    run = _Replay(max_findings)
    with LogReader(path) as reader:
        records = _Peekable(reader.records(), run.check_time)
        for rec in records:
            if run.first_seq is None:
                run.first_seq = rec.seq
            try:
                run.step(rec, records)
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                # a decodable body whose values make no sense to the machine: the same as one
                # that does not decode, never a traceback
                run.unreadable(D.REPLAY_UNREADABLE, rec, f"{type(exc).__name__}: {exc}")
    return run.report(path)


class _Replay:
    """The running state of one replay: the session's policy and machine, and the counts."""

    def __init__(self, max_findings: int) -> None:
        self.max_findings = max_findings
        self.findings: list[ReplayFinding] = []
        self.counted = self.transitions = self.sessions = 0
        self.first_seq: int | None = None
        self.policy: Policy | None = None
        self.machine: SafetyMachine | None = None
        self.skipped_from: int | None = None
        self.halted = False  # a session stopped at an unreadable record: its rest is skipped

    def find(self, kind: D.Diagnostic, seq: int, message: str) -> None:
        if len(self.findings) < self.max_findings:
            self.findings.append(
                ReplayFinding(kind.name, kind.code, seq, message, kind is D.REPLAY_INCOMPLETE)
            )

    def check_time(self, rec: LogRecord) -> None:
        """A state change is recorded after it happened, on the same clock: a TRANSITION
        whose ``at_ns`` is later than its own record's ``mono_ns`` was not written by the
        machine it names (an edited time would otherwise pass as a due cooldown)."""
        at = rec.body.get("at_ns") if rec.type is RecordType.TRANSITION else None
        if isinstance(at, int) and at > rec.mono_ns:
            self.find(
                D.REPLAY_DISAGREES,
                rec.seq,
                f"TRANSITION record {rec.seq} says the state changed at {at} ns, after the "
                f"record itself was written ({rec.mono_ns} ns on the same clock)",
            )

    def unreadable(self, kind: D.Diagnostic, rec: LogRecord, why: str) -> None:
        """Report a record replay cannot use and stop the session it belongs to."""
        stops = (
            "; replay of this session stops here and resumes at the next session that records "
            "its policy"
        )
        self.find(kind, rec.seq, f"{rec.type_name} record {rec.seq}: {why}{stops}")
        self.policy = self.machine = None
        self.skipped_from = None
        self.halted = True

    def report(self, path: str) -> ReplayReport:
        if self.sessions == 0 or self.counted + self.transitions == 0:
            what = (
                "no session could be replayed (no policy and restore record that replay can read)"
                if self.sessions == 0
                else f"{self.sessions} session(s) hold no counted call and no transition"
            )
            self.find(D.REPLAY_NOTHING_CHECKED, self.first_seq or 0, f"{what}: nothing checked")
        codes = {f.code for f in self.findings}
        if D.REPLAY_DISAGREES.code in codes:
            verdict = DISAGREES
        elif codes & (_UNCHECKABLE | {D.REPLAY_NOTHING_CHECKED.code}):
            verdict = INCONCLUSIVE
        else:
            verdict = AGREES
        return ReplayReport(
            path=path,
            verdict=verdict,
            agrees=verdict == AGREES,
            sessions=self.sessions,
            counted=self.counted,
            transitions=self.transitions,
            first_seq=self.first_seq,
            findings=tuple(self.findings),
        )

    def step(self, rec: LogRecord, records: _Peekable) -> None:
        body = rec.body
        if rec.type in _READ and "raw" in body:
            why = body.get("undecodable", "unknown body version")
            self.unreadable(D.REPLAY_UNDECODABLE, rec, f"body does not decode ({why})")
            return
        if rec.type is RecordType.LIFECYCLE and body.get("event") is LifecycleEvent.OPENED:
            self.policy = self.machine = None  # a new session announces policy and snapshot
            self.halted = False
            return
        if rec.type is RecordType.LIFECYCLE and body.get("event") is (
            LifecycleEvent.WORKER_PROMOTED
        ):
            if self.machine is not None:  # a fresh process runs the primary (as live)
                self.machine.primary_replaced()
            return
        if rec.type is RecordType.ANNOTATION and body.get("key") == "vigil.policy":
            self.machine = None
            self.halted = False
            try:
                self.policy = _policy(body["text"])
            except (ValueError, TypeError) as exc:
                self.unreadable(D.REPLAY_UNREADABLE, rec, f"not a valid policy: {exc}")
            return
        if rec.type is RecordType.ANNOTATION and body.get("key") == "vigil.restore":
            if self.policy is None:
                return
            try:
                self.machine, derived = _restored(self.policy, rec)
            except (ValueError, TypeError) as exc:
                self.unreadable(D.REPLAY_UNREADABLE, rec, f"not a valid restore record: {exc}")
                return
            self.sessions += 1
            if self.skipped_from is not None:
                self.find(
                    D.REPLAY_INCOMPLETE,
                    self.skipped_from,
                    f"records {self.skipped_from}..{rec.seq - 1} precede the first session "
                    "whose policy is still in the log; they were not replayed",
                )
                self.skipped_from = None
            self.transitions += _expect(derived, records, 0, rec.seq, self.find)
            return
        machine = self.machine
        if machine is None:
            if (
                rec.type in (RecordType.INFERENCE, RecordType.TRANSITION, RecordType.REJECTED)
                and self.skipped_from is None
                and not self.halted
            ):
                self.skipped_from = rec.seq
            return
        if rec.type is RecordType.TRANSITION:
            self.transitions += 1
            if body["cause_seq"] != 0:
                self.find(
                    D.REPLAY_DISAGREES,
                    rec.seq,
                    f"recorded {_describe(rec)} names record {body['cause_seq']} as its "
                    "cause, which does not derive it",
                )
                return
            derived = _uncaused(machine, rec)
            if not derived or not _same(derived[0], rec):
                self.find(
                    D.REPLAY_DISAGREES,
                    rec.seq,
                    f"recorded {_describe(rec)} at {body['at_ns']} ns; the policy derives "
                    + (_describe(derived[0]) if derived else "no change")
                    + " then",
                )
                self.machine = _follow(machine, rec)
            return
        if rec.type is RecordType.INFERENCE and body["flags"] & CallFlags.COUNTED:
            outcome = body["outcome"]
            probe = bool(body["flags"] & CallFlags.PROBE)
            known = bool(body["flags"] & CallFlags.KNOWN_ANSWER)
        elif (
            rec.type is RecordType.REJECTED
            and self.policy is not None
            and self.policy.count_bad_input
        ):
            outcome, probe, known = Outcome.REJECTED, False, False
        else:
            return
        self.counted += 1
        caused: list[LogRecord] = []
        while (
            (nxt := records.peek()) is not None
            and nxt.type is RecordType.TRANSITION
            and nxt.body.get("cause_seq") == rec.seq
        ):
            caused.append(next(records))
        now = caused[0].body["at_ns"] if caused else rec.mono_ns
        if not isinstance(outcome, Outcome):
            self.find(D.REPLAY_DISAGREES, rec.seq, f"unknown outcome {outcome} counted")
            return
        derived = machine.record(outcome, now, probe=probe, known_answer=known)
        self.transitions += len(caused)
        _compare(derived, caused, rec.seq, self.find)
        if caused and [(d.source, d.dest) for d in derived] != [
            (c.body["from_state"], c.body["to_state"]) for c in caused
        ]:
            self.machine = _follow(machine, caused[-1])


def _policy(text: str) -> Policy:
    """The policy a ``vigil.policy`` record holds. Raises ValueError or TypeError."""
    data = json_object(text)
    try:
        return Policy.from_json(data)
    except (ConfigError, TypeError) as exc:
        raise ValueError(str(exc)) from None


def _restored(policy: Policy, rec: LogRecord) -> tuple[SafetyMachine, tuple[Transition, ...]]:
    """The machine a ``vigil.restore`` record starts. Raises ValueError or TypeError."""
    snap = carried(rec.body["text"])
    machine = SafetyMachine(policy, rec.mono_ns, restore=snap)
    return machine, machine.check_restart_intensity(rec.mono_ns)


def _expect(
    derived: tuple[Transition, ...], records: _Peekable, cause: int, seq: int, find: Any
) -> int:
    """Consume the recorded transitions that ``derived`` says must follow now."""
    caused: list[LogRecord] = []
    while derived and len(caused) < len(derived):
        nxt = records.peek()
        if nxt is None or nxt.type is not RecordType.TRANSITION or nxt.body["cause_seq"] != cause:
            break
        caused.append(next(records))
    _compare(derived, caused, seq, find)
    return len(caused)


def _compare(derived: tuple[Transition, ...], caused: list[LogRecord], seq: int, find: Any) -> None:
    for i in range(max(len(derived), len(caused))):
        d = derived[i] if i < len(derived) else None
        r = caused[i] if i < len(caused) else None
        if d is not None and r is not None and _same(d, r):
            continue
        if r is None:
            assert d is not None
            find(
                D.REPLAY_DISAGREES,
                seq,
                f"the policy derives {_describe(d)} after record {seq}; none was recorded",
            )
        elif d is None:
            find(
                D.REPLAY_DISAGREES,
                r.seq,
                f"recorded {_describe(r)} after record {seq}; the policy derives no change",
            )
        else:
            find(
                D.REPLAY_DISAGREES,
                r.seq,
                f"recorded {_describe(r)} after record {seq}; the policy derives {_describe(d)}",
            )


def _uncaused(machine: SafetyMachine, rec: LogRecord) -> tuple[Transition, ...]:
    """The transition a machine derives for a time-driven or operator record."""
    at = rec.body["at_ns"]
    if rec.body["code"] == D.OPERATOR_RESET.number:
        try:
            return machine.reset(at, rec.body["reason"])
        except InvalidArgument:
            return ()
    if rec.body["code"] == D.RESTART_INTENSITY.number:
        return machine.check_restart_intensity(at)
    if rec.body["code"] == D.NO_WORKER_LEFT.number:
        return machine.primary_lost(at, rec.body["reason"])
    return machine.tick(at)


def _follow(machine: SafetyMachine, rec: LogRecord) -> SafetyMachine:
    """After a disagreement, continue from the log's state (with the machine's failure
    history) so that one fault yields one finding, not a cascade."""
    dest = rec.body["to_state"]
    if not isinstance(dest, State) or machine.state is dest:
        return machine
    snap = machine.snapshot()
    return SafetyMachine(
        machine.policy,
        rec.body["at_ns"],
        restore=Snapshot(dest, snap.failed_recovery_ages_ns, snap.failed_in_a_row),
    )
