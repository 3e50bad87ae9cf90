"""``vigil replay`` on hostile logs: correctly sealed records whose bodies do not decode, or
decode to nothing the state machine can use, are findings with their seq and a code
(DIA-3210, DIA-3211), never a traceback; a replay that checked nothing never agrees
(DIA-3212). Every log here is written with the real FlightRecorder API, so it is sealed and
verifies INTACT: only replay can object to it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import FlightRecorder, LogReader, RingConfig
from vigil.cli import EXIT_INCONCLUSIVE, main
from vigil.fsm import Policy
from vigil.schemas import CallFlags, Outcome, RecordType, ServedBy, State
from vigil.schemas import _records as R
from vigil.supervisor import Constant, Supervisor, replay
from vigil.testing._faults import Fault, FaultPlan, FaultyModel

from conftest import FakeClock

MS = 1_000_000
RING = RingConfig(size=4096 + 16 * 16384, segment_size=16384)
POLICY = Policy(consecutive_failures=2, window=10, min_calls=5, cooldown_ns=5 * MS)
X = torch.ones(1, 4)
RESTORE = json.dumps({"state": "NORMAL", "failed_recovery_ages_ns": [], "failed_in_a_row": 0})


def annotation(key: str, text: bytes) -> bytes:
    """An ANNOTATION body whose text is ``text`` as it is, valid UTF-8 or not."""
    good = R.BODIES[RecordType.ANNOTATION].pack({"key": key, "text": "x" * len(text)})
    return good[: len(good) - len(text)] + text


def supervised(path: Path, inject: Callable[[FlightRecorder, int], None], calls: int = 8) -> None:
    """A real supervised session (two faults: it trips to DEGRADED); ``inject(rec, i)`` runs
    before call ``i`` and may append records of its own."""
    clock = FakeClock()
    plan = FaultPlan(0, clock=clock.monotonic_ns).at_calls([2, 3], Fault.EXCEPTION)
    with (
        FlightRecorder.create(path, RING, clock=clock) as rec,
        Supervisor(
            FaultyModel(lambda x: x * 2, plan),
            log=rec,
            clock=clock,
            policy=POLICY,
            fallback=Constant(torch.zeros(1, 4)),
            isolation="inline",
        ) as sup,
    ):
        for i in range(calls):
            inject(rec, i)
            clock.advance(MS)
            sup.infer(X)


def handmade(path: Path, policy: bytes, restore: bytes = RESTORE.encode()) -> int:
    """A session written record by record: its policy and restore annotations as given, then
    counted calls. Returns the policy record's seq."""
    with FlightRecorder.create(path, RING, clock=FakeClock()) as rec:
        seq = rec.append(RecordType.ANNOTATION, annotation("vigil.policy", policy))
        rec.append(RecordType.ANNOTATION, annotation("vigil.restore", restore))
        for _ in range(5):
            rec.record_inference(
                request_id=bytes(16),
                model_digest=bytes(32),
                input_digest=bytes(32),
                output_digest=bytes(32),
                state=State.NORMAL,
                served_by=ServedBy.PRIMARY,
                outcome=Outcome.OK,
                latency_ns=MS,
                deadline_ns=50 * MS,
                flags=CallFlags.COUNTED,
            )
    return seq


