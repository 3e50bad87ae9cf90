"""What a supervisor restores from its flight log at start-up.

The state machine's state survives a restart, and so does its count of failed recoveries:
a supervisor that crashes and restarts in a loop is still seen as one incident, and ends in
SAFE_STOP like one that fails its recoveries in a single process. Reading stops early: the
newest segments, back to the policy's failed-recovery period.

What counts: a TRANSITION record's destination is the state; PROBE_FAILED, RECOVERY_TIMEOUT
and fatal trips out of RECOVERING are failed recoveries; an OPENED lifecycle record not
preceded by a CLOSED one is an unclean restart and counts too; an operator reset clears the
count; a ``vigil.restore`` annotation carries the previous session's restored count forward.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from vigil import _diagnostics as D
from vigil.auditlog import FlightRecorder, LogReader, LogRecord
from vigil.errors import LogError
from vigil.fsm import Policy, Snapshot
from vigil.schemas import LifecycleEvent, RecordType, State

_FAILED = {D.PROBE_FAILED.number, D.RECOVERY_TIMEOUT.number}


_READ = (RecordType.TRANSITION, RecordType.INFERENCE, RecordType.LIFECYCLE, RecordType.ANNOTATION)


def json_object(text: str) -> dict[str, Any]:
    """A record's JSON text as an object (a policy's, a snapshot's).

    Raises:
        ValueError: not JSON, or nested deeper than the interpreter's stack.
        TypeError: JSON, but not an object.
    """
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError("its text nests deeper than the interpreter's stack") from None
    except ValueError as exc:
        raise ValueError(f"its text is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TypeError(f"its text is a JSON {type(data).__name__}, not an object")
    return data


def carried(text: str) -> Snapshot:
    """The snapshot a ``vigil.restore`` annotation's text carries.

    Raises:
        ValueError: the text is not such a snapshot (not JSON, nested deeper than the
            interpreter's stack, an unknown state, a count or an age that is not an integer
            >= 0).
        TypeError: the text is JSON, but not an object.
    """
    data = json_object(text)
    state = data.get("state")
    ages = data.get("failed_recovery_ages_ns", [])
    in_a_row = data.get("failed_in_a_row", 0)
    if not isinstance(state, str) or state not in State.__members__:
        raise ValueError(f"state {state!r} is not a state")
    if not isinstance(ages, list) or not all(_natural(a) for a in ages):
        raise ValueError("failed_recovery_ages_ns is not a list of integers >= 0")
    if not _natural(in_a_row):
        raise ValueError(f"failed_in_a_row {in_a_row!r} is not an integer >= 0")
    return Snapshot(State[state], tuple(ages), in_a_row)


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def restore_snapshot(
    log: str | os.PathLike[str] | FlightRecorder, policy: Policy, now_real_ns: int
) -> tuple[Snapshot, dict[str, Any]]:
    """The state and failed-recovery history to resume with, and what was found.

    A log that does not exist (or cannot be read) restores nothing: a fresh NORMAL start,
    said so in the returned details.
    """
    path = log.path if isinstance(log, FlightRecorder) else os.fspath(log)
    if not os.path.exists(path):
        return Snapshot(), {"restored_from": None, "unclean_restart": False}
    horizon = now_real_ns - policy.failed_recovery_period_ns
    try:
        with LogReader(path) as reader:
            records = list(reader.tail(since_real_ns=horizon, min_segments=2, types=_READ))
    except LogError as exc:
        return Snapshot(), {"restored_from": None, "unreadable": exc.code}
    history = _History()
    for rec in records:
        if "raw" in rec.body:  # undecodable, or a body version this reader does not know:
            # what it said is not known, so it is not counted
            history.skipped.append(rec.seq)
        else:
            history.read(rec)
    # the last session of the log did not close: this start is a restart -- unless the log
    # was handed over open, when that last session is this very start (its own OPENED), and
    # the restart was unclean only if the session before that OPENED never closed
    handed_over = isinstance(log, FlightRecorder)
    unclean = history.after_unclosed if handed_over else history.open_session
    if history.open_session and not handed_over:
        history.failed.append(now_real_ns)
    found: dict[str, Any] = {
        "restored_from": path,
        "records_read": len(records),
        "unclean_restart": unclean,
    }
    if history.skipped:  # the first few, to look at with ``vigil dump``
        found["records_skipped"] = len(history.skipped)
        found["skipped_seqs"] = history.skipped[:8]
    return history.snapshot(now_real_ns, horizon), found


@dataclass
class _History:
    """What the records read so far say: the last state, the failed recoveries, the sessions."""

    state: State | None = None
    failed: list[int] = field(default_factory=list)  # CLOCK_REALTIME of each failed recovery
    in_a_row: int = 0
    open_session: bool = False
    after_unclosed: bool = False  # the last OPENED came while the session before it was open
    skipped: list[int] = field(default_factory=list)  # seqs of records that could not be read

    def read(self, rec: LogRecord) -> None:
        """Take in one record, oldest first."""
        if rec.type is RecordType.TRANSITION:
            self._transition(rec)
        elif rec.type is RecordType.INFERENCE:
            self.state = rec.body["state"]
        elif rec.type is RecordType.LIFECYCLE:
            self._lifecycle(rec)
        elif rec.body.get("key") == "vigil.restore":
            self._carried(rec)

    def _transition(self, rec: LogRecord) -> None:
        """A state change: its destination is the state; a failed recovery counts, a recovery
        ends the run of failures, an operator reset forgets them."""
        body = rec.body
        self.state = body["to_state"]
        code = body["code"]
        if code in _FAILED or (
            code == D.TRIP_FATAL.number and body["from_state"] is State.RECOVERING
        ):
            self.failed.append(rec.real_ns)
            self.in_a_row += 1
        elif code in (D.RECOVERED.number, D.OPERATOR_RESET.number):
            self.in_a_row = 0
            if code == D.OPERATOR_RESET.number:
                self.failed.clear()

    def _lifecycle(self, rec: LogRecord) -> None:
        """An OPENED while the previous session is still open is a crash, and counts."""
        event = rec.body["event"]
        if event is LifecycleEvent.OPENED:
            self.after_unclosed = self.open_session
            if self.open_session:
                self.failed.append(rec.real_ns)
            self.open_session = True
        elif event is LifecycleEvent.CLOSED:  # not model events (MODEL_LOADED...)
            self.open_session = False

    def _carried(self, rec: LogRecord) -> None:
        """A ``vigil.restore`` annotation: the previous session's restored history. One
        that does not hold a snapshot (written by hand, or damaged and re-sealed) is skipped:
        a bad record never keeps a supervisor from starting."""
        try:
            snap = carried(rec.body["text"])
        except (ValueError, TypeError):
            self.skipped.append(rec.seq)
            return
        self.failed = [rec.real_ns - age for age in snap.failed_recovery_ages_ns]
        self.in_a_row = snap.failed_in_a_row
        self.state = snap.state

    def snapshot(self, now_real_ns: int, horizon: int) -> Snapshot:
        """The snapshot to resume with: NORMAL when no state was read, the failures within
        the policy's period as ages."""
        state = self.state
        if state is None or not isinstance(state, State) or state is State.UNKNOWN:
            state = State.NORMAL
        recent = tuple(sorted(now_real_ns - t for t in self.failed if t >= horizon))
        return Snapshot(state, recent, self.in_a_row)
