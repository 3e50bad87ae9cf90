"""Reading the ring's structures: superblock copies, segment headers, and segment scans.

Theory of operation
-------------------
The file is a superblock area followed by ``segment_count`` fixed-size segments. Every segment
starts with two header slots (in distinct sectors) and then holds records back to back, each
8-byte aligned, sealed by a CRC32C and a SHA-256 chain digest. A segment is (re)started by
writing a header with a new, globally increasing *generation* into its non-winning slot; its
records carry that generation as their *lap*, so bytes left from an earlier lap can never be
read as current records. Of the two slots, the valid one with the highest
``(generation, revision)`` wins; a torn slot write therefore leaves the previous header in
force.

The order of the log is the order of segment generations, and within a segment the order of
offsets. Nothing else is needed to find the head: the segment with the highest generation,
scanned from its start to the first byte that is not a valid record of its lap.

A scan never trusts a length before checking it against the segment, never reads past the
buffer, and never returns a record whose CRC fails. Where damage is found it resynchronises
on the next 8-aligned position holding a CRC-valid record of the same lap, and reports the
damaged span; classifying the damage (crash, media, tampering) needs the whole log and is
done by the verifier.

This module is shared by the writer's recovery, the reader and the verifier.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from vigil.auditlog._crc import crc32c
from vigil.errors import LogGeometryError, LogVersionError, NotAVigilLog, SuperblockCorrupt
from vigil.schemas import _records as R

HDR = R.RECORD_HEADER.fixed
HDR_SIZE = R.HEADER_SIZE
T_INFERENCE = 2  # RecordType.INFERENCE
T_OUTPUT_DIGEST = 7  # RecordType.OUTPUT_DIGEST (format 1.2)
FLAGS_AT = 115  # INFERENCE body: the flags byte (body versions 1 and 2)
DIGEST_FOLLOWS = 16  # CallFlags.DIGEST_FOLLOWS (format 1.2)
V12_TYPES = frozenset({T_INFERENCE, T_OUTPUT_DIGEST})  # the types :func:`is_v12` may accept
FLAGS_BYTE = HDR_SIZE + FLAGS_AT  # from the record's start


def is_v12(rtype: int, body_version: int, buf: Buffer, body_at: int, body_len: int) -> bool:
    """Whether a record is one only a format 1.2 writer writes: an OUTPUT_DIGEST, a traced
    (body_version 2) INFERENCE, or an INFERENCE with DIGEST_FOLLOWS (its body at
    ``buf[body_at:]``)."""
    if rtype == T_OUTPUT_DIGEST:
        return True
    if rtype != T_INFERENCE:
        return False
    return body_version == 2 or (
        body_len > FLAGS_AT and bool(buf[body_at + FLAGS_AT] & DIGEST_FOLLOWS)
    )


TRL_SIZE = R.TRAILER_SIZE
CRC = struct.Struct("<I")
LAP = struct.Struct("<Q")
LAP_OFFSET = 16
SEQ_OFFSET = 8
OVERHEAD = HDR_SIZE + TRL_SIZE
CHAIN_DOMAIN = b"vigil/chain/v1\x00\x00"
PAGE = 4096
END_MARK = 24
"""Zero bytes the writer leaves after the last record: length, seq and lap of a header."""


Buffer = bytes | bytearray | mmap.mmap
"""What scans read from: ``bytes`` (reader), an ``mmap`` (writer) or a ``bytearray``."""


def genesis_chain(log_id: bytes) -> bytes:
    """The chain digest "before" record 1: SHA-256 of a domain tag and the log id."""
    return hashlib.sha256(CHAIN_DOMAIN + log_id).digest()


def padded_length(body_len: int) -> int:
    """Total record length for a body of ``body_len`` bytes (8-aligned)."""
    return (OVERHEAD + body_len + 7) & ~7


# --- superblock ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """The ring's shape and identity, from the winning superblock copy."""

    log_id: bytes
    created_ns: int
    revision: int
    segment_size: int
    segment_count: int
    frozen_quota: int
    segments_offset: int
    header_area: int
    key_id: bytes
    minor: int
    flags: int = 0  # SEALED_* bits (format 1.1)

    @property
    def sealed(self) -> bool:
        """The log's writer promised checkpoints (a signing key, forward-secure sealing)."""
        return bool(self.flags & (R.SB_SIGNED | R.SB_FSS))

    @property
    def file_size(self) -> int:
        return self.segments_offset + self.segment_size * self.segment_count

    @property
    def max_record(self) -> int:
        return self.segment_size - self.header_area

    def segment_offset(self, index: int) -> int:
        return self.segments_offset + index * self.segment_size


