"""No silent loss: when records are gone, ``verify`` says so (issue 13, "Proven under attack").

Each test corrupts real bytes the way the outside harnesses did and checks that the loss is a
finding that is not expected, that eviction is claimed only where it is provable, and that
hostile geometry and non-regular files cost nothing.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vigil
from vigil.auditlog import (
    Anchor,
    FlightRecorder,
    FssSeed,
    LogReader,
    LogRecord,
    clock_steps,
    fss_generate,
)
from vigil.auditlog import _format as F
from vigil.auditlog._sealcheck import ANCHOR_LIMIT
from vigil.errors import (
    LogGeometryError,
    NotARegularFile,
    NotAVigilLog,
    UsageError,
    VigilError,
)
from vigil.schemas import CallFlags, RecordType
from vigil.schemas import _records as R

from conftest import SMALL, FakeClock, image_reader, infer, records

SEG = 8192
PAGE = 4096


def _seg_base(index: int) -> int:
    return R.SUPERBLOCK_AREA + index * SEG


def _log(path: str, n: int, **options: object) -> list:
    with FlightRecorder.create(path, SMALL, clock=FakeClock(), **options) as w:
        for i in range(n):
            infer(w, i)
    return records(path)


def _zero_first_page(path: str, segment: int) -> bytearray:
    image = bytearray(Path(path).read_bytes())
    base = _seg_base(segment)
    image[base : base + PAGE] = bytes(PAGE)  # seek(base); write(bytes(4096))
    return image


def _missing(before: list, report: object, after: list) -> set[int]:
    return {r.seq for r in before} - {r.seq for r in after}


# --- item 1: eviction is claimed only when the geometry and generations prove it ----------


def test_zeroed_oldest_page_of_an_unwrapped_ring_is_a_gap_not_eviction(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _log(path, 100)  # four segments of eight: the ring never wrapped
    oldest = recs[0].segment
    with image_reader(tmp_path, _zero_first_page(path, oldest)) as r:
        report = r.verify()
    assert not report.intact, report.findings
    assert "EVICTED" not in report.counts
    gap = next(f for f in report.findings if f.kind == "GAP")
    assert gap.seq == 1 and "never wrapped" in gap.message
    assert report.retained_from == 1 and "never wrapped" in report.retention


def test_zeroed_oldest_page_of_a_wrapped_ring_is_a_gap_from_retained_from(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _log(path, 400)  # wraps: ~30 records per segment, 8 segments
    with LogReader(path) as r:
        live = sorted((s for s in r.segments if s.live), key=lambda s: s.generation)
        head = live[-1]
        assert head.generation > r.geometry.segment_count
        assert r.verify().counts == {"EVICTED": 1}
    oldest = live[0]
    assert oldest.first_seq == head.retained_from
    with image_reader(tmp_path, _zero_first_page(path, oldest.index)) as r:
        report = r.verify()
    assert not report.intact, report.findings
    gap = next(f for f in report.findings if f.kind == "GAP")
    assert (gap.seq, gap.last_seq) == (head.retained_from, live[1].first_seq - 1)
    evicted = next(f for f in report.findings if f.kind == "EVICTED")
    assert evicted.last_seq == head.retained_from - 1  # the real eviction is still expected
    assert recs[-1].seq == report.last_seq


# --- item 2: a destroyed header does not make a segment's records vanish ------------------


def test_zeroed_first_page_of_the_newest_segment_is_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _log(path, 80)
    head = recs[-1].segment
    in_head = [r for r in recs if r.segment == head]
    assert any(r.offset >= _seg_base(head) + PAGE for r in in_head)  # some survive the zeroing
    with image_reader(tmp_path, _zero_first_page(path, head)) as r:
        report = r.verify()
        after = list(r.records())
    lost = _missing(recs, report, after)
    assert lost == {r.seq for r in in_head}
    assert not report.intact, report.findings
    (finding,) = [f for f in report.findings if f.kind == "MEDIA_CORRUPTION"]
    assert finding.segment == head and (finding.seq, finding.last_seq) == (
        min(lost),
        max(lost),
    )


def test_records_of_a_segment_whose_header_never_reached_the_disk_are_superseded(
    tmp_path: Path,
) -> None:
    """durability none: nothing vouches for them, so a crash explains the loss."""
    path = str(tmp_path / "log.vigil")
    w = FlightRecorder.create(path, SMALL, clock=FakeClock(), durability="none")
    try:
        for i in range(80):
            infer(w, i)
        with LogReader(path) as r:
            head = max(s.index for s in r.segments if s.live)
        image = _zero_first_page(path, head)
    finally:
        w.close()
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert report.intact and "SUPERSEDED" in report.counts, report.findings


def test_crash_leftovers_the_log_rewrote_are_superseded(tmp_path: Path) -> None:
    """Under durability none a segment's records can reach the disk before its header; after
    recovery the writer rewrites those seqs elsewhere. Leftovers naming seqs the log holds,
    which nothing vouched durable, are what a crash leaves; the same bytes vouched durable are
    a loss."""
    path = str(tmp_path / "log.vigil")
    recs = _log(path, 80, durability="none")
    middle = recs[40].segment  # fully part of the log
    image = bytearray(Path(path).read_bytes())
    src, dst = _seg_base(middle) + PAGE, _seg_base(7) + PAGE  # segment 7: never started
    image[dst : dst + PAGE] = image[src : src + PAGE]
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert report.intact and set(report.counts) == {"SUPERSEDED"}, report.findings
    vouched = _log(str(tmp_path / "batch.vigil"), 80)  # batch: later records vouch
    image = bytearray(Path(tmp_path / "batch.vigil").read_bytes())
    middle = vouched[40].segment
    src = _seg_base(middle) + PAGE
    image[dst : dst + PAGE] = image[src : src + PAGE]
    image[src : src + PAGE] = bytes(PAGE)  # and the originals are gone
    with image_reader(tmp_path, image, "b.vigil") as r:
        report = r.verify()
    assert not report.intact and "SUPERSEDED" not in report.counts, report.findings


def test_garbage_in_a_never_started_segment_is_media_corruption(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    _log(path, 10)
    image = bytearray(Path(path).read_bytes())
    image[_seg_base(7) + 5000] = 0x5A  # segment 7 was never started
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert report.counts == {"MEDIA_CORRUPTION": 1}, report.findings
    assert report.findings[0].offset == _seg_base(7) + 5000


# --- item 3: work and memory bounded by the bytes actually present ------------------------


def _superblock_like(path: str, segments: int, size: int = SEG) -> bytes:
    """The superblock of a real log, its geometry changed to ``segments`` x ``size``."""
    img = bytearray(Path(path).read_bytes()[:PAGE])
    for off in R.SUPERBLOCK_SLOTS:
        struct.pack_into("<II", img, off + 52, size, segments)
        struct.pack_into("<I", img, off + 252, F.crc32c(bytes(img[off : off + 252])))
    return bytes(img)


@pytest.mark.parametrize("sparse", [False, True], ids=["4KiB-file", "sparse-file"])
def test_a_huge_geometry_costs_only_the_bytes_present(tmp_path: Path, sparse: bool) -> None:
    src = str(tmp_path / "src.vigil")
    _log(src, 3)
    segments = 1 << 21  # the old reader: ~16 s and ~600 MB here; 2^24 took 131 s, 4.9 GB
    p = tmp_path / "huge.vigil"
    p.write_bytes(_superblock_like(src, segments))
    if sparse:
        os.truncate(p, R.SUPERBLOCK_AREA + segments * SEG)
    tracemalloc.start()
    try:
        with LogReader(str(p)) as r:
            report = r.verify()
            info = r.inspect()
            assert r.segments == []  # nothing read, nothing allocated per segment
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    if sparse:
        assert report.intact and info["segments"]["counts"] == {"empty": segments}
    else:
        assert report.counts == {"FILE_SIZE": 1} and not report.intact
        assert info["geometry"]["truncated"] and info["segments"]["counts"] == {"missing": segments}


BIG = 64 << 20  # a segment size the old reader read whole, holes and all


def _peak(fn: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_stray_byte_in_each_sparse_segment_costs_only_the_bytes_present(
    tmp_path: Path,
) -> None:
    src = str(tmp_path / "src.vigil")
    _log(src, 3)
    p = tmp_path / "sparse.vigil"
    p.write_bytes(_superblock_like(src, 4, BIG))
    with p.open("r+b") as f:
        f.truncate(R.SUPERBLOCK_AREA + 4 * BIG)  # 256 MiB that read as zeros, but for:
        for i in range(4):
            f.seek(R.SUPERBLOCK_AREA + i * BIG + 5000)  # one byte in each segment's records
            f.write(b"\x01")

    def verify() -> object:
        with LogReader(str(p)) as r:
            return r.verify()

    report, peak = _peak(verify)  # the old reader: 64 MiB read + 64 MiB of zeros per segment
    assert peak < 8 << 20, peak
    assert report.counts == {"MEDIA_CORRUPTION": 4}, report.findings  # type: ignore[attr-defined]
    offsets = [f.offset for f in report.findings]  # type: ignore[attr-defined]
    assert offsets == [R.SUPERBLOCK_AREA + i * BIG + 5000 for i in range(4)]


def test_a_log_in_a_sparse_segment_is_read_up_to_its_last_data(tmp_path: Path) -> None:
    src = str(tmp_path / "src.vigil")
    recs = _log(src, 20)
    assert {r.segment for r in recs} == {0}
    image = Path(src).read_bytes()
    p = tmp_path / "sparse.vigil"
    p.write_bytes(_superblock_like(src, 4, BIG) + image[PAGE : PAGE + SEG])  # segment 0 as is
    os.truncate(p, R.SUPERBLOCK_AREA + 4 * BIG)

    def read() -> object:
        with LogReader(str(p)) as r:
            return r.verify(), [rec.seq for rec in r.records()], r.inspect()

    (report, seqs, info), peak = _peak(read)  # type: ignore[misc]
    assert peak < 8 << 20, peak  # the old reader read 64 MiB for segment 0
    assert report.intact and seqs == [r.seq for r in recs], report.findings
    assert info["head"]["last_seq"] == recs[-1].seq


def test_a_sparse_segment_holding_data_is_still_read(tmp_path: Path) -> None:
    src = str(tmp_path / "src.vigil")
    recs = _log(src, 80)
    image = _zero_first_page(src, recs[-1].segment)  # as a punched hole would read
    p = tmp_path / "holes.vigil"
    p.write_bytes(bytes(image))
    with LogReader(str(p)) as r:
        assert not r.verify().intact


# --- item 4: named pipes and other non-regular files are refused, never opened blocking ---


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    root = str(Path(vigil.__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-c", "import sys; from vigil.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,  # the old code blocked forever on the pipe
        env={**os.environ, "PYTHONPATH": root},
    )


@pytest.fixture
def fifo(tmp_path: Path) -> str:
    path = str(tmp_path / "pipe")
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("fifo") / "log.vigil")
    _log(path, 5)
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "{fifo}"],
        ["dump", "{fifo}"],
        ["inspect", "{fifo}"],
        ["replay", "{fifo}"],
        ["anchor", "{fifo}"],
        ["anchor", "{log}", "--out", "{fifo}"],
        ["verify", "{log}", "--pubkey", "{fifo}"],
        ["verify", "{log}", "--fss-seed", "{fifo}"],
        ["verify", "{log}", "--anchor", "{fifo}"],
        ["model", "verify", "{log}", "--pubkey", "{fifo}"],
    ],
    ids=" ".join,
)
def test_a_named_pipe_is_refused_by_every_command(
    argv: list[str], fifo: str, small_log: str
) -> None:
    done = _cli(*(a.format(fifo=fifo, log=small_log) for a in argv))
    assert done.returncode == 2, done
    assert "DIA-1010" in done.stderr and "named pipe" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_anchor_library_call_refuses_a_named_pipe(fifo: str) -> None:
    # in a subprocess: the old Anchor.load opened the pipe blocking and never returned
    root = str(Path(vigil.__file__).resolve().parent.parent)
    code = (
        "import sys\nfrom vigil.auditlog import Anchor\nfrom vigil.errors import NotARegularFile\n"
        "try:\n    Anchor.load(sys.argv[1])\nexcept NotARegularFile as e:\n    print(e.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, fifo],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert done.stdout.strip() == "DIA-1010", done


def test_the_anchor_library_call_refuses_an_oversized_file(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (ANCHOR_LIMIT + 1))  # blank JSON padding: valid until the limit
    with pytest.raises(UsageError, match="over 1048576 bytes") as exc:
        Anchor.load(big)
    assert exc.value.code == "DIA-1002"


def test_a_directory_is_refused_by_the_reader(tmp_path: Path) -> None:
    with pytest.raises(NotARegularFile) as exc:
        LogReader(str(tmp_path))
    assert exc.value.code == "DIA-1010" and exc.value.kind == "a directory"


# --- item 7: segment headers -------------------------------------------------------------


def test_unused_header_bytes_of_an_empty_segment_are_checked(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    _log(path, 10)
    image = bytearray(Path(path).read_bytes())
    image[_seg_base(7) + 300] = 1  # segment 7 was never started
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert report.counts == {"MEDIA_CORRUPTION": 1}, report.findings
    assert report.findings[0].segment == 7


def test_a_forged_header_copy_in_force_is_tampering(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _log(path, 60)
    s0, s1 = recs[0].segment, recs[-1].segment
    image = bytearray(Path(path).read_bytes())
    src, dst = _seg_base(s1), _seg_base(s0)
    # copy A of segment 0 is the only copy in force; replace it by segment 1's (valid CRC)
    image[dst : dst + 128] = image[src : src + 128]
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    assert "TAMPERING" in report.counts and "MEDIA_CORRUPTION" not in report.counts, report.findings


def test_header_findings_carry_file_offsets(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    recs = _log(path, 10)
    seg = recs[0].segment
    image = bytearray(Path(path).read_bytes())
    image[_seg_base(seg) + 512 + 3] ^= 1  # the unused copy B
    with image_reader(tmp_path, image) as r:
        (finding,) = r.verify().findings
    assert finding.kind == "HEADER_COPY" and finding.offset == _seg_base(seg) + 512


# --- item 8: short files ----------------------------------------------------------------


@pytest.mark.parametrize("size", [256, 700, 767])
def test_a_file_truncated_inside_the_superblock_area_is_reported_truncated(
    tmp_path: Path, size: int
) -> None:
    path = str(tmp_path / "log.vigil")
    _log(path, 3)
    with image_reader(tmp_path, Path(path).read_bytes()[:size]) as r:
        report = r.verify()
    assert "FILE_SIZE" in report.counts and not report.intact
    assert any(f.offset == 512 for f in report.findings if f.kind == "MEDIA_CORRUPTION")


def test_a_file_shorter_than_one_superblock_copy(tmp_path: Path) -> None:
    path = str(tmp_path / "log.vigil")
    _log(path, 3)
    with pytest.raises(LogGeometryError, match="truncated"):
        image_reader(tmp_path, Path(path).read_bytes()[:100])
    with pytest.raises(NotAVigilLog):
        image_reader(tmp_path, b"not a log at all", "other.vigil")


def test_a_readable_fss_seed_is_not_called_a_private_key(tmp_path: Path) -> None:
    fss_generate(str(tmp_path / "s.fss-state"), str(tmp_path / "s.fss-seed"))
    os.chmod(tmp_path / "s.fss-seed", 0o644)
    with pytest.raises(Exception, match="FSS seed") as exc:
        FssSeed.load(tmp_path / "s.fss-seed")
    assert "private key" not in str(exc.value)


# --- the invariant, as a property ---------------------------------------------------------


def _base_log(tmp: Path, n: int, durability: str) -> tuple[bytes, list]:
    path = str(tmp / f"base-{n}-{durability}.vigil")
    if not Path(path).exists():
        _log(path, n, durability=durability)
    return Path(path).read_bytes(), records(path)


class _Bases(dict[str, tuple[bytes, list]]):
    def __repr__(self) -> str:  # hypothesis prints it with a falsifying example
        return f"<base logs {sorted(self)}>"


@pytest.fixture(scope="module")
def base_logs(tmp_path_factory: pytest.TempPathFactory) -> _Bases:
    tmp = tmp_path_factory.mktemp("base")
    return _Bases(
        {
            "unwrapped": _base_log(tmp, 100, "batch"),
            "wrapped": _base_log(tmp, 400, "batch"),
            "unwrapped-none": _base_log(tmp, 100, "none"),
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    which=st.sampled_from(["unwrapped", "wrapped", "unwrapped-none"]),
    page=st.integers(min_value=0, max_value=(R.SUPERBLOCK_AREA + 8 * SEG) // PAGE - 1),
    fill=st.one_of(st.just(b"\x00"), st.just(b"\xff"), st.binary(min_size=1, max_size=64)),
)
def test_no_page_can_vanish_silently(
    base_logs: _Bases, tmp_path: Path, which: str, page: int, fill: bytes
) -> None:
    """Zero or garble any 4 KiB page: the log is never INTACT with records missing, unless
    they are evicted provably or are a tail that no surviving record vouches durable."""
    original, before = base_logs[which]
    image = bytearray(original)
    image[page * PAGE : (page + 1) * PAGE] = (fill * (PAGE // len(fill) + 1))[:PAGE]
    path = tmp_path / f"p-{which}-{page}.vigil"
    path.write_bytes(bytes(image))
    try:
        with LogReader(str(path)) as r:
            report = r.verify()
            after = list(r.records())
    except VigilError:
        return  # refused outright (both superblock copies gone): not INTACT
    if not report.intact:
        return
    missing = {x.seq for x in before} - {x.seq for x in after}
    if not missing:
        return
    newest = max((x.seq for x in after), default=0)
    vouched = max(
        (int.from_bytes(image[x.offset + 24 : x.offset + 32], "little") for x in after),
        default=0,
    )
    assert min(missing) > newest and min(missing) > vouched, (
        f"silent loss of {sorted(missing)[:5]}.. (newest {newest}, vouched {vouched}): "
        f"{report.findings}"
    )


# --- FORMAT.md as written: where findings point, JSON forms --------------------------------


def test_a_range_of_one_record_has_no_last_seq(tmp_path: Path) -> None:
    """§6: ``last_seq`` only for ranges of two or more; one deleted record is ``seq`` alone."""
    path = str(tmp_path / "log.vigil")
    recs = _log(path, 10)
    image = bytearray(Path(path).read_bytes())
    a, b = recs[3].offset, recs[4].offset  # delete record 4, shift the rest up
    seg_end = _seg_base(recs[3].segment + 1)
    del image[a:b]
    image[seg_end - (b - a) : seg_end - (b - a)] = bytes(b - a)
    with image_reader(tmp_path, image) as r:
        report = r.verify()
    (finding,) = [f for f in report.findings if f.kind == "TAMPERING"]
    assert finding.seq == 4 and finding.last_seq is None, finding
    assert finding.offset == recs[4].offset - (b - a)  # the record after the missing one
    assert "last_seq" not in finding.to_json()


def test_an_unknown_record_type_is_an_integer_in_json() -> None:
    """§9: ``type`` is the type's name, or an integer when unknown (not "TYPE_9")."""
    rec = LogRecord(
        seq=1,
        type=9,
        body={"raw": b"\x01"},
        segment=0,
        offset=5120,
        lap=1,
        boot_id=1,
        mono_ns=0,
        real_ns=0,
        chain=bytes(32),
    )
    assert rec.to_json()["type"] == 9 and rec.to_json()["raw"] == "01"
    assert rec.type_name == "TYPE_9"  # the table form keeps a readable label


