"""The verifier: every change is found, named, and classified the way an auditor needs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from vigil.auditlog import FlightRecorder, LogReader
from vigil.auditlog import _format as F
from vigil.errors import LogGeometryError, NotAVigilLog, SuperblockCorrupt
from vigil.schemas import _records as R

from conftest import SMALL, FakeClock, image_reader, infer, records, verify


def _small_log(path: str, n: int = 10, clock: FakeClock | None = None) -> list:
    with FlightRecorder.create(path, SMALL, clock=clock or FakeClock()) as w:
        for i in range(n):
            infer(w, i, payload=bytes([i]) * (i % 5))
        w.record_transition(1, 2, cause_seq=3, reason="x")
        w.annotate("k", "v")
    return records(path)


def _reseal(buf: bytearray, off: int, prev_chain: bytes | None = None) -> bytes:
    """Recompute a record's CRC (and chain, when ``prev_chain`` is given); return its chain."""
    length = int.from_bytes(buf[off : off + 4], "little")
    end = off + length
    if prev_chain is not None:
        h = hashlib.sha256(prev_chain)
        h.update(bytes(buf[off : end - 36]))
        buf[end - 36 : end - 4] = h.digest()
    buf[end - 4 : end] = F.CRC.pack(F.crc32c(bytes(buf[off : end - 4])))
    return bytes(buf[end - 36 : end - 4])


def _length(image: bytes | bytearray, off: int) -> int:
    return int.from_bytes(image[off : off + 4], "little")


LATENCY = R.HEADER_SIZE + 120  # offset of latency_ns in an INFERENCE record


def _covers(finding: object, seq: int) -> bool:
    lo = finding.seq  # type: ignore[attr-defined]
    hi = finding.last_seq if finding.last_seq is not None else lo  # type: ignore[attr-defined]
    return lo is not None and lo <= seq <= hi


@pytest.mark.requirement("SR-006")
def test_every_single_byte_change_in_the_record_area_is_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    # 5 INFERENCE records carry every payload length _small_log writes (i % 5), then the
    # TRANSITION and the ANNOTATION: every record layout, middle and last (the torn tail)
    recs = _small_log(path, n=5)
    image = Path(path).read_bytes()
    spans = [
        (r.seq, r.offset, int.from_bytes(image[r.offset : r.offset + 4], "little")) for r in recs
    ]
    checked = 0
    for seq, off, length in spans:
        for pos in range(off, off + length):
            for flip in (0x01, 0x80):
                bad = bytearray(image)
                bad[pos] ^= flip
                with image_reader(tmp_path, bad) as r:
                    report = r.verify()
                named = [f for f in report.findings if _covers(f, seq)]
                assert named, (seq, pos - off, flip, report.findings)
                if seq != recs[-1].seq:  # damage to the last record is a torn tail
                    assert not report.intact, (seq, pos - off)
                checked += 1
    assert checked == 2 * sum(length for _, _, length in spans)