@dataclass(frozen=True)
class SlotProblem:
    """A header copy that failed its checks while another copy (or salvage) carried on."""

    where: str  # "superblock" or "segment"
    segment: int | None
    slot: int
    offset: int
    reason: str


def superblock_values(geo: Geometry, **changes: Any) -> dict[str, Any]:
    """The superblock fields of ``geo`` (constants filled in), with ``changes`` applied."""
    values = {
        "major": R.FORMAT_MAJOR,
        "minor": geo.minor,
        "flags": geo.flags,
        "revision": geo.revision,
        "log_id": geo.log_id,
        "created_ns": geo.created_ns,
        "sector_size": R.SECTOR,
        "segment_size": geo.segment_size,
        "segment_count": geo.segment_count,
        "frozen_quota": geo.frozen_quota,
        "segments_offset": geo.segments_offset,
        "header_area": geo.header_area,
        "crc_alg": R.CRC_ALG_CRC32C,
        "hash_alg": R.HASH_ALG_SHA256,
        "key_id": geo.key_id,
    }
    values.update(changes)
    return values


def encode_superblock(values: dict[str, Any]) -> bytes:
    raw = R.SUPERBLOCK.pack({**values, "crc": 0})
    return raw[:-4] + CRC.pack(crc32c(raw[:-4]))


def _decode_slot(layout: Any, raw: bytes, magic: bytes) -> tuple[dict[str, Any] | None, str]:
    if raw[: len(magic)] != magic:
        return None, "no magic" if any(raw) else "blank"
    (stored,) = CRC.unpack_from(raw, len(raw) - 4)
    if crc32c(raw[:-4]) != stored:
        return None, "CRC mismatch"
    return layout.unpack(raw), ""


def read_superblock(
    raw: bytes, file_size: int, path: str, allow_short: bool = False
) -> tuple[Geometry, list[SlotProblem]]:
    """Pick the winning superblock copy from the first 4096 bytes of the file.

    ``allow_short`` accepts a file shorter than its geometry (readers report the truncation;
    writers refuse it).

    Raises:
        NotAVigilLog: neither copy has the magic.
        SuperblockCorrupt: copies have the magic but none passes its CRC.
        LogVersionError: the format major version is not 1.
        LogGeometryError: the geometry is impossible or the file is shorter than it says.
    """
    n = R.SUPERBLOCK.fixed_size
    if len(raw) < n:
        if bytes(raw[: len(R.SUPERBLOCK_MAGIC)]) == R.SUPERBLOCK_MAGIC:
            raise LogGeometryError(
                f"{path}: truncated to {file_size} bytes, shorter than one superblock copy "
                f"({n} bytes): its geometry is lost; keep the file as evidence",
                path=path,
                size=file_size,
                expected=n,
            )
        raise NotAVigilLog(f"{path}: {file_size} bytes is too short for a vigil log", path=path)
    problems: list[SlotProblem] = []
    best: dict[str, Any] | None = None
    magic_seen = False
    for slot, off in enumerate(R.SUPERBLOCK_SLOTS):
        if len(raw) < off + n:  # truncated inside copy B: the size check reports it
            problems.append(SlotProblem("superblock", None, slot, off, "cut off by truncation"))
            continue
        chunk = bytes(raw[off : off + n])
        values, why = _decode_slot(R.SUPERBLOCK, chunk, R.SUPERBLOCK_MAGIC)
        magic_seen |= why not in ("no magic", "blank")
        if values is None:
            problems.append(SlotProblem("superblock", None, slot, off, why))
        elif best is None or values["revision"] > best["revision"]:
            best = values
    if best is None:
        if not magic_seen:
            raise NotAVigilLog(f"{path}: no vigil superblock magic; not a flight log", path=path)
        raise SuperblockCorrupt(f"{path}: both superblock copies fail their CRC", path=path)
    if best["major"] != R.FORMAT_MAJOR:
        raise LogVersionError(
            f"{path}: format {best['major']}.{best['minor']}, this vigil reads {R.FORMAT_MAJOR}.x",
            path=path,
            major=best["major"],
        )
    geo = Geometry(
        log_id=best["log_id"],
        created_ns=best["created_ns"],
        revision=best["revision"],
        segment_size=best["segment_size"],
        segment_count=best["segment_count"],
        frozen_quota=best["frozen_quota"],
        segments_offset=best["segments_offset"],
        header_area=best["header_area"],
        key_id=best["key_id"],
        minor=best["minor"],
        flags=best["flags"],
    )
    _check_geometry(geo, best, file_size, path, allow_short)
    return geo, problems


