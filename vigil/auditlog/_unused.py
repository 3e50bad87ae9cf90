"""Segments that hold no part of the log must hold nothing at all.

A segment that was never started is zeros beyond its header area: the file is zero-filled
when it is created, and the writer writes records into a segment only after its header. So
non-zero bytes in an *empty* segment are damage, and valid records there are worse: a
segment whose header and first record were destroyed reads as never started, and without
this check its records would silently drop out of the log (see docs/FORMAT.md §6).
"""

from __future__ import annotations

from vigil.auditlog import _format as F
from vigil.auditlog._crc import crc32c

_CHUNK = 4096
_ZEROS = bytes(_CHUNK)


def first_nonzero(buf: bytes, start: int, end: int) -> int:
    """Offset of the first non-zero byte of ``buf[start:end]``, or -1.

    Used only once a segment is known not to be all zeros (the caller compares the whole
    segment with one ``memcmp``): 4 KiB chunks compared against zeros locate the damage,
    ``lstrip`` finds the byte inside its chunk.
    """
    pos = start
    while pos < end:
        n = min(_CHUNK, end - pos)
        chunk = buf[pos : pos + n]
        if chunk != _ZEROS[:n]:
            return pos + n - len(chunk.lstrip(b"\x00"))
        pos += n
    return -1


def stray_records(buf: bytes, start: int, end: int) -> list[F.RawRecord]:
    """The CRC-valid records of the first lap found at or after ``start`` (8-aligned).

    Time is linear in ``end - start``: runs of zeros are skipped at C speed, and every
    other 8-aligned position costs one header unpack (a CRC only when the header is sane).
    """
    pos = start & ~7
    while pos + F.HDR_SIZE <= end:
        length, body_len, _t, _v, seq, lap, *_ = F.HDR.unpack_from(buf, pos)
        if lap and F.sane_header(length, body_len, pos, end):
            (stored,) = F.CRC.unpack_from(buf, pos + length - 4)
            if crc32c(memoryview(buf)[pos : pos + length - 4]) == stored:
                info = F.SegmentInfo(index=-1, status="salvaged", generation=lap, first_seq=seq)
                return [
                    item
                    for item in F.scan_segment(buf, 0, end, info, pos)
                    if isinstance(item, F.RawRecord)
                ]
        if length == 0:
            nxt = first_nonzero(buf, pos, end)
            if nxt < 0:
                break
            pos = max(pos + 8, nxt & ~7)
        else:
            pos += 8
    return []