def test_records_after_damage_are_still_returned(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _small_log(path)
    bad = bytearray(Path(path).read_bytes())
    bad[recs[4].offset + 60] ^= 0xFF
    with image_reader(tmp_path, bad) as r:
        got = [x.seq for x in r.records()]
        report = r.verify()
    assert got == [x.seq for x in recs if x.seq != 5]
    (finding,) = report.findings
    assert (finding.kind, finding.seq, finding.offset) == ("MEDIA_CORRUPTION", 5, recs[4].offset)


@pytest.mark.requirement("SR-006")
def test_deleted_record_is_tampering(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _small_log(path)
    image = bytearray(Path(path).read_bytes())
    a, b = recs[3].offset, recs[4].offset
    seg_end = R.SUPERBLOCK_AREA + 8192
    del image[a:b]
    image[seg_end - (b - a) : seg_end - (b - a)] = bytes(b - a)
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert not report.intact
    assert any(f.kind == "TAMPERING" and f.seq == 4 for f in report.findings), report.findings


@pytest.mark.requirement("SR-006")
def test_reordered_records_are_tampering(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _small_log(path)
    image = bytearray(Path(path).read_bytes())
    r3, r4 = recs[2], recs[3]  # seq 3 and 4, both empty-payload INFERENCE records
    n = r4.offset - r3.offset
    assert n == recs[4].offset - r4.offset
    first, second = bytes(image[r3.offset : r4.offset]), bytes(image[r4.offset : r4.offset + n])
    image[r3.offset : r4.offset] = second
    image[r4.offset : r4.offset + n] = first
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    kinds = {(f.kind, f.seq) for f in report.findings}
    assert ("TAMPERING", 3) in kinds and not report.intact, report.findings


@pytest.mark.requirement("SR-006")
def test_record_spliced_from_another_log_is_tampering(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a.vigil"), str(tmp_path / "b.vigil")
    recs_a, recs_b = _small_log(a), _small_log(b, clock=FakeClock(start_ns=5))
    image = bytearray(Path(a).read_bytes())
    donor = Path(b).read_bytes()
    off = recs_a[2].offset
    length = int.from_bytes(image[off : off + 4], "little")
    image[off : off + length] = donor[recs_b[2].offset : recs_b[2].offset + length]
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert any(f.kind == "TAMPERING" and f.seq == 3 for f in report.findings), report.findings


@pytest.mark.requirement("SR-006")
def test_edit_with_recomputed_crc_breaks_the_chain(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _small_log(path)
    image = bytearray(Path(path).read_bytes())
    off = recs[5].offset
    image[off + LATENCY] ^= 0x10  # latency_ns of seq 6
    _reseal(image, off)
    with image_reader(tmp_path, image) as r:
        report = r.verify()
        got = {x.seq: x for x in r.records()}
    (finding,) = report.findings
    assert (finding.kind, finding.seq) == ("TAMPERING", 6)
    assert "chain" in finding.message
    assert got[6].body["latency_ns"] != recs[5].body["latency_ns"]  # returned, but flagged


def test_rewriting_the_chain_is_caught_at_the_next_segment(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    with FlightRecorder.create(path, SMALL, clock=FakeClock()) as w:
        for i in range(60):  # two segments
            infer(w, i)
    recs = records(path)
    first_seg = [r for r in recs if r.segment == recs[0].segment]
    image = bytearray(Path(path).read_bytes())
    image[first_seg[3].offset + LATENCY] ^= 0x10
    prev = first_seg[2].offset + _length(image, first_seg[2].offset)
    chain = bytes(image[prev - 36 : prev - 4])
    for r in first_seg[3:]:  # an attacker without a key recomputes every later digest
        chain = _reseal(image, r.offset, chain)
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    (finding,) = report.findings
    assert finding.kind == "TAMPERING" and "does not chain" in finding.message
    assert finding.seq == first_seg[-1].seq + 1


@pytest.mark.requirement("SR-006")
def test_missing_segment_inside_the_window_is_a_gap(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    with FlightRecorder.create(path, SMALL, clock=FakeClock()) as w:
        for i in range(150):  # five segments, no wrap
            infer(w, i)
    recs = records(path)
    middle = recs[70].segment
    image = bytearray(Path(path).read_bytes())
    base = R.SUPERBLOCK_AREA + middle * 8192
    image[base : base + 8192] = bytes(8192)  # the whole segment vanished
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    gaps = [f for f in report.findings if f.kind == "GAP"]
    assert len(gaps) == 1 and _covers(gaps[0], 70 + 1), report.findings
    assert not report.intact


@pytest.mark.requirement("SR-006")
def test_ring_eviction_is_expected_not_a_gap_even_around_a_frozen_window(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "log.vigil")
    with FlightRecorder.create(path, SMALL, clock=FakeClock()) as w:
        for i in range(40):
            infer(w, i)
        w.freeze(5, 6)
        for i in range(2000):
            infer(w, 100 + i)
    report = verify(path)
    assert report.intact, report.findings
    evicted = [f for f in report.findings if f.kind == "EVICTED"]
    assert len(evicted) == 1  # between the frozen window (seq 1..30) and the ring
    assert 6 < evicted[0].seq < 40 and evicted[0].last_seq > 1000
    assert set(report.counts) == {"EVICTED"}
    assert {5, 6} <= {r.seq for r in records(path)}


@pytest.mark.requirement("SR-006")
def test_monotonic_time_going_back_in_one_boot_is_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    clock = FakeClock()
    with FlightRecorder.create(path, SMALL, clock=clock) as w:
        infer(w, 1)
        clock.mono -= 1_000_000
        infer(w, 2)
    report = verify(path)
    (finding,) = report.findings
    assert (finding.kind, finding.seq, finding.code) == ("CLOCK", 3, "DIA-3106")
    # across a reboot the monotonic clock restarts: that is not a finding
    w = FlightRecorder.open(path, clock=FakeClock(boot=b"reboot01-0000-00"))
    w.close()
    assert verify(path).counts == {"CLOCK": 1}


def test_superblock_copies(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    _small_log(path)
    image = bytearray(Path(path).read_bytes())
    image[20] ^= 1  # copy A
    with image_reader(tmp_path, image) as r:
        report = r.verify()
        assert len(list(r.records())) == 14
    assert report.counts == {"MEDIA_CORRUPTION": 1} and report.findings[0].offset == 0
    image[512 + 20] ^= 1  # copy B too
    with pytest.raises(SuperblockCorrupt):
        image_reader(tmp_path, image, "b.vigil")
    image[:4096] = b"\xff" * 4096
    with pytest.raises(NotAVigilLog):
        image_reader(tmp_path, image, "c.vigil")
    image = bytearray(Path(path).read_bytes())
    image[3000] = 7  # unused superblock area
    with image_reader(tmp_path, image, "d.vigil") as r:
        assert r.verify().counts == {"MEDIA_CORRUPTION": 1}


def test_segment_header_copies(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _small_log(path)
    base = R.SUPERBLOCK_AREA + recs[0].segment * 8192
    image = bytearray(Path(path).read_bytes())
    image[base + 512 + 3] ^= 1  # the unused copy B: a torn write could do this
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert report.intact and report.counts == {"HEADER_COPY": 1}
    image = bytearray(Path(path).read_bytes())
    image[base + 20] ^= 1  # copy A, the one in force: salvaged from the records
    with image_reader(tmp_path, image) as r:
        report = r.verify()
        assert [x.seq for x in r.records()] == [x.seq for x in recs]
    assert not report.intact and report.counts == {"MEDIA_CORRUPTION": 1}
    image = bytearray(Path(path).read_bytes())
    image[base + 300] = 1  # unused bytes of the header area
    with image_reader(tmp_path, image) as r:
        assert r.verify().counts == {"MEDIA_CORRUPTION": 1}


@pytest.mark.requirement("SR-011")
def test_truncation_at_every_record_boundary(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _small_log(path, n=40)  # spans two segments
    full = Path(path).read_bytes()
    ends = sorted(
        {r.offset for r in recs}
        | {r.offset + int.from_bytes(full[r.offset : r.offset + 4], "little") for r in recs}
    )
    for end in ends:
        for cut in (end - 1, end, end + 1):
            p = tmp_path / "cut.vigil"
            p.write_bytes(full[:cut])
            with LogReader(str(p)) as r:
                got = list(r.records())
                report = r.verify()
            assert not report.intact and "FILE_SIZE" in report.counts
            whole = [x.seq for x in recs if x.offset + _length(full, x.offset) <= cut]
            assert [x.seq for x in got] == whole
            for x in got:
                assert x.offset + _length(full, x.offset) <= cut
            with pytest.raises(LogGeometryError):
                FlightRecorder.open(str(p))


def test_stale_bytes_of_earlier_laps_are_never_records(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    with FlightRecorder.create(path, SMALL, clock=FakeClock()) as w:
        for i in range(700):  # ~3 laps: every segment holds older laps' bytes
            infer(w, i, payload=b"p" * (i % 50))
    recs = records(path)
    image = Path(path).read_bytes()
    laps = {r.segment: r.lap for r in recs}
    stale = 0
    for seg in range(8):
        base = R.SUPERBLOCK_AREA + seg * 8192
        for off in range(base + 1024, base + 8192 - 48, 8):
            length, _, _, _, _, lap, *_ = F.HDR.unpack_from(image, off)
            if 0 < lap < laps.get(seg, 0) and length >= R.MIN_RECORD:
                stale += 1
    assert stale > 0  # there really are old-lap headers lying around
    report = verify(path)
    assert report.intact and set(report.counts) == {"EVICTED"}
    assert all(r.lap == laps[r.segment] for r in recs)


def test_verify_reports_a_live_writer_and_stays_bounded(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    w = FlightRecorder.create(path, SMALL, clock=FakeClock())
    for i in range(50):
        infer(w, i)
    w.flush()
    copy = tmp_path / "copy.vigil"
    shutil.copy(path, copy)
    with LogReader(path) as r:
        report = r.verify()
    assert report.live and report.intact and report.last_seq == 51
    w.close()
    image = bytearray(copy.read_bytes())
    for rec in records(str(copy))[1:40:2]:
        image[rec.offset + LATENCY] ^= 0xFF  # damage every other record
    with image_reader(tmp_path, image) as r:
        report = r.verify(max_findings=3)
    assert len(report.findings) == 3 and report.findings_dropped > 0
    assert sum(report.counts.values()) == 3 + report.findings_dropped


def test_a_tear_left_in_a_frozen_segment_stays_a_tear_after_the_ring_moves_on(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "log.vigil")
    w = FlightRecorder.create(path, SMALL, durability="none", clock=FakeClock())
    for i in range(20):
        infer(w, i)
    w._drop()  # a crash: nothing after the OPENED record was acknowledged durable
    victim = records(path)[10]
    image = bytearray(Path(path).read_bytes())
    image[victim.offset + LATENCY] ^= 0xFF  # torn in the middle, later records intact
    Path(path).write_bytes(image)
    clock = FakeClock(boot=b"reboot01-0000-00")
    w = FlightRecorder.open(path, clock=clock)  # recovery: superseded, fresh segment
    w.freeze(1, 5)  # keep the torn segment
    for i in range(1500):  # many laps: the segments after it leave the ring
        infer(w, 100 + i)
    w.close()
    report = verify(path)
    assert report.intact, report.findings
    assert set(report.counts) == {"TORN_TAIL", "SUPERSEDED", "EVICTED"}
    torn = next(f for f in report.findings if f.kind == "TORN_TAIL")
    assert torn.seq == victim.seq and torn.segment == victim.segment


def test_a_header_copy_with_a_foreign_identity_is_tampering(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    with FlightRecorder.create(path, SMALL, clock=FakeClock()) as w:
        for i in range(60):
            infer(w, i)
    recs = records(path)
    s0, s1 = recs[0].segment, recs[-1].segment
    image = bytearray(Path(path).read_bytes())
    src = R.SUPERBLOCK_AREA + s1 * 8192
    dst = R.SUPERBLOCK_AREA + s0 * 8192 + 512
    image[dst : dst + 128] = image[src : src + 128]  # a valid header, of another segment
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert report.counts == {"TAMPERING": 1}, report.findings
    assert report.findings[0].segment == s0


def test_two_segments_claiming_one_generation_is_tampering(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    with FlightRecorder.create(path, SMALL, clock=FakeClock()) as w:
        for i in range(60):
            infer(w, i)
    image = bytearray(Path(path).read_bytes())
    a, b = R.SUPERBLOCK_AREA, R.SUPERBLOCK_AREA + 7 * 8192  # segment 7 was never used
    image[b : b + 8192] = image[a : a + 8192]
    header = bytearray(image[b : b + 128])
    header[12:16] = (7).to_bytes(4, "little")  # forge the index, recompute the CRC
    header[124:128] = F.CRC.pack(F.crc32c(bytes(header[:124])))
    image[b : b + 128] = header
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert not report.intact
    assert any("both claim generation" in f.message for f in report.findings), report.findings


@pytest.mark.requirement("SR-006")
def test_bytes_appended_to_the_file_are_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    _small_log(path)
    with open(path, "ab") as f:
        f.write(b"appended")
    report = verify(path)
    assert report.counts == {"FILE_SIZE": 1} and not report.intact
    with pytest.raises(LogGeometryError):
        FlightRecorder.open(path)