def _check_geometry(
    geo: Geometry, sb: dict[str, Any], file_size: int, path: str, allow_short: bool
) -> None:
    bad = None
    if sb["sector_size"] != R.SECTOR or sb["crc_alg"] != 1 or sb["hash_alg"] != 1:
        bad = "unsupported sector size, CRC or hash algorithm"
    elif geo.segments_offset != R.SUPERBLOCK_AREA or geo.header_area != R.SEGMENT_HEADER_AREA:
        bad = "unexpected superblock or segment header area"
    elif geo.segment_size % PAGE or not PAGE * 2 <= geo.segment_size <= 1 << 30:
        bad = f"segment size {geo.segment_size} is not a multiple of 4096 in [8 KiB, 1 GiB]"
    elif not 2 <= geo.segment_count <= 1 << 24:
        bad = f"segment count {geo.segment_count} outside [2, 2^24]"
    elif geo.frozen_quota > geo.segment_count - 2:
        bad = f"frozen quota {geo.frozen_quota} leaves fewer than 2 writable segments"
    if bad:
        raise LogGeometryError(f"{path}: {bad}", path=path)
    if file_size < geo.file_size and not allow_short:
        raise LogGeometryError(
            f"{path}: file is {file_size} bytes but its geometry needs {geo.file_size}: it was "
            "truncated",
            path=path,
            size=file_size,
            expected=geo.file_size,
        )


# --- segment headers ----------------------------------------------------------------------


@dataclass
class SegmentInfo:
    """What is known about one segment after reading its header slots.

    ``status``: ``empty`` (never started; ``problems`` names a torn first header write),
    ``missing`` (beyond the end of a truncated file), ``valid`` (a header copy passed its checks),
    ``salvaged`` (no trustworthy header, but the first record is valid and says which lap
    the segment holds; ``start_chain`` is then unknown), ``unreadable`` (header damaged and
    nothing recoverable).
    """

    index: int
    status: str
    generation: int = 0
    revision: int = 0
    wear: int = 0
    first_seq: int = 0
    retained_from: int = 0
    created_ns: int = 0
    start_chain: bytes | None = None
    frozen: bool = False
    slot: int = -1
    problems: list[SlotProblem] = field(default_factory=list)

    @property
    def live(self) -> bool:
        """Holds records of a known lap (valid or salvaged)."""
        return self.status in ("valid", "salvaged")


def encode_segment_header(values: dict[str, Any]) -> bytes:
    raw = R.SEGMENT_HEADER.pack({**values, "crc": 0})
    return raw[:-4] + CRC.pack(crc32c(raw[:-4]))


