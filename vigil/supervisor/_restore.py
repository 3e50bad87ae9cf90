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
from typing import Any

from vigil import _diagnostics as D
from vigil.auditlog import FlightRecorder, LogReader
from vigil.errors import LogError
from vigil.fsm import Policy, Snapshot
from vigil.schemas import LifecycleEvent, RecordType, State

_FAILED = {D.PROBE_FAILED.number, D.RECOVERY_TIMEOUT.number}


# Past ruff's size limits: to split (issue 14).
def restore_snapshot(  # noqa: PLR0912
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
            records = list(
                reader.tail(
                    since_real_ns=horizon,
                    min_segments=2,
                    types=(
                        RecordType.TRANSITION,
                        RecordType.INFERENCE,
                        RecordType.LIFECYCLE,
                        RecordType.ANNOTATION,
                    ),
                )
            )
    except LogError as exc:
        return Snapshot(), {"restored_from": None, "unreadable": exc.code}
    state: State | None = None
    failed: list[int] = []  # CLOCK_REALTIME of each failed recovery or unclean restart
    open_session = False
    after_unclosed = False  # the last OPENED came while the session before it was open
    in_a_row = 0
    for rec in records:
        body = rec.body
        if rec.type is RecordType.TRANSITION:
            state = body["to_state"]
            code = body["code"]
            if code in _FAILED or (
                code == D.TRIP_FATAL.number and body["from_state"] is State.RECOVERING
            ):
                failed.append(rec.real_ns)
                in_a_row += 1
            elif code in (D.RECOVERED.number, D.OPERATOR_RESET.number):
                in_a_row = 0
                if code == D.OPERATOR_RESET.number:
                    failed.clear()
        elif rec.type is RecordType.INFERENCE:
            state = body["state"]
        elif rec.type is RecordType.LIFECYCLE:
            if body["event"] is LifecycleEvent.OPENED:
                after_unclosed = open_session
                if open_session:  # the previous session never closed: a crash
                    failed.append(rec.real_ns)
                open_session = True
            elif body["event"] is LifecycleEvent.CLOSED:  # not model events (MODEL_LOADED...)
                open_session = False
        elif body.get("key") == "vigil.restore":
            carried = json.loads(body["text"])
            failed = [rec.real_ns - age for age in carried.get("failed_recovery_ages_ns", [])]
            in_a_row = carried.get("failed_in_a_row", 0)
            state = State[carried["state"]]
    # the last session of the log did not close: this start is a restart -- unless the log
    # was handed over open, when that last session is this very start (its own OPENED), and
    # the restart was unclean only if the session before that OPENED never closed
    handed_over = isinstance(log, FlightRecorder)
    unclean = after_unclosed if handed_over else open_session
    if open_session and not handed_over:
        failed.append(now_real_ns)
    if state is None or not isinstance(state, State) or state is State.UNKNOWN:
        state = State.NORMAL
    recent = tuple(sorted(now_real_ns - t for t in failed if t >= horizon))
    found = {"restored_from": path, "records_read": len(records), "unclean_restart": unclean}
    return Snapshot(state, recent, in_a_row), found
