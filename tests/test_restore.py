"""restore_snapshot on logs written record by record: which transitions count as failed
recoveries, what a recovery and an operator reset do to the count, a carried ``vigil.restore``
annotation, a crashed session, and logs that are missing or unreadable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import FlightRecorder, LogReader, RingConfig
from vigil.fsm import Policy, Snapshot
from vigil.schemas import RecordType, ServedBy, State
from vigil.supervisor import Supervisor
from vigil.supervisor._restore import restore_snapshot

from conftest import FakeClock

S = 1_000_000_000
RING = RingConfig(size=4096 + 8 * 16384, segment_size=16384)
POLICY = Policy(failed_recovery_period_ns=300 * S)
N, DEG, REC, STOP = State.NORMAL, State.DEGRADED, State.RECOVERING, State.SAFE_STOP


def written(path: Path, fill: Callable[[FlightRecorder, FakeClock], None]) -> FakeClock:
    """A log created, filled by ``fill`` (one second of clock between its records) and closed."""
    clock = FakeClock()
    with FlightRecorder.create(path, RING, clock=clock) as rec:
        fill(rec, clock)
    return clock


def transitions(*steps: tuple[State, State, D.Diagnostic]) -> Callable[..., None]:
    def fill(rec: FlightRecorder, clock: FakeClock) -> None:
        for a, b, code in steps:
            clock.advance(S)
            rec.record_transition(a, b, code=code.number)

    return fill


def test_failed_probes_and_fatal_trips_out_of_recovering_count(tmp_path: Path) -> None:
    clock = written(
        tmp_path / "a.vigil",
        transitions(
            (N, DEG, D.TRIP_CONSECUTIVE),  # a trip is no failed recovery
            (DEG, REC, D.RECOVERED),  # (any code: the destination is the state)
            (REC, DEG, D.PROBE_FAILED),
            (DEG, REC, D.RECOVERED),
            (REC, DEG, D.TRIP_FATAL),  # fatal out of RECOVERING: failed
            (DEG, DEG, D.TRIP_FATAL),  # fatal elsewhere: not
            (DEG, REC, D.RECOVERED),
            (REC, DEG, D.RECOVERY_TIMEOUT),
        ),
    )
    now = clock.real + S
    snap, found = restore_snapshot(tmp_path / "a.vigil", POLICY, now)
    assert snap.state is DEG
    assert len(snap.failed_recovery_ages_ns) == 3
    assert snap.failed_in_a_row == 1  # each RECOVERED ended the run before it
    assert found["restored_from"] == str(tmp_path / "a.vigil")
    assert found["unclean_restart"] is False


def test_failures_in_a_row_and_the_period(tmp_path: Path) -> None:
    clock = written(
        tmp_path / "a.vigil",
        transitions((REC, DEG, D.PROBE_FAILED), (REC, DEG, D.PROBE_FAILED)),
    )
    snap, _ = restore_snapshot(tmp_path / "a.vigil", POLICY, clock.real + S)
    assert (len(snap.failed_recovery_ages_ns), snap.failed_in_a_row) == (2, 2)
    ages = snap.failed_recovery_ages_ns
    assert list(ages) == sorted(ages) and ages[0] > S  # ages, youngest first
    # long after: the failures left the period, the run of them did not end
    later = clock.real + POLICY.failed_recovery_period_ns
    snap, _ = restore_snapshot(tmp_path / "a.vigil", POLICY, later)
    assert snap.failed_recovery_ages_ns == ()


def test_an_operator_reset_forgets_the_failures(tmp_path: Path) -> None:
    clock = written(
        tmp_path / "a.vigil",
        transitions(
            (REC, DEG, D.PROBE_FAILED),
            (DEG, STOP, D.PROBE_FAILED),
            (STOP, N, D.OPERATOR_RESET),
        ),
    )
    snap, _ = restore_snapshot(tmp_path / "a.vigil", POLICY, clock.real + S)
    assert snap == Snapshot(N, (), 0)


def test_a_carried_restore_annotation_replaces_what_came_before(tmp_path: Path) -> None:
    carried = {"state": "SAFE_STOP", "failed_recovery_ages_ns": [5 * S], "failed_in_a_row": 4}

    def fill(rec: FlightRecorder, clock: FakeClock) -> None:
        transitions((REC, DEG, D.PROBE_FAILED), (DEG, REC, D.RECOVERED))(rec, clock)
        clock.advance(S)
        rec.annotate("vigil.restore", json.dumps(carried))
        rec.annotate("vigil.other", "{not json: ignored}")

    clock = written(tmp_path / "a.vigil", fill)
    snap, _ = restore_snapshot(tmp_path / "a.vigil", POLICY, clock.real + S)
    assert snap.state is STOP
    assert snap.failed_in_a_row == 4
    assert len(snap.failed_recovery_ages_ns) == 1  # the carried one, not the probe before
    assert 6 * S <= snap.failed_recovery_ages_ns[0] < 7 * S


def test_a_session_that_never_closed_is_an_unclean_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    clock = FakeClock()
    rec = FlightRecorder.create(path, RING, clock=clock)
    rec.record_transition(N, DEG, code=D.TRIP_CONSECUTIVE.number)
    rec.flush()
    snap, found = restore_snapshot(path, POLICY, clock.real + S)  # as a new process would
    assert found["unclean_restart"] is True
    assert snap.state is DEG
    assert snap.failed_recovery_ages_ns == (0,)  # this very start counts
    # handed over open, the session is this start's own: not unclean
    snap, found = restore_snapshot(rec, POLICY, clock.real + S)
    assert found["unclean_restart"] is False
    assert snap.failed_recovery_ages_ns == ()
    rec.close()


def test_a_missing_or_unreadable_log_restores_nothing(tmp_path: Path) -> None:
    snap, found = restore_snapshot(tmp_path / "none.vigil", POLICY, 0)
    assert (snap, found) == (Snapshot(), {"restored_from": None, "unclean_restart": False})
    junk = tmp_path / "junk.vigil"
    junk.write_bytes(b"not a flight log" * 300)
    snap, found = restore_snapshot(junk, POLICY, 0)
    assert snap == Snapshot()
    assert found["restored_from"] is None
    assert isinstance(found["unreadable"], str) and found["unreadable"].startswith("DIA-")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,  # was RecursionError: no supervisor could start on this log
        "{not json",  # was JSONDecodeError
        "{}",  # was KeyError
        '"SAFE_STOP"',  # was AttributeError
        '{"state": "NOWHERE"}',
        '{"state": "NORMAL", "failed_recovery_ages_ns": ["x"]}',
        '{"state": "NORMAL", "failed_in_a_row": true}',
    ],
    ids=["deep", "json", "keys", "string", "state", "ages", "count"],
)
def test_a_restore_annotation_that_holds_no_snapshot_is_skipped(tmp_path: Path, text: str) -> None:
    """Anyone with the log open may annotate it (or a damaged record may be re-sealed): the
    next start must still come up, restore what the readable records say and name the rest."""

    def fill(rec: FlightRecorder, clock: FakeClock) -> None:
        transitions((N, DEG, D.TRIP_CONSECUTIVE))(rec, clock)
        clock.advance(S)
        rec.annotate("vigil.restore", text)

    clock = written(tmp_path / "a.vigil", fill)
    snap, found = restore_snapshot(tmp_path / "a.vigil", POLICY, clock.real + S)
    assert snap.state is DEG  # what the transition before it said
    assert found["records_skipped"] == 1 and found["skipped_seqs"] == [3]


def test_a_record_whose_body_does_not_decode_is_skipped(tmp_path: Path) -> None:
    def fill(rec: FlightRecorder, clock: FakeClock) -> None:
        transitions((N, DEG, D.TRIP_CONSECUTIVE))(rec, clock)
        rec.append(RecordType.TRANSITION, b"\x01")  # sealed, but no TRANSITION body: KeyError

    clock = written(tmp_path / "a.vigil", fill)
    snap, found = restore_snapshot(tmp_path / "a.vigil", POLICY, clock.real + S)
    assert snap.state is DEG and found["skipped_seqs"] == [3]


@pytest.mark.parametrize("rtype", [RecordType.TRANSITION, RecordType.LIFECYCLE])
def test_a_record_of_a_body_version_it_does_not_know_is_skipped(
    tmp_path: Path, rtype: RecordType
) -> None:
    """A body version this reader cannot decode reads as ``{"raw": ...}`` (no "undecodable":
    a newer writer's): restore raised KeyError on it (found by fuzz_reader)."""

    def fill(rec: FlightRecorder, clock: FakeClock) -> None:
        transitions((N, DEG, D.TRIP_CONSECUTIVE))(rec, clock)
        rec._commit(int(rtype), bytes(100), version=9)

    clock = written(tmp_path / "a.vigil", fill)
    snap, found = restore_snapshot(tmp_path / "a.vigil", POLICY, clock.real + S)
    assert snap.state is DEG and found["skipped_seqs"] == [3]


def test_a_supervisor_starts_on_a_log_with_an_unreadable_restore_record(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    with FlightRecorder.create(path, RING) as rec:
        rec.annotate("vigil.restore", "[" * 5000 + "]" * 5000)
    with Supervisor(lambda x: x, log=str(path), isolation="inline") as sup:
        assert sup.infer(torch.ones(1)).served_by is ServedBy.PRIMARY
    with LogReader(path) as reader:
        notes = [r.body["text"] for r in reader.records() if r.body.get("key") == "vigil.restore"]
    assert json.loads(notes[-1])["skipped_seqs"] == [2]