def read_segment_info(buf: Buffer, base: int, size: int, index: int, geo: Geometry) -> SegmentInfo:
    """Read both header slots of the segment at ``buf[base:base+size]`` and pick the winner.

    A winning header is cross-checked against the first record: if that record is CRC-valid
    and of a *later* lap, the winner is a stale copy and the real header was damaged, so the
    segment is salvaged from the record instead.
    """
    problems: list[SlotProblem] = []
    best: dict[str, Any] | None = None
    best_slot = -1
    blank = 0
    n = R.SEGMENT_HEADER.fixed_size
    for slot, off in enumerate(R.SEGMENT_SLOTS):
        chunk = bytes(buf[base + off : base + off + n])
        values, why = _decode_slot(R.SEGMENT_HEADER, chunk, R.SEGMENT_MAGIC)
        blank += why == "blank"
        if values is not None and (
            values["index"] != index or values["log_id"] != geo.log_id or values["version"] != 1
        ):
            values, why = None, "identity mismatch: valid CRC but another index, log id or version"
        if values is None:
            if why != "blank":
                problems.append(SlotProblem("segment", index, slot, base + off, why))
            continue
        if best is None or (values["generation"], values["revision"]) > (
            best["generation"],
            best["revision"],
        ):
            best, best_slot = values, slot
    first = peek_first_record(buf, base, size, geo.header_area)
    if best is not None and (first is None or first[1] <= best["generation"]):
        return SegmentInfo(
            index=index,
            status="valid",
            generation=best["generation"],
            revision=best["revision"],
            wear=best["wear"],
            first_seq=best["first_seq"],
            retained_from=best["retained_from"],
            created_ns=best["created_ns"],
            start_chain=best["start_chain"],
            frozen=bool(best["flags"] & R.SEGMENT_FROZEN),
            slot=best_slot,
            problems=problems,
        )
    if first is not None:
        seq, lap = first
        wear = best["wear"] + 1 if best is not None else 0
        problems.append(
            SlotProblem(
                "segment", index, -1, base, f"header lost; salvaged lap {lap} from seq {seq}"
            )
        )
        return SegmentInfo(
            index=index,
            status="salvaged",
            generation=lap,
            wear=wear,
            first_seq=seq,
            problems=problems,
        )
    if best is None and (not problems or (len(problems) == 1 and blank == 1)):
        # Never started, or its first header write was torn (the other slot is still
        # blank): a single interrupted write spoils one slot only, and no record follows.
        return SegmentInfo(index=index, status="empty", problems=problems)
    return SegmentInfo(index=index, status="unreadable", problems=problems)


def peek_first_record(
    buf: Buffer, base: int, size: int, header_area: int
) -> tuple[int, int] | None:
    """``(seq, lap)`` of a CRC-valid record at the segment's first record position, if any."""
    pos = base + header_area
    end = min(base + size, len(buf))
    if pos + HDR_SIZE > end:
        return None
    length, body_len, _t, _v, seq, lap, *_ = HDR.unpack_from(buf, pos)
    if not _sane(length, body_len, pos, end) or lap == 0:
        return None
    (stored,) = CRC.unpack_from(buf, pos + length - 4)
    if crc32c(memoryview(buf)[pos : pos + length - 4]) != stored:
        return None
    return seq, lap


def _sane(length: int, body_len: int, pos: int, end: int) -> bool:
    return (
        length >= R.MIN_RECORD
        and not length & 7
        and pos + length <= end
        and body_len <= length - OVERHEAD
        and padded_length(body_len) == length
    )


sane_header = _sane  # for the checks of never-started segments (_unused)


# --- scanning -----------------------------------------------------------------------------


class RawRecord(NamedTuple):
    """A record whose CRC and lap are valid. ``offset`` is relative to the segment start.

    ``link`` says whether ``chain`` follows from the previous chain digest (the header's
    ``start_chain`` for the first record); ``None`` when the predecessor is unknown (after
    unframed damage, or in a salvaged segment).
    """

    offset: int
    length: int
    body_len: int
    type: int
    body_version: int
    seq: int
    lap: int
    durable_seq: int
    boot_id: int
    mono_ns: int
    real_ns: int
    chain: bytes
    link: bool | None


class Damage(NamedTuple):
    """Bytes between valid records (or after the last) that are not a valid current record.

    Attributes:
        offset: first damaged byte, relative to the segment start.
        end: where the next valid record starts, or the segment end when ``tail``.
        tail: no valid record of this lap follows in the segment.
        framed: the damaged bytes are one record whose length field frames ``[offset, end)``
            exactly (so its stored chain field was used to check the next record's link).
        foreign: the damaged bytes are a CRC-valid record that cannot be a leftover of this
            segment's earlier laps (its lap is newer, or its seq is not older): moved or spliced.
        seq_field: the (untrusted) sequence number stored at ``offset``.
    """

    offset: int
    end: int
    tail: bool
    framed: bool
    foreign: bool
    seq_field: int


