"""Reading a flight log: records in sequence order, geometry, and verification.

The reader never writes and takes no lock, so it can open a log a writer is appending to. It
reads with ``pread`` rather than a mapping: a file truncated underneath a mapping turns reads
into SIGBUS, which no Python code can catch, while a short ``pread`` is just data the
verifier reports. Memory stays bounded by one segment.

Contract: for any bytes at all, :class:`LogReader` returns records or a report, or raises a
:class:`~vigil.errors.VigilError` subclass -- never anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import fcntl
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vigil._files import open_regular
from vigil.auditlog import _format as F
from vigil.auditlog._digestcheck import BODY_TYPES as DIGEST_BODIES
from vigil.auditlog._digestcheck import DigestChecker
from vigil.auditlog._seal import FssSeed
from vigil.auditlog._sealcheck import Anchor, SealChecker
from vigil.auditlog._unused import first_nonzero, stray_records
from vigil.auditlog._verify import FindingSink, VerifyReport, Walker
from vigil.errors import InvalidArgument, LogIOError
from vigil.keys import PublicKey
from vigil.schemas import _records as R
from vigil.schemas._enums import RecordType, coerce

_SEAL_BODIES = (int(RecordType.CHECKPOINT), int(RecordType.LIFECYCLE))


@dataclass(frozen=True)
class LogRecord:
    """One record of the log, decoded.

    Attributes:
        seq: sequence number (1, 2, ...).
        type: the record type (an int when unknown to this version).
        body: decoded body fields; for an unknown type or version ``{"raw": bytes}``, for a
            body that does not decode ``{"raw": bytes, "undecodable": reason}``.
        segment, offset: where the record lies (file offset).
        lap, boot_id, mono_ns, real_ns: header fields (see docs/FORMAT.md).
        chain: the record's SHA-256 chain digest.
    """

    seq: int
    type: RecordType | int
    body: dict[str, Any]
    segment: int
    offset: int
    lap: int
    boot_id: int
    mono_ns: int
    real_ns: int
    chain: bytes

    @property
    def type_name(self) -> str:
        return self.type.name if isinstance(self.type, RecordType) else f"TYPE_{self.type}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: bytes as hex, enums by name."""
        return {
            "seq": self.seq,
            "type": self.type.name if isinstance(self.type, RecordType) else self.type,
            "real_ns": self.real_ns,
            "mono_ns": self.mono_ns,
            "boot_id": f"{self.boot_id:016x}",
            "lap": self.lap,
            "segment": self.segment,
            "offset": self.offset,
            "chain": self.chain.hex(),
            **{k: _jsonable(v) for k, v in self.body.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.name
    return value


def decode_body(rtype: int, version: int, body: bytes) -> dict[str, Any]:
    """Decode a record body; never raises (see :class:`LogRecord` ``body``)."""
    kind = coerce(RecordType, rtype)
    if not isinstance(kind, RecordType):
        return {"raw": body}
    if version == R.BODY_VERSION:
        layout = R.BODIES.get(kind)
    elif version == R.BODY_VERSION_TRACED:
        layout = R.TRACED_BODIES.get(kind)
    else:
        layout = None
    if layout is None:
        return {"raw": body}
    try:
        return layout.unpack(body)
    except InvalidArgument as exc:
        if kind is RecordType.CHECKPOINT:  # a 1.0 log's reserved, opaque checkpoint body
            with contextlib.suppress(InvalidArgument):
                return R.LEGACY_CHECKPOINT.unpack(body)
        return {"raw": body, "undecodable": exc.message}


class LogReader:
    """A read-only view of a flight log file.

    Raises (from the constructor):
        LogIOError: the file cannot be opened or read.
        NotAVigilLog, SuperblockCorrupt, LogVersionError, LogGeometryError: see
            :mod:`vigil.errors`; the message says what to do.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._fd = open_regular(self.path, "flight log")
        except OSError as exc:
            raise LogIOError(
                f"{self.path}: cannot open: {exc.strerror}", path=self.path, errno=exc.errno
            ) from exc
        try:
            self.live = _locked(self._fd)
            size = os.fstat(self._fd).st_size
            head = self._pread(R.SUPERBLOCK_AREA, 0)
            self.geometry, self._sb_problems = F.read_superblock(
                head, size, self.path, allow_short=True
            )
            self.file_size = size
            self._sb_spare_dirty = any(
                head[R.SUPERBLOCK.fixed_size : R.SUPERBLOCK_SLOTS[1]]
            ) or any(head[R.SUPERBLOCK_SLOTS[1] + R.SUPERBLOCK.fixed_size :])
            self._spare_dirty: set[int] = set()
            present = list(self._present_segments())
            self.segments = [self._read_info(i) for i in present]
            geo = self.geometry
            in_file = min(
                geo.segment_count, _ceil_div(size - geo.segments_offset, geo.segment_size)
            )
            self.segments_beyond_eof = geo.segment_count - max(in_file, 0)
            self.segments_in_holes = geo.segment_count - self.segments_beyond_eof - len(present)
        except BaseException:
            os.close(self._fd)
            raise

    def _present_segments(self) -> Iterator[int]:
        """Indices of the segments that hold any byte of the file, in order.

        Work and memory are bounded by the bytes actually present: a file shorter than its
        geometry has no segments past its end (verify reports the truncation), and segments
        that lie entirely in holes of a sparse file (``SEEK_DATA``) read as zeros -- never
        started -- so they are neither read nor given a :class:`SegmentInfo` (inspect counts
        them as empty). A 4 KiB file claiming 2^24 segments costs nothing.
        """
        geo = self.geometry
        start = geo.segments_offset
        end = min(self.file_size, geo.file_size)
        last = -1
        for lo, hi in _data_extents(self._fd, start, end):
            first = max((lo - start) // geo.segment_size, last + 1)
            stop = (hi - 1 - start) // geo.segment_size
            yield from range(first, stop + 1)
            last = max(last, stop)

    def _pread(self, n: int, offset: int) -> bytes:
        try:
            return os.pread(self._fd, n, offset)
        except OSError as exc:
            raise LogIOError(
                f"{self.path}: read of {n} bytes at {offset} failed: {exc.strerror}",
                path=self.path,
                errno=exc.errno,
            ) from exc

    def _data_end(self, start: int, size: int) -> int:
        """Bytes of ``[start, start + size)`` up to the end of its last data extent: what
        must be read of it (a hole reads as zeros; zeros after the last data are the same as
        no bytes to every scan)."""
        end = 0
        for _, hi in _data_extents(self._fd, start, start + size):
            end = hi - start
        return end

    def _first_data_nonzero(self, start: int, size: int) -> int:
        """Offset (from ``start``) of the first non-zero byte of ``[start, start + size)``,
        or -1; reads only its data extents, a chunk at a time (holes read as zeros)."""
        for lo, hi in _data_extents(self._fd, start, start + size):
            pos = lo
            while pos < hi:
                chunk = self._pread(min(_CHUNK, hi - pos), pos)
                if not chunk:
                    break
                if chunk.count(0) != len(chunk):
                    return pos - start + first_nonzero(chunk, 0, len(chunk))
                pos += len(chunk)
        return -1

    def _read_info(self, index: int) -> F.SegmentInfo:
        geo = self.geometry
        off = geo.segment_offset(index)
        raw = self._pread(geo.header_area + F.PAGE, off)
        if len(raw) < geo.header_area:
            return F.SegmentInfo(index=index, status="missing")
        at = geo.header_area
        if len(raw) >= at + F.HDR_SIZE:
            length = int.from_bytes(raw[at : at + 4], "little")
            if F.PAGE < length <= geo.max_record:
                raw = self._pread(geo.header_area + length, off)
        n = R.SEGMENT_HEADER.fixed_size
        if any(raw[n : R.SEGMENT_SLOTS[1]]) or any(raw[R.SEGMENT_SLOTS[1] + n : at]):
            self._spare_dirty.add(index)
        info = F.read_segment_info(raw, 0, min(geo.segment_size, len(raw)), index, geo)
        # the slots' offsets are relative to the segment: findings give file offsets
        info.problems = [dataclasses.replace(p, offset=off + p.offset) for p in info.problems]
        return info

    def _load(self, info: F.SegmentInfo) -> tuple[bytes, int, F.SegmentInfo] | None:
        """A segment's bytes, up to its last byte of data (holes after it read as zeros,
        where every scan ends as it does at the buffer's end: they are not read)."""
        geo = self.geometry
        off = geo.segment_offset(info.index)
        size = max(self._data_end(off, geo.segment_size), geo.header_area)
        raw = self._pread(size, off)
        fresh = F.read_segment_info(raw, 0, len(raw), info.index, geo)
        if fresh.generation != info.generation or fresh.status != info.status:
            return None
        return raw, 0, fresh

    # --- public API ---------------------------------------------------------------------

    def records(
        self,
        *,
        since_seq: int | None = None,
        until_seq: int | None = None,
        types: Iterable[RecordType] | None = None,
    ) -> Iterator[LogRecord]:
        """Yield the log's records in sequence order, decoded.

        Damaged bytes are skipped (run :meth:`verify` to learn why); a torn tail is never
        returned.

        Args:
            since_seq, until_seq: inclusive bounds on the sequence number.
            types: only these record types.
        """
        return self._decoded(self.segments, since_seq, until_seq, types)

    def tail(
        self,
        *,
        since_real_ns: int | None = None,
        min_segments: int = 1,
        types: Iterable[RecordType] | None = None,
    ) -> Iterator[LogRecord]:
        """Yield the newest records only, in order, reading as few segments as it can.

        Starts ``min_segments`` segments back from the head, and further back while segments
        were started after ``since_real_ns`` (CLOCK_REALTIME): every record written since
        then is included (and possibly some older ones).
        """
        live = sorted((s for s in self.segments if s.live), key=lambda s: s.generation)
        k = max(0, len(live) - max(1, min_segments))
        if since_real_ns is not None:
            while k > 0 and live[k].created_ns > since_real_ns:
                k -= 1
        return self._decoded(live[k:], None, None, types)

    def _decoded(
        self,
        segments: list[F.SegmentInfo],
        since_seq: int | None,
        until_seq: int | None,
        types: Iterable[RecordType] | None,
    ) -> Iterator[LogRecord]:
        wanted = {int(t) for t in types} if types is not None else None
        walker = Walker(self.geometry, segments, self._load, FindingSink(0))
        for raw in walker.walk():
            if since_seq is not None and raw.seq < since_seq:
                continue
            if until_seq is not None and raw.seq > until_seq:
                break
            if wanted is not None and raw.type not in wanted:
                continue
            seg, buf = walker.current_segment, walker.current_buffer
            body_at = walker.current_base + raw.offset + R.HEADER_SIZE
            yield LogRecord(
                seq=raw.seq,
                type=coerce(RecordType, raw.type),
                body=decode_body(raw.type, raw.body_version, buf[body_at : body_at + raw.body_len]),
                segment=seg,
                offset=self.geometry.segment_offset(seg) + raw.offset,
                lap=raw.lap,
                boot_id=raw.boot_id,
                mono_ns=raw.mono_ns,
                real_ns=raw.real_ns,
                chain=raw.chain,
            )

    def verify(
        self,
        max_findings: int = 1000,
        *,
        fast: bool = True,
        public_key: PublicKey | None = None,
        fss_seed: FssSeed | None = None,
        anchor: Anchor | None = None,
    ) -> VerifyReport:
        """Check every CRC, chain link, sequence number, timestamp and header, and for a
        sealed log (or when a key, seed or anchor is given) every checkpoint.

        Args:
            max_findings: findings kept in the report; the rest are only counted.
            fast: check clean segments in a tight loop; False classifies every record the
                slow way (the two must agree: the tests compare them).
            public_key: the device's signing key: checkpoint signatures are verified.
            fss_seed: the forward-secure seed: checkpoint tags are verified.
            anchor: a checkpoint kept elsewhere: the log must reach it and hold it.

        Returns:
            A :class:`~vigil.auditlog.VerifyReport`; ``intact`` is False on any finding that
            normal operation (crash, wrap-around) does not explain.
        """
        start = time.perf_counter()
        sink = FindingSink(max_findings)
        for p in self._sb_problems:
            sink.add("MEDIA_CORRUPTION", f"superblock copy {p.slot}: {p.reason}", offset=p.offset)
        if self._sb_spare_dirty:
            sink.add("MEDIA_CORRUPTION", "non-zero bytes in the superblock's unused area")
        geo = self.geometry
        if self.file_size < geo.file_size:
            first = (self.file_size - geo.segments_offset) // geo.segment_size
            sink.add(
                "FILE_SIZE",
                f"the file is {self.file_size} bytes but its geometry needs {geo.file_size}: "
                f"it was truncated; segments from {max(first, 0)} on are partial or missing",
                offset=self.file_size,
            )
        elif self.file_size > geo.file_size:
            sink.add(
                "FILE_SIZE",
                f"the file is {self.file_size} bytes, {self.file_size - geo.file_size} more than "
                "its geometry: bytes were appended to it (they are not read)",
                offset=geo.file_size,
            )
        seals: SealChecker | None = None
        if geo.sealed or public_key or fss_seed or anchor:
            seals = SealChecker(geo, sink, public_key=public_key, fss_seed=fss_seed, anchor=anchor)
        self._check_header_spares(sink)
        digests = DigestChecker(sink, geo) if geo.minor >= R.MINOR_DIGESTS else None
        walker = Walker(
            self.geometry,
            self.segments,
            self._load,
            sink,
            yield_records=not fast or seals is not None or digests is not None,
        )
        if seals is None and digests is None:
            v12 = self._walk_legacy(walker)
        else:
            v12 = self._check_bodies(walker, seals, digests)
        if v12 is not None:  # a 1.0 / 1.1 superblock over a 1.2 record: §6.2 applies anyway
            sink.add(
                "TAMPERING",
                f"the superblock says format {R.FORMAT_MAJOR}.{geo.minor}, but record {v12} "
                "is one only format 1.2 writes (a writer raises the minor, synced, before its "
                "first such record): the superblock was rewritten to an older minor",
                seq=v12,
            )
            again = Walker(self.geometry, self.segments, self._load, FindingSink(0))
            self._check_bodies(again, None, DigestChecker(sink, geo))
        self._check_unused(sink, walker)
        seal_report = seals.finish() if seals is not None else None
        return VerifyReport(
            path=self.path,
            log_id=geo.log_id.hex(),
            live=self.live,
            intact=sink.intact,
            records=walker.records,
            bytes=walker.bytes,
            segments=walker.segments_scanned,
            first_seq=walker.first_seq,
            last_seq=walker.last_seq,
            findings=tuple(sink.kept),
            counts=dict(sink.counts),
            findings_dropped=sink.dropped,
            seconds=time.perf_counter() - start,
            seals=seal_report,
            retained_from=walker.retained_from,
            retention=walker.retention,
        )

    @staticmethod
    def _walk_legacy(walker: Walker) -> int | None:
        """The walk of a log whose superblock says 1.0 or 1.1 (clean segments in the fast
        path, which stops at a 1.2 record): the seq of the first record only format 1.2
        writes, or None."""
        first = None
        for raw in walker.walk():
            if first is None and _is_v12(raw, walker):
                first = raw.seq
        return first

    @staticmethod
    def _check_bodies(
        walker: Walker, seals: SealChecker | None, digests: DigestChecker | None
    ) -> int | None:
        """The walk, with the checks that read record bodies: checkpoints (a sealed log) and
        deferred output digests (format 1.2). Without ``digests`` (a 1.0 / 1.1 superblock):
        the seq of the first record only format 1.2 writes, or None."""
        first = None
        for raw in walker.walk():
            body = None
            if raw.type in _SEAL_BODIES or (digests is not None and raw.type in DIGEST_BODIES):
                at = walker.current_base + raw.offset + R.HEADER_SIZE
                body = bytes(walker.current_buffer[at : at + raw.body_len])
            if seals is not None:
                seals.see(raw, body if raw.type in _SEAL_BODIES else None)
            if digests is not None and body is not None and raw.type in DIGEST_BODIES:
                digests.see(raw, body, walker.current_segment)
            elif digests is None and first is None and _is_v12(raw, walker):
                first = raw.seq
        if digests is not None:
            digests.finish()
        return first

    def _check_header_spares(self, sink: FindingSink) -> None:
        for info in self.segments:
            if info.index in self._spare_dirty and info.status != "unreadable":
                sink.add(
                    "MEDIA_CORRUPTION",
                    f"segment {info.index}: non-zero bytes in the header area's unused space "
                    "(outside the two 128-byte header copies)",
                    segment=info.index,
                    offset=self.geometry.segment_offset(info.index),
                )

    def _check_unused(self, sink: FindingSink, walker: Walker) -> None:
        """A never-started segment must be zeros; records in one have left the log, unless
        they are what a crash leaves: nothing vouches them durable, and the log holds every
        seq they name that it should (the writer rewrote those after recovery)."""
        geo = self.geometry
        newest = walker.last_seq or 0
        for info in self.segments:
            if info.status != "empty":
                continue
            base = geo.segment_offset(info.index) + geo.header_area
            size = geo.segment_size - geo.header_area
            at = self._first_data_nonzero(base, size)
            if at < 0:  # the common case: zeros, or holes that read as zeros
                continue
            page = at & ~(F.PAGE - 1)  # records are 8-aligned and start in a page with data
            raw = self._pread(self._data_end(base, size) - page, base + page)
            nz = at - page
            where = {"segment": info.index, "offset": base + at}
            found = stray_records(raw, nz, len(raw))
            if not found:
                sink.add(
                    "MEDIA_CORRUPTION",
                    f"segment {info.index} was never started (no header, no first record) "
                    f"yet holds non-zero bytes from file offset {base + nz}; a never-started "
                    "segment is all zeros",
                    **where,
                )
                continue
            first, last, lap = found[0].seq, found[-1].seq, found[0].lap
            vouched = max(r.durable_seq for r in found)
            what = f"{len(found)} valid record(s) {first}..{last} of lap {lap}"
            if vouched <= newest and walker.holds(first, min(last, newest)):
                sink.add(
                    "SUPERSEDED",
                    f"segment {info.index} has no header but holds {what}: a crash before "
                    "its header reached the disk; nothing vouches they were durable and the "
                    "log lacks none of them, so they are not part of the log",
                    seq=first,
                    last_seq=last,
                    **where,
                )
                continue
            lo = newest + 1 if first > newest else first
            sink.add(
                "MEDIA_CORRUPTION",
                f"segment {info.index} reads as never started (its header and first records "
                f"are destroyed) but holds {what}"
                + (f", vouching records up to {vouched} durable" if vouched > newest else "")
                + f": records {lo}..{last} are missing from the log",
                seq=lo,
                last_seq=last,
                **where,
            )

    def inspect(self) -> dict[str, Any]:
        """Geometry, head, retained range, segment states and wear, as a JSON-ready dict.

        Cheap: reads the segment headers and scans only the head segment.
        """
        geo = self.geometry
        live = sorted((s for s in self.segments if s.live), key=lambda s: s.generation)
        head: dict[str, Any] | None = None
        if live:
            h = live[-1]
            loaded = self._load(h)
            if loaded is not None:
                raw, base, fresh = loaded
                tail = F.scan_tail(raw, base, len(raw), fresh, geo.header_area)
                after = None
                if tail.orphans:
                    after = "a tear followed by records the writer never acknowledged"
                elif tail.tear is not None:
                    after = "an unfinished (torn) write"
                head = {
                    "segment": h.index,
                    "generation": h.generation,
                    "last_seq": tail.last_seq,
                    "end_offset": geo.segment_offset(h.index) + tail.end,
                    "retained_from": h.retained_from,
                    "after": after,
                }
        counts = Counter(s.status for s in self.segments)
        counts["empty"] += self.segments_in_holes  # never read: all zeros
        counts["missing"] += self.segments_beyond_eof
        counts = +counts
        frozen = [s.index for s in self.segments if s.frozen]
        used = [s for s in self.segments if s.status != "missing"]
        return {
            "path": self.path,
            "log_id": geo.log_id.hex(),
            "live": self.live,
            "format": f"{R.FORMAT_MAJOR}.{geo.minor}",
            "created_ns": geo.created_ns,
            "geometry": {
                "file_size": geo.file_size,
                "segments_offset": geo.segments_offset,
                "segment_size": geo.segment_size,
                "segment_count": geo.segment_count,
                "frozen_quota": geo.frozen_quota,
                "truncated": self.file_size < geo.file_size,
            },
            "head": head,
            "first_seq": live[0].first_seq if live else None,
            "segments": {
                "counts": dict(sorted(counts.items())),
                "frozen": frozen,
                "wear": _wear([s.wear for s in used]),
                "wear_unfrozen": _wear([s.wear for s in used if not s.frozen]),
                "table": [
                    {
                        "index": s.index,
                        "status": s.status,
                        "generation": s.generation,
                        "wear": s.wear,
                        "first_seq": s.first_seq,
                        "frozen": s.frozen,
                    }
                    for s in self.segments
                ],
            },
        }

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _locked(fd: int) -> bool:
    """True when a writer holds the log (a shared, non-blocking probe on our own open)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


_CHUNK = 1 << 20  # bytes read at a time when looking for data in a never-started segment


def _data_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` ranges of ``[start, end)`` that hold data (not holes), in order.

    Uses ``SEEK_DATA``/``SEEK_HOLE``; where the file system cannot tell, the whole range.
    """
    if start >= end:
        return
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        yield start, end
        return
    pos = start
    while pos < end:
        try:
            lo = os.lseek(fd, pos, seek_data)
            hi = os.lseek(fd, lo, seek_hole)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            yield pos, end  # not supported here: treat everything as data
            return
        if lo >= end:
            return
        yield lo, min(hi, end)
        pos = hi


def _wear(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}


def _is_v12(raw: F.RawRecord, walker: Walker) -> bool:
    """Whether the record being walked is one only format 1.2 writes (:func:`F.is_v12`)."""
    if raw.type not in F.V12_TYPES:
        return False
    at = walker.current_base + raw.offset + R.HEADER_SIZE
    return F.is_v12(raw.type, raw.body_version, walker.current_buffer, at, raw.body_len)
