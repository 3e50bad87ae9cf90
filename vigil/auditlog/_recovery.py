"""Recovery at open: find the head, cut a torn tail, prepare the append position.

The head is the live segment with the highest generation; its records are scanned to the last
one that continues the chain. If nothing valid of the current lap follows, the torn bytes are
zeroed and the writer resumes in place; if valid records follow a damaged one, they are left
as evidence and the writer resumes in a fresh segment. Either way the recovered log is a
prefix of what was appended. Work is O(segments): one header page per segment, then the head
segment (docs/RECORDER.md).
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from typing import Any

from vigil.auditlog import _format as F
from vigil.auditlog._ring import RingIndex
from vigil.auditlog._storage import Storage
from vigil.errors import LogCorrupt, LogGeometryError, LogVersionError
from vigil.schemas import _records as R


class Recovery:
    """The recovery half of :class:`~vigil.auditlog.FlightRecorder` (a mixin: the state it
    sets is the writer's own)."""

    path: str
    geometry: F.Geometry
    _storage: Storage
    _buf: Any
    _view: memoryview
    _genesis: bytes
    _max_record: int
    _max_body: int
    _segs: list[F.SegmentInfo]
    _ring: RingIndex
    _head: F.SegmentInfo | None
    _next_seq: int
    _chain: bytes
    _pos: int
    _seg_start: int
    _seg_end: int
    _lap: int

    def _recover_without_readahead(self) -> dict[str, Any]:
        """Recovery reads one page per segment and then the head segment. With the kernel's
        readahead on, opening a 1 GiB ring with a cold page cache read the whole file (~0.5 s
        here); with readahead off, one synchronous read per page (~0.13 s). So: readahead
        off, and every page recovery will need requested up front, asynchronously."""
        if not hasattr(self._buf, "madvise") or not hasattr(mmap, "MADV_WILLNEED"):
            return self._recover()
        self._advise(mmap.MADV_RANDOM, 0, len(self._buf))
        try:
            return self._recover()
        finally:
            self._advise(mmap.MADV_NORMAL, 0, len(self._buf))

    def _advise(self, advice: int, start: int, length: int) -> None:
        """``madvise`` on the mapping, when storage is a mapping (never fails recovery)."""
        madvise = getattr(self._buf, "madvise", None)
        if madvise is not None:
            with contextlib.suppress(OSError, ValueError):
                madvise(advice, start, length)

    def _recover(self) -> dict[str, Any]:
        """Find the head, cut a torn tail, and prepare the append position."""
        buf = self._buf
        raw = bytes(buf[: R.SUPERBLOCK_AREA])
        self.geometry, sb_problems = F.read_superblock(raw, len(buf), self.path)
        geo = self.geometry
        if geo.minor > R.FORMAT_MINOR:
            raise LogVersionError(
                f"{self.path}: written by a newer vigil (format {R.FORMAT_MAJOR}."
                f"{geo.minor}); this one writes {R.FORMAT_MAJOR}.{R.FORMAT_MINOR} and would "
                "drop what it does not know. Read it, or write with the newer vigil",
                path=self.path,
            )
        if len(buf) != geo.file_size:
            raise LogGeometryError(
                f"{self.path}: file is {len(buf)} bytes, geometry says {geo.file_size}; "
                "refusing to write to a resized log",
                path=self.path,
            )
        self._genesis = F.genesis_chain(geo.log_id)
        if hasattr(mmap, "MADV_WILLNEED"):
            for i in range(geo.segment_count):  # queue every header page read at once
                self._advise(mmap.MADV_WILLNEED, geo.segment_offset(i), F.PAGE)
        self._max_record = geo.max_record
        self._max_body = min(R.MAX_BODY, geo.max_record - F.OVERHEAD)
        self._segs = [
            F.read_segment_info(buf, geo.segment_offset(i), geo.segment_size, i, geo)
            for i in range(geo.segment_count)
        ]
        report: dict[str, Any] = {}
        if sb_problems:
            report["superblock"] = [p.reason for p in sb_problems]
        damaged = {s.index: s.status for s in self._segs if s.status in ("salvaged", "unreadable")}
        if damaged:
            report["damaged_segments"] = damaged
        self._ring = RingIndex(self._segs)
        live = [s for s in self._segs if s.live]
        if not live:
            self._head: F.SegmentInfo | None = None
            self._next_seq = 1
            self._chain = self._genesis
            self._pos = self._seg_end = self._seg_start = 0
            self._lap = 0
            return report
        head = max(live, key=lambda s: (s.generation, s.index))
        self._set_head(head)
        if hasattr(mmap, "MADV_WILLNEED"):
            self._advise(mmap.MADV_WILLNEED, self._seg_start, geo.segment_size)
        tail = F.scan_tail(buf, self._seg_start, geo.segment_size, head, geo.header_area)
        if tail.chain is None:  # a salvaged head always has a readable first record
            raise LogCorrupt(f"{self.path}: head segment {head.index} has no chain anchor")
        end = self._seg_start + tail.end
        self._next_seq, self._chain, self._pos = tail.last_seq + 1, tail.chain, end
        where = {"segment": head.index, "offset": tail.end}
        if tail.orphans:
            # Records the writer never acknowledged follow the tear: leave them as evidence
            # and continue in a fresh segment.
            self._pos = self._seg_end
            report["abandoned_segment"] = where
        elif tail.tear is not None:
            report["torn_tail"] = {**where, "bytes_zeroed": self._zero_torn(end)}
        return report

    def _zero_torn(self, end: int) -> int:
        """Zero the torn bytes after ``end`` so that no fragment of them outlives the next
        records: the torn record's declared span, at least to the end of its page."""
        length = struct.unpack_from("<I", self._view, end)[0] if end + 4 <= self._seg_end else 0
        stop = end + (length if 0 < length <= self._seg_end - end else 0)
        stop = min(max(stop, (end // F.PAGE + 1) * F.PAGE), self._seg_end)
        self._view[end:stop] = bytes(stop - end)
        self._storage.sync(end, stop - end)
        return stop - end

    def _set_head(self, seg: F.SegmentInfo) -> None:
        geo = self.geometry
        self._head = seg
        self._seg_start = geo.segment_offset(seg.index)
        self._seg_end = self._seg_start + geo.segment_size
        self._pos = self._seg_start + geo.header_area
        self._lap = seg.generation
