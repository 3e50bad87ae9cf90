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
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vigil import _diagnostics as D
from vigil.auditlog import LogReader, LogRecord
from vigil.errors import ConfigError, InvalidArgument
from vigil.fsm import Policy, SafetyMachine, Snapshot, Transition
from vigil.schemas import CallFlags, LifecycleEvent, Outcome, RecordType, State


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


@dataclass(frozen=True)
class ReplayReport:
    """The result of :func:`replay`. ``agrees`` is True when no finding is a disagreement."""

    path: str
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
    def __init__(self, records: Iterator[LogRecord]) -> None:
        self._it = records
        self._next: LogRecord | None = None

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> LogRecord:
        if self._next is not None:
            rec, self._next = self._next, None
            return rec
        return next(self._it)

    def peek(self) -> LogRecord | None:
        if self._next is None:
            self._next = next(self._it, None)
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

    Raises:
        LogError: the file cannot be read as a flight log (see :mod:`vigil.errors`).
    """
    path = os.fspath(path)
    findings: list[ReplayFinding] = []
    counted = transitions = sessions = 0
    first_seq: int | None = None

    def find(kind: D.Diagnostic, seq: int, message: str) -> None:
        if len(findings) < max_findings:
            findings.append(
                ReplayFinding(kind.name, kind.code, seq, message, kind is D.REPLAY_INCOMPLETE)
            )

    policy: Policy | None = None
    machine: SafetyMachine | None = None
    skipped_from: int | None = None
    with LogReader(path) as reader:
        records = _Peekable(reader.records())
        for rec in records:
            if first_seq is None:
                first_seq = rec.seq
            body = rec.body
            if rec.type is RecordType.LIFECYCLE and body.get("event") is LifecycleEvent.OPENED:
                policy = machine = None  # a new session announces its policy and snapshot
                continue
            if rec.type is RecordType.LIFECYCLE and body.get("event") is (
                LifecycleEvent.WORKER_PROMOTED
            ):
                if machine is not None:  # a fresh process runs the primary (as live)
                    machine.primary_replaced()
                continue
            if rec.type is RecordType.ANNOTATION and body.get("key") == "vigil.policy":
                try:
                    policy = Policy.from_json(json.loads(body["text"]))
                except (ValueError, ConfigError) as exc:
                    find(D.REPLAY_DISAGREES, rec.seq, f"unreadable policy record: {exc}")
                    policy = None
                continue
            if rec.type is RecordType.ANNOTATION and body.get("key") == "vigil.restore":
                if policy is None:
                    continue
                machine, derived = _restored(policy, rec)
                sessions += 1
                if skipped_from is not None:
                    find(
                        D.REPLAY_INCOMPLETE,
                        skipped_from,
                        f"records {skipped_from}..{rec.seq - 1} precede the first session "
                        "whose policy is still in the log; they were not replayed",
                    )
                    skipped_from = None
                transitions += _expect(derived, records, 0, rec.seq, find)
                continue
            if machine is None:
                if (
                    rec.type in (RecordType.INFERENCE, RecordType.TRANSITION, RecordType.REJECTED)
                    and skipped_from is None
                ):
                    skipped_from = rec.seq
                continue
            if rec.type is RecordType.TRANSITION:
                transitions += 1
                if body["cause_seq"] != 0:
                    find(
                        D.REPLAY_DISAGREES,
                        rec.seq,
                        f"recorded {_describe(rec)} names record {body['cause_seq']} as its "
                        "cause, which does not derive it",
                    )
                    continue
                derived = _uncaused(machine, rec)
                if not derived or not _same(derived[0], rec):
                    find(
                        D.REPLAY_DISAGREES,
                        rec.seq,
                        f"recorded {_describe(rec)} at {body['at_ns']} ns; the policy derives "
                        + (_describe(derived[0]) if derived else "no change")
                        + " then",
                    )
                    machine = _follow(machine, rec)
                continue
            if rec.type is RecordType.INFERENCE and body["flags"] & CallFlags.COUNTED:
                outcome = body["outcome"]
                probe = bool(body["flags"] & CallFlags.PROBE)
                known = bool(body["flags"] & CallFlags.KNOWN_ANSWER)
            elif rec.type is RecordType.REJECTED and policy is not None and policy.count_bad_input:
                outcome, probe, known = Outcome.REJECTED, False, False
            else:
                continue
            counted += 1
            caused: list[LogRecord] = []
            while (
                (nxt := records.peek()) is not None
                and nxt.type is RecordType.TRANSITION
                and nxt.body["cause_seq"] == rec.seq
            ):
                caused.append(next(records))
            now = caused[0].body["at_ns"] if caused else rec.mono_ns
            if not isinstance(outcome, Outcome):
                find(D.REPLAY_DISAGREES, rec.seq, f"unknown outcome {outcome} counted")
                continue
            derived = machine.record(outcome, now, probe=probe, known_answer=known)
            transitions += len(caused)
            _compare(derived, caused, rec.seq, find)
            if caused and [(d.source, d.dest) for d in derived] != [
                (c.body["from_state"], c.body["to_state"]) for c in caused
            ]:
                machine = _follow(machine, caused[-1])
    return ReplayReport(
        path=path,
        agrees=not any(not f.expected for f in findings),
        sessions=sessions,
        counted=counted,
        transitions=transitions,
        first_seq=first_seq,
        findings=tuple(findings),
    )


def _restored(policy: Policy, rec: LogRecord) -> tuple[SafetyMachine, tuple[Transition, ...]]:
    carried = json.loads(rec.body["text"])
    snap = Snapshot(
        state=State[carried["state"]],
        failed_recovery_ages_ns=tuple(carried.get("failed_recovery_ages_ns", ())),
        failed_in_a_row=carried.get("failed_in_a_row", 0),
    )
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