def scan_segment(
    buf: Buffer, base: int, size: int, info: SegmentInfo, header_area: int
) -> Generator[RawRecord | Damage, None, None]:
    """Yield the segment's records and damaged spans in offset order.

    ``size`` must not exceed what ``buf`` holds from ``base`` (a truncated file's last
    segment is scanned with its actual length). The scan stops quietly at a *clean end*: a
    header whose lap is older than this segment's and whose seq precedes ``info.first_seq``
    (stale bytes of an earlier lap, or zeros), provided no valid record of this lap follows.
    Any other invalid bytes yield a :class:`Damage`, after which the scan resumes at the next
    valid record.
    """
    gen = info.generation
    first_seq = info.first_seq
    end = base + size
    pos = base + header_area
    prev: bytes | None = info.start_chain
    view = memoryview(buf)
    unpack = HDR.unpack_from
    new_record = tuple.__new__
    sha256 = hashlib.sha256
    crc = crc32c
    min_len = R.MIN_RECORD
    try:
        while pos + HDR_SIZE <= end:
            length, body_len, rtype, bver, seq, lap, durable, boot, mono, real = unpack(buf, pos)
            if (
                lap == gen
                and min_len <= length <= end - pos
                and not length & 7
                and body_len <= length - OVERHEAD
                and ((OVERHEAD + body_len + 7) & ~7) == length
            ):
                stop = pos + length
                crc_at = stop - 4
                if crc(view[pos:crc_at]) == CRC.unpack_from(buf, crc_at)[0]:
                    chain_at = crc_at - 32
                    chain = bytes(buf[chain_at:crc_at])  # no copy when buf is bytes
                    if prev is None:
                        link = None
                    else:
                        h = sha256(prev)
                        h.update(view[pos:chain_at])
                        link = h.digest() == chain
                    yield new_record(
                        RawRecord,
                        (
                            pos - base,
                            length,
                            body_len,
                            rtype,
                            bver,
                            seq,
                            lap,
                            durable,
                            boot,
                            mono,
                            real,
                            chain,
                            link,
                        ),
                    )  # tuple.__new__: a NamedTuple's own constructor costs ~0.5 µs more
                    prev = chain
                    pos = stop
                    continue
            # Not a valid record of this lap.
            nxt = _resync(buf, view, pos, end, gen)
            if nxt < 0 and lap < gen and seq < first_seq:
                return  # clean end: stale bytes of an earlier lap, or never written
            framed = nxt >= 0 and _sane(length, body_len, pos, end) and pos + length == nxt
            foreign = (
                _sane(length, body_len, pos, end)
                and lap != gen
                and not (lap < gen and seq < first_seq)  # not a leftover of an earlier lap
                and crc(view[pos : pos + length - 4]) == CRC.unpack_from(buf, pos + length - 4)[0]
            )
            yield Damage(
                pos - base, (nxt if nxt >= 0 else end) - base, nxt < 0, framed, foreign, seq
            )
            if nxt < 0:
                return
            prev = bytes(view[nxt - 36 : nxt - 4]) if framed else None
            pos = nxt
        # fewer than HDR_SIZE bytes left: the segment is full
    finally:
        view.release()


class CleanRun(NamedTuple):
    """What :func:`check_clean_segment` learned about a segment without a single finding."""

    records: int
    nbytes: int
    first_seq: int
    last_seq: int
    chain: bytes
    boot_id: int
    mono_ns: int


def check_clean_segment(
    buf: Buffer,
    size: int,
    *,
    info: SegmentInfo,
    header_area: int,
    limit: int,
    boot_id: int,
    mono_ns: int,
) -> CleanRun | None:
    """Verify a segment in one tight loop, or return None if anything is unusual.

    The verifier's fast path (buf holds just this segment, from offset 0): every record valid
    (§4.3), seqs from ``info.first_seq`` upward and below ``limit``, each chain digest
    following from ``info.start_chain``, monotonic time not going back within a boot, a
    clean end, and no record only format 1.2 writes (:func:`is_v12`: the fast path serves
    logs whose superblock says 1.0 or 1.1, where such a record is a finding). On None the
    caller scans the segment again with :func:`scan_segment` and
    classifies what it finds; this function decides nothing on its own.
    """
    prev = info.start_chain
    if prev is None:
        return None
    gen, first = info.generation, info.first_seq
    expected = first
    pos, end = header_area, size
    view = memoryview(buf)
    unpack, crc, sha256 = HDR.unpack_from, crc32c, hashlib.sha256
    t_inference, t_digest = T_INFERENCE, T_OUTPUT_DIGEST  # locals: the loop runs per record
    flags_at, flags_byte, follows = FLAGS_AT, FLAGS_BYTE, DIGEST_FOLLOWS
    count = nbytes = 0
    try:
        while pos + HDR_SIZE <= end:
            length, body_len, rtype, version, seq, lap, _d, boot, mono, _r = unpack(buf, pos)
            if lap != gen:
                if lap < gen and seq < first and _resync(buf, view, pos, end, gen) < 0:
                    break  # clean end
                return None
            stop = pos + length
            if (
                stop > end
                or length < R.MIN_RECORD
                or ((OVERHEAD + body_len + 7) & ~7) != length
                or seq != expected
                or seq >= limit
                or (boot == boot_id and mono < mono_ns)
                or rtype == t_digest  # is_v12, inline (a call per record costs ~10 %)
                or (
                    rtype == t_inference
                    and (version == 2 or (body_len > flags_at and buf[pos + flags_byte] & follows))
                )
            ):
                return None
            crc_at = stop - 4
            if crc(view[pos:crc_at]) != CRC.unpack_from(buf, crc_at)[0]:
                return None
            chain_at = crc_at - 32
            h = sha256(prev)
            h.update(view[pos:chain_at])
            prev = h.digest()
            if prev != buf[chain_at:crc_at]:
                return None
            boot_id, mono_ns = boot, mono
            expected = seq + 1
            count += 1
            nbytes += length
            pos = stop
    finally:
        view.release()
    return CleanRun(count, nbytes, first, expected - 1, prev, boot_id, mono_ns)