# --- any JSON a record or an anchor holds: nested deeper than the interpreter's stack ----

DEEP = "[" * 2000 + "]" * 2000  # json recurses once a level: ~1000 is the limit


def test_a_deep_digester_annotation_declares_no_bound(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    with FlightRecorder.create(path, SMALL, clock=FakeClock()) as w:
        w.annotate("vigil.digester", DEEP)  # the public API, nothing forged
        seq = w.record_inference(
            request_id=bytes(16), model_digest=bytes(32), input_digest=bytes(32),
            output_digest=bytes(32), state=1, served_by=1, outcome=0, latency_ns=1,
            deadline_ns=2, flags=CallFlags.DIGEST_FOLLOWS,
        )  # fmt: skip
    with LogReader(str(path)) as r:
        report = r.verify()  # was RecursionError
    assert [(f.kind, f.seq) for f in report.findings] == [("DIGEST_MISSING", seq)]


def test_a_deep_opened_detail_is_read_as_no_detail(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    lifecycle = R.BODIES[RecordType.LIFECYCLE]
    with FlightRecorder.create(path, SMALL, clock=FakeClock()) as w:
        body = {**next(iter(records(str(path)))).body, "detail": DEEP}
        w.append(RecordType.LIFECYCLE, lifecycle.pack(body))  # a second OPENED, re-sealed
        infer(w, 0)
    with LogReader(str(path)) as r:
        assert list(clock_steps(r.records())) == []  # was RecursionError
    out = tmp_path / "export"
    done = _cli("export", "--to", str(out), str(path))
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr


def test_a_deep_anchor_file_is_not_an_anchor(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    with pytest.raises(UsageError, match="not a vigil anchor") as exc:
        Anchor.load(deep)  # was RecursionError
    assert exc.value.code == "DIA-1002"
