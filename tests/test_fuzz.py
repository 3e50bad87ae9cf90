"""For any bytes at all, the reader returns records or a report, or raises a VigilError --
never anything else -- and what it returns is always well formed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vigil.auditlog import LogReader, format_image
from vigil.errors import VigilError
from vigil.schemas import _records as R

from conftest import SMALL, FakeClock, examples, infer, memory_log


def _base_log() -> bytes:
    w, disk = memory_log(SMALL, durability="none")
    for i in range(300):  # wraps once: stale laps, eviction
        infer(w, i, payload=bytes(i % 40))
        if i == 120:
            w.freeze(1, 40)
        if i % 97 == 0:
            w.annotate("k", "x" * i)
    w.close()
    return bytes(disk.buf)


BASE = _base_log()
EMPTY = bytes(format_image(SMALL, created_ns=1))
SCRATCH = Path(tempfile.mkdtemp(prefix="vigil-fuzz-"))


def _read_everything(data: bytes) -> None:
    path = SCRATCH / "fuzz.vigil"
    path.write_bytes(data)
    try:
        with LogReader(str(path)) as r:
            got = list(r.records())
            report = r.verify(max_findings=50)
            slow = r.verify(max_findings=50, fast=False)
            r.inspect()
    except VigilError:
        return
    assert (report.findings, report.counts, report.records, report.first_seq, report.last_seq) == (
        slow.findings,
        slow.counts,
        slow.records,
        slow.first_seq,
        slow.last_seq,
    )
    seqs = [x.seq for x in got]
    assert seqs == sorted(set(seqs))  # ascending, no duplicates
    assert report.records == len(got)
    assert len(report.findings) <= 50
    assert sum(report.counts.values()) == len(report.findings) + report.findings_dropped
    for x in got:
        assert isinstance(x.body, dict)
        x.to_json()


SETTINGS = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.requirement("SR-013")
@SETTINGS
@given(st.binary(max_size=20_000))
def test_arbitrary_bytes(data: bytes) -> None:
    _read_everything(data)


@SETTINGS
@given(st.binary(max_size=4096))
def test_a_valid_superblock_over_arbitrary_segments(tail: bytes) -> None:
    data = bytearray(EMPTY)
    data[R.SUPERBLOCK_AREA : R.SUPERBLOCK_AREA + len(tail)] = tail
    _read_everything(bytes(data))


@pytest.mark.requirement("SR-013")
@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), max_size=40),
    st.integers(0, len(BASE)),
)
def test_a_real_log_with_random_bytes_changed_and_truncated(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(BASE)
    for pos, value in edits:
        data[pos] = value
    _read_everything(bytes(data[: max(cut, len(BASE) // 2)]))


@SETTINGS
@given(
    st.integers(R.SUPERBLOCK_AREA, len(BASE) - 1),
    st.integers(1, 600),
    st.integers(R.SUPERBLOCK_AREA, len(BASE) - 1),
    st.booleans(),
)
# A random draw found it: a 472-byte span duplicated in place made the reader yield seq 299 twice.
@example(src=46256, n=472, dst=46256, insert=True)
def test_a_real_log_with_spans_moved_inserted_or_deleted(
    src: int, n: int, dst: int, insert: bool
) -> None:
    data = bytearray(BASE)
    chunk = bytes(data[src : src + n])
    if insert:
        data[dst:dst] = chunk
        del data[-len(chunk) :]
    else:
        del data[dst : dst + n]
        data += bytes(n)
    _read_everything(bytes(data))


def test_the_base_log_is_sound() -> None:
    path = SCRATCH / "base.vigil"
    path.write_bytes(BASE)
    with LogReader(str(path)) as r:
        report = r.verify()
    assert report.intact and report.records > 100 and set(report.counts) == {"EVICTED"}
    assert FakeClock().source.name == "INJECTED"