def _resync(buf: Buffer, view: memoryview, pos: int, end: int, gen: int) -> int:
    """Offset of the next 8-aligned CRC-valid record of lap ``gen`` after ``pos``, or -1."""
    pattern = LAP.pack(gen)
    search = pos + 8 + LAP_OFFSET
    while True:
        hit = buf.find(pattern, search, end)
        if hit < 0:
            return -1
        cand = hit - LAP_OFFSET
        search = hit + 1
        if cand & 7 or cand + HDR_SIZE > end:
            continue
        length, body_len, *_ = HDR.unpack_from(buf, cand)
        if not _sane(length, body_len, cand, end):
            continue
        if crc32c(view[cand : cand + length - 4]) == CRC.unpack_from(buf, cand + length - 4)[0]:
            return cand


def tear_index(items: list[RawRecord | Damage], first_seq: int) -> int | None:
    """Index of the damage where the segment was torn by a crash, or None.

    Damage is a *tear* when no later record of the segment vouches for the records it lost:
    every record carries ``durable_seq``, the highest seq its writer knew to be durable, so a
    later record with ``durable_seq`` at or beyond the first lost seq proves those records
    had been acknowledged -- their loss is media damage or tampering, and the records after
    it belong to the log. Without such a voucher the damage is what a crash leaves (the lost
    records were never acknowledged) and nothing after it is part of the log.
    """
    if not any(isinstance(item, Damage) for item in items):
        return None
    vouched = [0] * (len(items) + 1)  # vouched[i]: max durable_seq of records at i and after
    for i in range(len(items) - 1, -1, -1):
        item = items[i]
        durable = item.durable_seq if isinstance(item, RawRecord) else 0
        vouched[i] = max(vouched[i + 1], durable)
    expected = first_seq
    for i, item in enumerate(items):
        if isinstance(item, Damage):
            if vouched[i + 1] < expected:
                return i
        else:
            expected = item.seq + 1
    return None


class Tail(NamedTuple):
    """Where the log ends in its head segment (what recovery resumes after).

    Attributes:
        last_seq: seq of the last record of the log in the segment (``first_seq - 1`` if
            none).
        chain: its chain digest (the header's ``start_chain`` if none).
        end: offset just after it, relative to the segment start.
        tear: the damage where a crash tore the segment, if any.
        orphans: valid records lie after the tear (never acknowledged, not part of the log).
    """

    last_seq: int
    chain: bytes | None
    end: int
    tear: Damage | None
    orphans: bool


def scan_tail(buf: Buffer, base: int, size: int, info: SegmentInfo, header_area: int) -> Tail:
    """Scan a head segment and find where its part of the log ends (see :func:`tear_index`)."""
    items = list(scan_segment(buf, base, size, info, header_area))
    cut = tear_index(items, info.first_seq)
    kept = items if cut is None else items[:cut]
    last = next((i for i in reversed(kept) if isinstance(i, RawRecord)), None)
    tear = items[cut] if cut is not None else None
    assert tear is None or isinstance(tear, Damage)
    orphans = cut is not None and any(isinstance(i, RawRecord) for i in items[cut:])
    if last is None:
        return Tail(info.first_seq - 1, info.start_chain, header_area, tear, orphans)
    return Tail(last.seq, last.chain, last.offset + last.length, tear, orphans)
