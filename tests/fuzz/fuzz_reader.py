"""Fuzz the flight-log reader: LogReader (records, tail, inspect, clock steps), verify (fast and
slow), replay and the restore a supervisor reads at start, on mutated golden, sealed and
supervisor logs.

Input: one option byte, then the log file's bytes. Option bit 0 re-seals every record's CRC
after mutation (walking each segment's records by their lengths), so that mutated headers and
bodies get past the CRC and reach the body decoders, the seal checker and replay; bit 1 also
runs the slow verify and compares it with the fast one.

    python tests/fuzz/fuzz_reader.py -max_total_time=600 tests/fuzz/corpus/reader
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fuzzing import instrumenting, main, scratch_dir

with instrumenting(__name__):
    from vigil.auditlog import LogReader, clock_steps, crc32c
    from vigil.auditlog import _format as F
    from vigil.errors import VigilError
    from vigil.fsm import Policy
    from vigil.schemas import _records as R
    from vigil.supervisor import replay
    from vigil.supervisor._restore import restore_snapshot

SCRATCH = scratch_dir()
_FIX_CRC, _SLOW = 1, 2
_POLICY = Policy()


def reseal(image: bytearray) -> None:
    """Recompute the CRC of every record that a walk by lengths finds in each segment."""
    try:
        with LogReader(_write(bytes(image))) as r:
            geo = r.geometry
    except VigilError:
        return
    for i in range(geo.segment_count):
        start = geo.segment_offset(i)
        end = min(start + geo.segment_size, len(image))
        pos = start + geo.header_area
        while pos + R.HEADER_SIZE <= end:
            length = int.from_bytes(image[pos : pos + 4], "little")
            body_len = int.from_bytes(image[pos + 4 : pos + 6], "little")
            if length < R.MIN_RECORD or length != (92 + body_len + 7) & ~7 or pos + length > end:
                break
            crc = crc32c(bytes(image[pos : pos + length - 4]))
            image[pos + length - 4 : pos + length] = crc.to_bytes(4, "little")
            pos += length


def _write(image: bytes) -> Path:
    path = SCRATCH / "fuzz.vigil"
    path.write_bytes(image)
    return path


def one_input(data: bytes) -> None:
    if not data:
        return
    options, image = data[0], bytearray(data[1:])
    if options & _FIX_CRC:
        reseal(image)
    path = _write(bytes(image))
    try:
        with LogReader(path) as r:
            got = list(r.records())
            for rec in got:
                rec.to_json()
            seqs = [x.seq for x in got]
            assert seqs == sorted(set(seqs)), "records() out of order or repeated"
            list(r.tail(min_segments=2))
            report = r.verify(max_findings=20)
            report.to_json()
            assert report.records == len(got), (report.records, len(got))
            if options & _SLOW:
                slow = r.verify(max_findings=20, fast=False)
                assert (report.findings, report.counts) == (slow.findings, slow.counts)
            r.inspect()
            list(clock_steps(r.records()))
    except VigilError:
        pass
    with contextlib.suppress(VigilError):
        replay(path, max_findings=20).to_json()
    restore_snapshot(path, _POLICY, 1 << 62)  # what a supervisor reads at start: never raises


assert F  # the format module is imported instrumented: its parsers are what is fuzzed

if __name__ == "__main__":
    main(one_input)
