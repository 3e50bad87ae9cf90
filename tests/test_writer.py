"""The flight recorder's writer: round trips, the ring, restarts, durability, validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from vigil.auditlog import FlightRecorder, LogReader, RingConfig
from vigil.auditlog import _format as F
from vigil.errors import (
    ConfigError,
    FreezeQuotaExceeded,
    InvalidArgument,
    LogClosed,
    LogGeometryError,
    LogIOError,
    LogLocked,
    LogVersionError,
    RecordTooLarge,
)
from vigil.schemas import LifecycleEvent, Outcome, RecordType, ServedBy, State
from vigil.schemas import _records as R

from conftest import SMALL, FakeClock, digest, infer, records, verify

Make = Callable[..., FlightRecorder]


def test_round_trip_of_every_record_type(make_log: Make, log_path: str) -> None:
    w = make_log()
    s1 = w.record_inference(
        request_id=b"r" * 16,
        model_digest=digest("m"),
        input_digest=digest("i"),
        output_digest=digest("o"),
        state=State.DEGRADED,
        served_by=ServedBy.LAST_GOOD,
        outcome=Outcome.TIMEOUT,
        latency_ns=21_000_000,
        deadline_ns=20_000_000,
        code=3101,
        answer_age_ns=40_000_000,
        flags=1,
        payload=b"\x00\x01payload",
    )
    s2 = w.record_transition(State.NORMAL, State.DEGRADED, code=2047, cause_seq=s1, reason="NaN")
    s3 = w.record_rejected(request_id=b"q" * 16, input_digest=digest("x"), code=2047, reason="ü")
    s4 = w.annotate("operator", "brake test")
    s5 = w.append(RecordType.CHECKPOINT, R.LEGACY_CHECKPOINT.pack({"opaque": b"sig"}))
    w.close()
    recs = records(log_path)
    assert [r.seq for r in recs] == list(range(1, 8))
    assert (s1, s2, s3, s4, s5) == (2, 3, 4, 5, 6)
    opened, inf, tr, rej, ann, chk, closed = recs
    assert opened.body["event"] is LifecycleEvent.OPENED
    assert closed.body["event"] is LifecycleEvent.CLOSED
    assert json.loads(closed.body["detail"]) == {"records": 6}
    assert inf.body == {
        "request_id": b"r" * 16,
        "model_digest": digest("m"),
        "input_digest": digest("i"),
        "output_digest": digest("o"),
        "state": State.DEGRADED,
        "served_by": ServedBy.LAST_GOOD,
        "outcome": Outcome.TIMEOUT,
        "flags": 1,
        "code": 3101,
        "latency_ns": 21_000_000,
        "deadline_ns": 20_000_000,
        "answer_age_ns": 40_000_000,
        "payload": b"\x00\x01payload",
    }
    assert tr.body["reason"] == "NaN" and tr.body["cause_seq"] == s1
    assert rej.body["reason"] == "ü" and rej.type is RecordType.REJECTED
    assert ann.body == {"key": "operator", "text": "brake test"}
    assert chk.body == {"opaque": b"sig"}
    assert inf.boot_id == int.from_bytes(b"boot-0000-000000"[:8], "little")
    assert recs[1].mono_ns < recs[2].mono_ns  # the injected clock moved
    js = inf.to_json()
    assert js["input_digest"] == digest("i").hex() and js["state"] == "DEGRADED"


def test_reopen_resumes_at_the_head_not_at_segment_zero(make_log: Make, log_path: str) -> None:
    w = make_log()
    for i in range(600):  # > 2 laps of the 8-segment ring
        infer(w, i)
    head_before = w.statistics().head_segment
    w.close()
    with LogReader(log_path) as r:
        last_before = r.inspect()["head"]
    w2 = FlightRecorder.open(log_path, clock=FakeClock(boot=b"reboot01-0000-00"))
    stats = w2.statistics()
    w2.close()
    assert head_before == stats.head_segment or stats.segment_switches == 1
    recs = records(log_path)
    reopened = next(r for r in recs if r.seq == last_before["last_seq"] + 1)
    assert reopened.type is RecordType.LIFECYCLE
    # the OPENED record sits right after the previous tail (when it fit), never at segment 0
    if stats.segment_switches == 0:
        assert reopened.offset == last_before["end_offset"]
    assert reopened.segment != 0 or head_before == 0


def test_thousands_of_wraparounds_stay_verifiable(log_path: str) -> None:
    cfg = RingConfig(size=4096 + 4 * 8192, segment_size=8192, frozen_quota=0)
    clock = FakeClock()  # one boot: monotonic time continues across the restarts
    w = FlightRecorder.create(log_path, cfg, durability="none", clock=clock)
    n = 0
    for _restart in range(5):
        for _ in range(25_000):
            n += 1
            infer(w, n)
        w.close()
        w = FlightRecorder.open(log_path, durability="none", clock=clock)
    stats = w.statistics()
    w.close()
    assert stats.head_generation > 4 * 1000  # segment starts: > 1000 laps of the ring
    report = verify(log_path)
    assert report.intact, report.findings
    assert set(report.counts) == {"EVICTED"}
    recs = records(log_path)
    seqs = [r.seq for r in recs]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert seqs[-1] == n + 2 * 6  # every call, plus OPENED and CLOSED for each of 6 sessions
    assert all(r.lap >= stats.head_generation - 3 for r in recs)


def test_a_second_writer_is_refused_readers_are_not(make_log: Make, log_path: str) -> None:
    w = make_log()
    infer(w, 1)
    with pytest.raises(LogLocked) as info:
        FlightRecorder.open(log_path)
    assert info.value.code == "DIA-3002" and info.value.path == log_path
    code = (
        "import sys; from vigil.auditlog import FlightRecorder\n"
        "try:\n FlightRecorder.open(sys.argv[1])\nexcept Exception as e: print(e.code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, log_path], check=False, capture_output=True, text=True
    )
    assert out.stdout.strip() == "DIA-3002"
    with LogReader(log_path) as r:
        assert r.live
        report = r.verify()
    assert report.intact and report.live and report.last_seq == 2
    w.close()
    with LogReader(log_path) as r:
        assert not r.live


def test_durability_always_acknowledges_each_append(make_log: Make) -> None:
    w = make_log(durability="always")
    for i in range(5):
        seq = infer(w, i)
        assert w.durable_seq == seq


def test_durability_none_waits_for_flush(make_log: Make) -> None:
    w = make_log(durability="none")
    opened = w.durable_seq
    seq = infer(w, 1)
    assert w.durable_seq == opened < seq
    assert w.flush() == seq == w.durable_seq


def test_durability_batch_commits_in_the_background(make_log: Make) -> None:
    w = make_log(durability="batch", batch_interval=0.002)
    seq = 0
    for i in range(50):
        seq = infer(w, i)
    assert w.wait_durable(seq, timeout=5.0)  # woken by the group commit, not by a sleep
    assert w.durable_seq >= seq


def test_bad_arguments_are_refused_and_append_nothing(make_log: Make) -> None:
    w = make_log()
    head = w.head_seq
    good = {
        "request_id": b"r" * 16,
        "model_digest": digest(1),
        "input_digest": digest(2),
        "output_digest": digest(3),
        "state": 1,
        "served_by": 1,
        "outcome": 0,
        "latency_ns": 1,
        "deadline_ns": 2,
    }
    for bad in (
        {"request_id": b"short"},
        {"model_digest": b"x" * 31},
        {"output_digest": b""},
        {"latency_ns": -1},
        {"state": 256},
        {"code": 70000},
    ):
        with pytest.raises(InvalidArgument) as info:
            w.record_inference(**{**good, **bad})
        assert info.value.code == "DIA-2047"
    with pytest.raises(InvalidArgument):
        w.record_rejected(request_id=b"x", input_digest=digest(1), code=1, reason="")
    with pytest.raises(RecordTooLarge) as big:
        w.record_inference(**good, payload=b"x" * 8000)
    assert big.value.limit == 8192 - 1024 - 92 - 146 and big.value.code == "DIA-3010"
    with pytest.raises(RecordTooLarge):
        w.annotate("k", "x" * 7_100)  # fits the u16 length, not the 8 KiB segment
    with pytest.raises(InvalidArgument, match="limit 65535"):
        w.annotate("k", "x" * 70_000)
    assert w.head_seq == head
    w.close()
    assert verify(w.path).intact


def test_use_after_close_is_refused(make_log: Make) -> None:
    w = make_log()
    w.close()
    w.close()  # idempotent
    for call in (lambda: infer(w, 1), lambda: w.annotate("a", "b"), w.flush, lambda: w.freeze(1)):
        with pytest.raises(LogClosed):
            call()


def test_create_refuses_an_existing_file(make_log: Make, log_path: str) -> None:
    make_log().close()
    with pytest.raises(LogIOError, match="already exists"):
        FlightRecorder.create(log_path, SMALL)
    assert verify(log_path).intact


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"segment_size": 5000}, "multiple of 4096"),
        ({"size": 4096 + 8192, "segment_size": 8192}, "at least 2"),
        ({"size": 4096 + 4 * 8192, "segment_size": 8192, "frozen_quota": 3}, "frozen_quota"),
        ({"segment_size": 2 << 30}, "multiple of 4096 in"),
    ],
)
def test_invalid_geometry_is_a_config_error(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        RingConfig(**kwargs)
    assert info.value.code == "DIA-1001"


def test_invalid_options_are_config_errors(log_path: str) -> None:
    with pytest.raises(ConfigError, match="durability"):
        FlightRecorder.create(log_path, SMALL, durability="sometimes")
    with pytest.raises(ConfigError, match="batch_interval"):
        FlightRecorder.create(log_path + "2", SMALL, batch_interval=0)
    assert not os.path.exists(log_path + "2") or verify(log_path + "2").intact


def test_freeze_keeps_records_through_many_wraps(make_log: Make, log_path: str) -> None:
    w = make_log()
    for i in range(40):
        infer(w, i)
    frozen = w.freeze(10, 30)
    assert frozen and w.statistics().frozen_segments == tuple(frozen)
    w.flush()
    note = records(log_path)[-1]
    assert note.type is RecordType.ANNOTATION and note.body["key"] == "vigil.freeze"
    assert json.loads(note.body["text"]) == {"first_seq": 10, "last_seq": 30, "segments": frozen}
    for i in range(3000):  # many laps over the unfrozen segments
        infer(w, 1000 + i)
    w.close()
    recs = {r.seq: r for r in records(log_path)}
    for seq in range(10, 31):
        assert seq in recs, seq
    report = verify(log_path)
    assert report.intact and "GAP" not in report.counts, report.findings


def test_freeze_quota_is_enforced(make_log: Make) -> None:
    w = make_log()  # quota 2
    for i in range(200):
        infer(w, i)
    with pytest.raises(FreezeQuotaExceeded) as info:
        w.freeze(1, 200)
    assert (info.value.quota, info.value.frozen) == (2, 0)
    assert w.statistics().frozen_segments == ()
    first = w.freeze(1, 2)
    assert len(first) == 1
    assert w.unfreeze() == first
    assert w.statistics().frozen_segments == ()


def test_wear_stays_level_with_restarts_and_a_quarter_frozen(tmp_path: Path) -> None:
    path = str(tmp_path / "wear.vigil")
    cfg = RingConfig(size=4096 + 16 * 8192, segment_size=8192, frozen_quota=4)
    clock = FakeClock()
    w = FlightRecorder.create(path, cfg, durability="none", clock=clock)
    n = 0
    for _ in range(160):
        infer(w, n := n + 1)
    w.freeze(1, 100)  # the first four segments (29 records each): an incident window
    frozen = set(w.statistics().frozen_segments)
    assert len(frozen) == 4
    for _restart in range(60):  # > 100 laps over the 12 free segments, restarting each time
        for _ in range(700):
            infer(w, n := n + 1)
        w.close()
        w = FlightRecorder.open(path, durability="none", clock=clock)
    wear = w.segment_wear()
    stats = w.statistics()
    w.close()
    free = [wear[i] for i in range(16) if i not in frozen]
    assert min(free) >= 100, wear
    assert (max(free) - min(free)) / max(free) <= 0.25, wear  # the requirement
    assert max(free) - min(free) <= 1, wear  # what FIFO over the free segments gives
    assert all(wear[i] <= 1 for i in frozen)
    assert stats.frozen_segments == tuple(sorted(frozen))


def test_unfrozen_segments_rejoin_the_rotation_first(make_log: Make) -> None:
    w = make_log()
    for i in range(60):
        infer(w, i)
    frozen = w.freeze(1, 20)
    for i in range(2000):
        infer(w, 100 + i)
    wear = w.segment_wear()
    assert all(wear[i] < max(wear) for i in frozen)
    w.unfreeze()
    switches = w.statistics().segment_switches
    while w.statistics().segment_switches == switches:
        infer(w, 5000)
    assert w.statistics().head_segment == frozen[0]  # the oldest data: evicted first (FIFO)


def test_torn_tail_is_cut_and_the_writer_carries_on(make_log: Make, log_path: str) -> None:
    w = make_log()
    for i in range(10):
        infer(w, i)
    stats = w.statistics()
    w._drop()  # the process "dies": no closing record, no sync
    with LogReader(log_path) as r:
        end = r.inspect()["head"]["end_offset"]
    with open(log_path, "r+b") as f:  # a half-written next record
        f.seek(end)
        f.write(F.HDR.pack(240, 146, 2, 1, stats.head_seq + 1, stats.head_generation, 0, 0, 0, 0))
        f.write(b"\xab" * 60)
    report = verify(log_path)
    assert report.intact and report.counts == {"TORN_TAIL": 1}
    torn = report.findings[0]
    assert (torn.seq, torn.offset) == (stats.head_seq + 1, end)
    w2 = FlightRecorder.open(log_path, clock=FakeClock(boot=b"reboot01-0000-00"))
    infer(w2, 99)
    w2.close()
    recs = records(log_path)
    opened = recs[stats.head_seq]
    assert opened.seq == stats.head_seq + 1 and opened.offset == end
    assert json.loads(opened.body["detail"])["recovery"]["torn_tail"]["offset"] > 0
    assert verify(log_path).counts == {}


def test_valid_records_after_damage_are_kept_as_evidence(make_log: Make, log_path: str) -> None:
    w = make_log()
    for i in range(12):
        infer(w, i)
    w._drop()
    before = records(log_path)
    victim, follower = before[5], before[6]
    with open(log_path, "r+b") as f:  # damage record 6 in place: 7.. still follow
        f.seek(victim.offset + 100)
        f.write(b"\xff\xff")
    w2 = FlightRecorder.open(log_path, clock=FakeClock(boot=b"reboot01-0000-00"))
    new = infer(w2, 50)
    w2.close()
    recs = records(log_path)
    assert [r.seq for r in recs] == list(range(1, new + 2))
    assert recs[5].segment != victim.segment  # resumed in a fresh segment
    report = verify(log_path)
    assert report.counts.get("SUPERSEDED") == 1, report.findings
    with LogReader(log_path) as r:  # the superseded records are still on disk, intact
        raw = os.pread(r._fd, 64, follower.offset)
    assert F.HDR.unpack_from(raw)[4] == follower.seq


def test_writer_refuses_truncated_resized_or_newer_logs(make_log: Make, log_path: str) -> None:
    make_log().close()
    size = os.path.getsize(log_path)
    with open(log_path, "r+b") as f:
        f.truncate(size - 4096)
    with pytest.raises(LogGeometryError, match="truncated"):
        FlightRecorder.open(log_path)
    with open(log_path, "r+b") as f:
        f.truncate(size + 4096)
    with pytest.raises(LogGeometryError, match="resized"):
        FlightRecorder.open(log_path)
    with open(log_path, "r+b") as f:
        f.truncate(size)
        raw = bytearray(f.read(256))
        raw[10] = R.FORMAT_MINOR + 1  # minor version
        raw[252:256] = F.CRC.pack(F.crc32c(bytes(raw[:252])))
        for off in R.SUPERBLOCK_SLOTS:
            f.seek(off)
            f.write(raw)
    with pytest.raises(LogVersionError, match="newer vigil"):
        FlightRecorder.open(log_path)
    with LogReader(log_path) as reader:  # readers still read it
        assert reader.verify().intact


def test_concurrent_appenders_get_unique_contiguous_seqs(make_log: Make, log_path: str) -> None:
    w = make_log(config=RingConfig(size=4096 + 64 * 8192, segment_size=8192), durability="batch")
    seqs: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def work(k: int) -> None:
        start.wait()
        for i in range(400):
            seqs[k].append(infer(w, k * 10_000 + i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    flat = sorted(s for part in seqs for s in part)
    assert flat == list(range(2, 2 + 1600))
    for part in seqs:
        assert part == sorted(part)
    assert verify(log_path).counts == {}