def check_inconclusive(
    path: Path, code: D.Diagnostic, seq: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with LogReader(path) as r:
        assert r.verify().intact  # sealed and chained: nothing for verify to object to
    capsys.readouterr()
    assert main(["replay", str(path)]) == EXIT_INCONCLUSIVE == 3
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" in out and "AGREES" not in out and "Traceback" not in out
    assert f"[{code.code} {code.name} FAILURE] seq={seq}:" in out, out
    assert main(["replay", "--json", str(path)]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "INCONCLUSIVE" and report["agrees"] is False
    assert [f["seq"] for f in report["findings"] if f["code"] == code.code] == [seq]


SHORT = b"\x01\x02\x03"


@pytest.mark.parametrize(
    ("rtype", "body"),
    [
        (RecordType.TRANSITION, SHORT),  # was KeyError: 'cause_seq'
        (RecordType.INFERENCE, SHORT),  # was KeyError: 'flags'
        (RecordType.REJECTED, SHORT),
        (RecordType.LIFECYCLE, SHORT),
        (RecordType.ANNOTATION, annotation("vigil.note", b"\xff\xfe")),  # bad UTF-8
    ],
    ids=["transition", "inference", "rejected", "lifecycle", "annotation-utf8"],
)
def test_an_undecodable_body_inside_a_session_is_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rtype: RecordType, body: bytes
) -> None:
    path = tmp_path / "log.vigil"
    seqs: list[int] = []

    def inject(rec: FlightRecorder, i: int) -> None:
        if i == 1:
            seqs.append(rec.append(rtype, body))

    supervised(path, inject)
    check_inconclusive(path, D.REPLAY_UNDECODABLE, seqs[0], capsys)
    rep = replay(path)
    assert rep.sessions == 1 and rep.counted == 1  # the call before it was checked


def test_an_undecodable_caused_transition_is_a_finding_not_a_keyerror(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay peeks at the records after a counted call for the transitions it caused."""
    path = tmp_path / "log.vigil"
    seqs: list[int] = []
    bad_reason = (
        R.BODIES[RecordType.TRANSITION].pack(
            {"from_state": 1, "to_state": 2, "code": 0, "cause_seq": 0, "at_ns": 0, "reason": "ab"}
        )[:-2]
        + b"\xc3\x28"
    )

    def inject(rec: FlightRecorder, i: int) -> None:
        if i == 2:
            seqs.append(rec.append(RecordType.TRANSITION, bad_reason))

    supervised(path, inject)
    check_inconclusive(path, D.REPLAY_UNDECODABLE, seqs[0], capsys)


@pytest.mark.parametrize(
    ("policy", "code"),
    [
        (b"\xff\xfe{}", D.REPLAY_UNDECODABLE),  # was: AGREES, 0 sessions, exit 0
        (b"{not json", D.REPLAY_UNREADABLE),  # was: DISAGREES, exit 1
        (b"[1, 2]", D.REPLAY_UNREADABLE),  # was AttributeError
        (b'"policy"', D.REPLAY_UNREADABLE),
        (b'{"policy": 1, "window": "ten"}', D.REPLAY_UNREADABLE),  # was TypeError
        (b'{"policy": 1, "window": null}', D.REPLAY_UNREADABLE),
        (b'{"policy": 2}', D.REPLAY_UNREADABLE),
        (b"[" * 5000 + b"]" * 5000, D.REPLAY_UNREADABLE),  # was RecursionError
    ],
    ids=["utf8", "json", "list", "string", "type", "null", "version", "deep"],
)
def test_an_unusable_policy_record_is_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: bytes, code: D.Diagnostic
) -> None:
    path = tmp_path / "log.vigil"
    seq = handmade(path, policy)
    check_inconclusive(path, code, seq, capsys)
    rep = replay(path)
    assert rep.sessions == 0 and rep.verdict == "INCONCLUSIVE" and not rep.agrees
    assert D.REPLAY_NOTHING_CHECKED.code in {f.code for f in rep.findings}
    assert D.REPLAY_DISAGREES.code not in {f.code for f in rep.findings}


@pytest.mark.parametrize(
    "restore",
    [
        b"{not json",  # was JSONDecodeError
        b"[]",  # was TypeError
        b'{"state": 5}',  # was KeyError
        b'{"state": "NOWHERE"}',
        b'{"state": "NORMAL", "failed_recovery_ages_ns": 3}',
        b'{"state": "NORMAL", "failed_recovery_ages_ns": ["x"]}',
        b'{"state": "NORMAL", "failed_in_a_row": -1}',
        b"\xff",
        b'{"a": ' * 1500 + b"1" + b"}" * 1500,  # was RecursionError
    ],
)
def test_an_unusable_restore_record_is_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore: bytes
) -> None:
    path = tmp_path / "log.vigil"
    seq = handmade(path, POLICY.canonical().encode(), restore) + 1
    code = D.REPLAY_UNDECODABLE if restore == b"\xff" else D.REPLAY_UNREADABLE
    check_inconclusive(path, code, seq, capsys)


def test_the_handmade_session_replays_when_it_is_well_formed(tmp_path: Path) -> None:
    """The control for the two tests above: the same log with valid records agrees."""
    path = tmp_path / "log.vigil"
    handmade(path, POLICY.canonical().encode())
    rep = replay(path)
    assert rep.verdict == "AGREES" and rep.sessions == 1 and rep.counted == 5, rep.findings
    assert main(["replay", str(path)]) == 0


def test_a_replay_that_checked_nothing_does_not_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.vigil"
    with FlightRecorder.create(path, RING, clock=FakeClock()) as rec:
        rec.annotate("note", "no supervisor ever wrote here")
    capsys.readouterr()
    assert main(["replay", str(path)]) == 3
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" in out and "DIA-3212" in out and "0 session(s)" in out
    quiet = tmp_path / "quiet.vigil"
    supervised(quiet, lambda rec, i: None, calls=0)  # a session with no call
    rep = replay(quiet)
    assert rep.sessions == 1 and rep.verdict == "INCONCLUSIVE"
    assert [f.code for f in rep.findings] == ["DIA-3212"]


def test_a_disagreement_outranks_an_undecodable_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edited transition in one session and garbage in a later one: DISAGREES, exit 1."""
    path = tmp_path / "log.vigil"

    def inject(rec: FlightRecorder, i: int) -> None:
        if i == 1:  # a transition no call derives
            rec.record_transition(State.NORMAL, State.DEGRADED, code=4101, at_ns=1)
        if i == 6:
            rec.append(RecordType.INFERENCE, SHORT)

    supervised(path, inject)
    capsys.readouterr()
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "DISAGREES" in out and "DIA-3201" in out and "DIA-3210" in out


def test_replay_resumes_at_the_next_readable_session(tmp_path: Path) -> None:
    path = tmp_path / "log.vigil"
    handmade(path, b"[]")
    clock = FakeClock(start_ns=1_800_000_000_000_000_000)
    with Supervisor(
        lambda x: x, log=str(path), clock=clock, policy=POLICY, isolation="inline"
    ) as sup:
        for _ in range(3):
            sup.infer(X)
    rep = replay(path)
    assert rep.sessions == 1 and rep.counted == 3
    assert [f.code for f in rep.findings] == ["DIA-3211"] and rep.verdict == "INCONCLUSIVE"


def test_a_state_change_dated_after_its_own_record_disagrees(tmp_path: Path) -> None:
    """A time-driven transition whose ``at_ns`` was edited to the far future would pass as a
    cooldown long elapsed (AGREES before): the machine shares the log's clock, so a change
    dated after the record that reports it was not made by the machine."""
    path = tmp_path / "log.vigil"
    forged: list[int] = []

    def inject(rec: FlightRecorder, i: int) -> None:
        if i == 4:  # DEGRADED since call 3; its 5 ms cooldown is not due for 4 ms more
            forged.append(
                rec.record_transition(
                    State.DEGRADED,
                    State.RECOVERING,
                    code=D.COOLDOWN_ELAPSED.number,
                    at_ns=2**64 - 1,
                    reason="cooldown elapsed",
                )
            )

    supervised(path, inject, calls=5)
    rep = replay(path)
    assert rep.verdict == "DISAGREES", rep.findings
    assert [(f.code, f.seq) for f in rep.findings] == [("DIA-3201", forged[0])]
    assert "after the record itself was written" in rep.findings[0].message


def test_every_state_change_of_a_real_session_is_dated_before_its_record(
    tmp_path: Path,
) -> None:
    """The check above never fires on what the supervisor writes: trips, cooldowns, probes
    and recoveries of a real session all agree."""
    path = tmp_path / "log.vigil"
    supervised(path, lambda rec, i: None, calls=20)
    with LogReader(path) as r:
        kinds = [rec.body["to_state"] for rec in r.records() if rec.type is RecordType.TRANSITION]
    assert State.DEGRADED in kinds and State.NORMAL in kinds  # tripped and recovered
    rep = replay(path)
    assert rep.verdict == "AGREES" and rep.transitions == len(kinds), rep.findings
