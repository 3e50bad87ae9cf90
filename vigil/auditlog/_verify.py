"""Walking the whole log in sequence order, and classifying what is wrong with it.

Theory of operation
-------------------
The walk visits live segments in generation order and scans each one
(:func:`~vigil.auditlog._format.scan_segment`). A record belongs to the log when its CRC and
lap are valid, it is not *superseded* (a later segment starts at or before its seq, which is
what crash recovery does when it leaves damaged bytes behind), and, in the head segment, it
precedes the first damage (recovery will discard what follows). Everything the walk sees is
checked against what must hold for a log written by vigil:

* within a segment, seqs go up by one and every chain digest follows from its predecessor;
* a segment's ``first_seq`` and ``start_chain`` continue the previous segment;
* record 1 chains from the genesis digest of the log id;
* within one boot id, monotonic time never goes backwards.

Each violation becomes a :class:`Finding` whose kind says what an auditor needs to know:

======================  ======================================================================
TORN_TAIL (expected)    unfinished bytes at the end of the head segment, or at the end of a
                        segment that recovery left behind: a crash, never a returned record
SUPERSEDED (expected)   valid records after such a tear, replaced by recovery's resumption
EVICTED (expected)      records older than the ring keeps (below the head's ``retained_from``)
HEADER_COPY (expected)  one copy of a redundant segment header is torn; the other is in force
MEDIA_CORRUPTION        stored bytes fail their CRC where a crash cannot explain it
TAMPERING               CRC-valid bytes that break the chain, the order or the log's identity
GAP                     records missing inside the range the log guarantees to retain
CLOCK                   monotonic time ran backwards within one boot session
FILE_SIZE               the file is shorter (truncated) or longer than its geometry
======================  ======================================================================

What cannot be told apart, and is reported as the more benign kind: media damage to the last
records of the head segment looks like a torn tail; deleting the oldest segment looks like
eviction; truncating the newest records looks like a crash. Signed checkpoints and external
anchors (a later format revision) close those gaps.

Memory is bounded: one segment buffer at a time and at most ``max_findings`` findings kept
(the rest are counted).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vigil import _diagnostics as D
from vigil.auditlog import _format as F

EXPECTED_KINDS = frozenset(
    {
        "TORN_TAIL",
        "SUPERSEDED",
        "EVICTED",
        "HEADER_COPY",
        "UNSEALED_TAIL",
        "ANCHOR_EVICTED",
        "DIGEST_PENDING",
    }
)
_CODES = {
    "TORN_TAIL": D.TORN_TAIL,
    "MEDIA_CORRUPTION": D.MEDIA_CORRUPTION,
    "TAMPERING": D.TAMPERING,
    "GAP": D.GAP,
    "EVICTED": D.EVICTED,
    "CLOCK": D.CLOCK,
    "SUPERSEDED": D.SUPERSEDED,
    "HEADER_COPY": D.HEADER_COPY,
    "FILE_SIZE": D.LOG_GEOMETRY,
    "SEAL_INVALID": D.SEAL_INVALID,
    "SEAL_MISMATCH": D.SEAL_MISMATCH,
    "WRONG_KEY": D.WRONG_KEY,
    "EPOCH_GAP": D.EPOCH_GAP,
    "UNSEALED": D.UNSEALED,
    "UNSEALED_TAIL": D.UNSEALED_TAIL,
    "ANCHOR": D.ANCHOR,
    "ANCHOR_EVICTED": D.ANCHOR_EVICTED,
    "DIGEST_PENDING": D.DIGEST_PENDING,  # format 1.2 (_digestcheck.py)
    "DIGEST_MISSING": D.DIGEST_MISSING,
    "DIGEST_UNEXPECTED": D.DIGEST_UNEXPECTED,
}


@dataclass(frozen=True)
class Finding:
    """One thing the verifier found.

    Attributes:
        kind: see the module docstring.
        code: the diagnostic code for the kind.
        message: what was found, in words.
        segment: segment index, when the finding is inside one.
        offset: file offset of the first byte concerned, when known.
        seq: first sequence number concerned, when known.
        last_seq: last sequence number concerned (for ranges).
        expected: True for what normal operation produces (crash, wrap-around).
    """

    kind: str
    code: str
    message: str
    segment: int | None = None
    offset: int | None = None
    seq: int | None = None
    last_seq: int | None = None
    expected: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class VerifyReport:
    """The result of :meth:`~vigil.auditlog.LogReader.verify`.

    ``intact`` is True when every finding is an expected one (torn tail, superseded,
    evicted, torn header copy): such a log holds exactly what its writer acknowledged.
    """

    path: str
    log_id: str
    live: bool
    intact: bool
    records: int
    bytes: int
    segments: int
    first_seq: int | None
    last_seq: int | None
    findings: tuple[Finding, ...]
    counts: dict[str, int]
    findings_dropped: int
    seconds: float
    seals: Any = None  # a SealReport when the log is sealed or keys were given
    retained_from: int | None = None
    retention: str = ""

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["findings"] = [f.to_json() for f in self.findings]
        out["seals"] = self.seals.to_json() if self.seals is not None else None
        return out


class FindingSink:
    """Bounded storage for findings; counts every one, keeps the first ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept: list[Finding] = []
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, message: str, **where: Any) -> None:
        if where.get("last_seq") is not None and where["last_seq"] == where.get("seq"):
            del where["last_seq"]  # a range of one record is that record (FORMAT.md §6)
        self.counts[kind] += 1
        if len(self.kept) < self.limit:
            diag = _CODES[kind]
            self.kept.append(
                Finding(kind, diag.code, message, expected=kind in EXPECTED_KINDS, **where)
            )

    @property
    def dropped(self) -> int:
        return sum(self.counts.values()) - len(self.kept)

    @property
    def intact(self) -> bool:
        return all(kind in EXPECTED_KINDS for kind in self.counts)


SegmentLoader = Callable[[F.SegmentInfo], tuple[Any, int, F.SegmentInfo] | None]
"""Returns ``(buffer, base, fresh_info)`` for a segment, or None if it changed while reading."""


@dataclass
class _Cursor:
    """Where the walk stands in the log: the next seq it should hold, the chain and clock of
    the last record of the log, and how far findings already explain what is missing."""

    expected: int = 0  # 0 = nothing seen yet
    prev_chain: bytes | None = None
    prev_boot: int = -1
    prev_mono: int = -1
    covered: int = 0


class Walker:
    """Walks a log's segments in order; yields the log's records, collects findings.

    Args:
        geometry: from the superblock.
        segments: every segment's :class:`~vigil.auditlog._format.SegmentInfo`.
        load: reads one segment's bytes.
        sink: where findings go.
        yield_records: False when only the findings matter (verification): clean segments
            are then checked by a fast path that yields nothing.
    """

    def __init__(
        self,
        geometry: F.Geometry,
        segments: list[F.SegmentInfo],
        load: SegmentLoader,
        sink: FindingSink,
        yield_records: bool = True,
    ) -> None:
        self.geo = geometry
        self.segments = segments
        self.load = load
        self.sink = sink
        self.yield_records = yield_records
        self.records = 0
        self.bytes = 0
        self.segments_scanned = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.current_segment = -1
        self.current_buffer: Any = b""
        self.current_base = 0
        self.retained_from: int | None = None  # every seq from here on must be in the log
        self.runs: list[list[int]] = []  # [first, last] of each run of consecutive seqs
        self.retention = "the log holds no live segment"  # how retained_from is known

    def _segment_findings(self) -> None:
        for s in self.segments:
            where = {"segment": s.index, "offset": self.geo.segment_offset(s.index)}
            forged = any(p.reason.startswith("identity") for p in s.problems)
            if s.status == "unreadable":
                why = "; ".join(p.reason for p in s.problems) or "damaged"
                self.sink.add(
                    "TAMPERING" if forged else "MEDIA_CORRUPTION",
                    f"segment {s.index}: header unreadable ({why}); its records are lost",
                    **where,
                )
            elif s.status == "salvaged":
                self.sink.add(
                    # a torn write never yields a valid CRC over someone else's identity
                    "TAMPERING" if forged else "MEDIA_CORRUPTION",
                    f"segment {s.index}: header "
                    + ("replaced by a copy from elsewhere" if forged else "damaged")
                    + f"; records read from lap {s.generation} without the segment's chain "
                    "anchor",
                    seq=s.first_seq,
                    **where,
                )
            elif s.status in ("valid", "empty"):
                in_force = (
                    f"copy {s.slot} is in force"
                    if s.status == "valid"
                    else ("the segment was never started")
                )
                for p in s.problems:
                    self.sink.add(
                        # a torn write never yields a valid CRC over someone else's identity
                        "TAMPERING" if p.reason.startswith("identity") else "HEADER_COPY",
                        f"segment {s.index}: header copy {p.slot}: {p.reason}; {in_force}",
                        segment=s.index,
                        offset=p.offset,
                    )

    def walk(self) -> Iterator[F.RawRecord]:
        """Yield every record that belongs to the log, in sequence order.

        Segments are taken in generation order; for each, :meth:`_join` classifies where it
        joins the log (eviction, a gap, a splice), then its records are checked and yielded
        (:meth:`_segment_records`), or a clean segment is counted in one tight loop when only
        findings matter. Each yielded record has ``offset`` relative to its segment; while it
        is being yielded :attr:`current_segment`, :attr:`current_buffer` and
        :attr:`current_base` say where its bytes are.
        """
        self._segment_findings()
        live = sorted((s for s in self.segments if s.live), key=lambda s: (s.generation, s.index))
        if not live:
            return
        for a, b in itertools.pairwise(live):
            if a.generation == b.generation:
                self.sink.add(
                    "TAMPERING",
                    f"segments {a.index} and {b.index} both claim generation {a.generation}: "
                    "one was copied or its header forged",
                    segment=b.index,
                    offset=self.geo.segment_offset(b.index),
                )
        retained_from = self._prove_retention(live[-1])
        genesis = F.genesis_chain(self.geo.log_id)
        cur = _Cursor()
        for i, listed in enumerate(live):
            is_head = i == len(live) - 1
            nxt = None if is_head else live[i + 1]
            loaded = self.load(listed)
            if loaded is None:
                continue  # reused by a live writer while we read: not a finding
            buf, base, seg = loaded  # re-read with its records; same generation
            seg_len = min(self.geo.segment_size, len(buf) - base)
            self.current_segment, self.current_buffer, self.current_base = seg.index, buf, base
            self.segments_scanned += 1
            self._join(seg, cur, genesis, retained_from)
            nxt_first = None if nxt is None else nxt.first_seq
            if (
                not self.yield_records
                and base == 0
                and self._clean(buf, seg_len, seg, nxt_first, cur)
            ):
                continue  # nothing to report: the common case
            yield from self._segment_records(
                buf,
                base,
                seg_len,
                seg,
                cur,
                is_head=is_head,
                adjacent=nxt is not None and nxt.generation == listed.generation + 1,
                nxt_first=nxt_first,
            )
            if cur.expected > cur.covered:
                cur.covered = cur.expected - 1

    def _join(self, seg: F.SegmentInfo, cur: _Cursor, genesis: bytes, retained_from: int) -> None:
        """Classify where ``seg`` joins the log read so far, and move the cursor to its start."""
        where = {"segment": seg.index, "offset": self.geo.segment_offset(seg.index)}
        expected, covered, prev_chain = cur.expected, cur.covered, cur.prev_chain
        if expected == 0:
            if seg.first_seq > 1:
                self._hole(1, seg.first_seq - 1, retained_from, where)
            elif seg.start_chain is not None and seg.start_chain != genesis:
                self.sink.add(
                    "TAMPERING",
                    f"segment {seg.index} starts the log but does not chain from the "
                    "log's genesis digest (records from another log?)",
                    seq=1,
                    **where,
                )
        elif seg.first_seq > expected:
            lo = max(expected, covered + 1)
            if lo < seg.first_seq:
                self._hole(lo, seg.first_seq - 1, retained_from, where)
        elif (
            seg.first_seq == expected
            and seg.start_chain is not None
            and prev_chain is not None
            and seg.start_chain != prev_chain
        ):
            self.sink.add(
                "TAMPERING",
                f"segment {seg.index} does not chain from record {expected - 1}",
                seq=seg.first_seq,
                **where,
            )
        elif seg.first_seq < expected:
            self.sink.add(
                "TAMPERING",
                f"segment {seg.index} (lap {seg.generation}) restarts at record "
                f"{seg.first_seq}, below record {expected - 1} already in the log: "
                "copied or its header forged",
                seq=seg.first_seq,
                **where,
            )
        cur.expected = seg.first_seq
        cur.prev_chain = seg.start_chain

    def _clean(
        self, buf: Any, seg_len: int, seg: F.SegmentInfo, nxt_first: int | None, cur: _Cursor
    ) -> bool:
        """Count a segment with nothing to report in one tight loop (verification only);
        False when it needs the record-by-record walk."""
        limit = (1 << 64) if nxt_first is None else nxt_first
        run = F.check_clean_segment(
            buf,
            seg_len,
            info=seg,
            header_area=self.geo.header_area,
            limit=limit,
            boot_id=cur.prev_boot,
            mono_ns=cur.prev_mono,
        )
        if run is None:
            return False
        self.records += run.records
        self.bytes += run.nbytes
        if run.records:
            self._ran(run.first_seq, run.last_seq)
            if self.first_seq is None:
                self.first_seq = run.first_seq
            self.last_seq = run.last_seq
            cur.expected, cur.prev_chain = run.last_seq + 1, run.chain
            cur.prev_boot, cur.prev_mono = run.boot_id, run.mono_ns
        cur.covered = max(cur.covered, cur.expected - 1)
        return True

    def _segment_records(
        self,
        buf: Any,
        base: int,
        seg_len: int,
        seg: F.SegmentInfo,
        cur: _Cursor,
        *,
        is_head: bool,
        adjacent: bool,
        nxt_first: int | None,
    ) -> Iterator[F.RawRecord]:
        """Check ``seg``'s records one by one, yield those of the log, classify the damage.

        ``adjacent``: the next live segment was started right after this one (generation
        + 1), so whatever seqs lie between them were written into this segment.
        """
        base_off = self.geo.segment_offset(seg.index)
        # ``gap`` is the first damaged span since the last record of the log; it is
        # classified when we learn what follows it: a record of the log (damage inside
        # the log), or only superseded records / orphans / the segment end (a tear).
        gap: F.Damage | None = None
        gap_end = 0
        foreign = False
        after_tear: list[int] = []
        items = list(F.scan_segment(buf, base, seg_len, seg, self.geo.header_area))
        cut = F.tear_index(items, seg.first_seq)
        kept = items if cut is None else items[:cut]
        limit = (1 << 64) if nxt_first is None else nxt_first
        nbytes = count = 0
        for item in kept:
            if isinstance(item, F.Damage):
                if gap is None:
                    gap = item
                foreign |= item.foreign
                gap_end = item.end
                continue
            nbytes += item.length
            seq = item.seq
            if seq >= limit:
                self.sink.add(
                    "TAMPERING",
                    f"record {seq} in segment {seg.index} overlaps the segment "
                    f"starting at {nxt_first}",
                    seq=seq,
                    **self._at(seg.index, base_off + item.offset),
                )
                continue
            if gap is not None:
                self._damage_inside(
                    gap=gap,
                    gap_end=gap_end,
                    foreign=foreign,
                    expected=cur.expected,
                    after=item,
                    segment=seg.index,
                    base_off=base_off,
                )
                gap, foreign = None, False
            elif seq != cur.expected:
                self._out_of_sequence(item, cur.expected, seg.index, base_off)
            elif item.link is False:
                self.sink.add(
                    "TAMPERING",
                    f"record {seq} does not chain from record {seq - 1}: "
                    "its bytes were changed and its CRC recomputed, or it was inserted",
                    seq=seq,
                    **self._at(seg.index, base_off + item.offset),
                )
            if item.boot_id == cur.prev_boot and item.mono_ns < cur.prev_mono:
                self.sink.add(
                    "CLOCK",
                    f"record {seq}: monotonic time {item.mono_ns} is before the "
                    f"previous record's {cur.prev_mono} in the same boot session",
                    seq=seq,
                    **self._at(seg.index, base_off + item.offset),
                )
            if self.last_seq is not None and seq <= self.last_seq:
                continue  # a copy of a record already returned (reported above): never twice
            cur.prev_boot, cur.prev_mono = item.boot_id, item.mono_ns
            cur.prev_chain = item.chain
            cur.expected = seq + 1
            count += 1
            self._ran(seq, seq)
            if self.first_seq is None:
                self.first_seq = seq
            self.last_seq = seq
            yield item
        for item in items[len(kept) :]:  # from the tear on: nothing belongs to the log
            if isinstance(item, F.Damage):
                if gap is None:
                    gap = item
                foreign |= item.foreign
                gap_end = item.end
            else:
                nbytes += item.length
                after_tear.append(item.seq)  # recovery resumed (or will) before it
        self.records += count
        self.bytes += nbytes
        if gap is not None:
            self._damage_at_end(
                gap=gap,
                gap_end=gap_end,
                foreign=foreign,
                seg=seg,
                is_head=is_head,
                adjacent=adjacent,
                nxt_first=nxt_first,
                expected=cur.expected,
                base_off=base_off,
            )
            if adjacent and nxt_first is not None and nxt_first > cur.expected:
                cur.covered = nxt_first - 1
        if after_tear:
            self.sink.add(
                "SUPERSEDED",
                f"segment {seg.index}: {len(after_tear)} record(s) {after_tear[0]}.."
                f"{after_tear[-1]} lie after the tear; "
                + (
                    "recovery will not include them"
                    if is_head
                    else f"recovery resumed at {nxt_first} in a later segment"
                ),
                seq=after_tear[0],
                last_seq=after_tear[-1],
                segment=seg.index,
                offset=base_off + gap.offset if gap is not None else base_off,
            )

    _MAX_RUNS = 4096

    def _ran(self, first: int, last: int) -> None:
        runs = self.runs
        if runs and runs[-1][1] + 1 == first:
            runs[-1][1] = last
        elif len(runs) < self._MAX_RUNS:  # beyond: holds() answers False (never too kind)
            runs.append([first, last])

    def holds(self, first: int, last: int) -> bool:
        """True when the log holds every record ``first..last`` (or they were evicted)."""
        lo = max(first, self.retained_from or 1)
        return lo > last or any(a <= lo and last <= b for a, b in self.runs)

    def _prove_retention(self, head: F.SegmentInfo) -> int:
        """The first seq the log must still hold; records below it may have been evicted.

        Eviction is claimed only where the geometry and the generations prove it possible:
        the writer evicts only when no free segment is left, so before any eviction every
        one of the N segments was started once (generations 1..N); a head of generation
        <= N proves that nothing was ever evicted. Beyond that, the head's ``retained_from``
        (written when the head was started, after the last eviction) says which records the
        ring still held. A salvaged head proves nothing: every missing record is a GAP.
        """
        count = self.geo.segment_count
        if head.status != "valid":
            self.retained_from = 1
            self.retention = (
                f"the head segment {head.index}'s header is lost, so no eviction can be proven"
            )
        elif head.generation <= count:
            self.retained_from = 1
            self.retention = (
                f"the ring never wrapped (head generation {head.generation} <= "
                f"{count} segments): no record was ever evicted"
            )
        else:
            self.retained_from = max(1, head.retained_from)
            self.retention = (
                f"the head segment {head.index} was started holding every record from "
                f"{self.retained_from}"
            )
        return self.retained_from

    @staticmethod
    def _at(segment: int, offset: int) -> dict[str, int]:
        return {"segment": segment, "offset": offset}

    def _out_of_sequence(
        self, item: F.RawRecord, expected: int, segment: int, base_off: int
    ) -> None:
        at = self._at(segment, base_off + item.offset)
        if item.seq > expected:
            self.sink.add(
                "TAMPERING",
                f"records {expected}..{item.seq - 1} are missing between two valid records "
                "(deleted)",
                seq=expected,
                last_seq=item.seq - 1,
                **at,
            )
        else:
            self.sink.add(
                "TAMPERING",
                f"record {item.seq} is out of order (expected {expected}): reordered or duplicated",
                seq=item.seq,
                **at,
            )

    def _hole(self, lo: int, hi: int, retained_from: int, where: dict[str, Any]) -> None:
        if hi < retained_from:
            self.sink.add(
                "EVICTED",
                f"records {lo}..{hi} were overwritten by the ring",
                seq=lo,
                last_seq=hi,
                **where,
            )
            return
        if lo < retained_from:
            self.sink.add(
                "EVICTED",
                f"records {lo}..{retained_from - 1} were overwritten by the ring",
                seq=lo,
                last_seq=retained_from - 1,
                **where,
            )
            lo = retained_from
        self.sink.add(
            "GAP",
            f"records {lo}..{hi} are missing although the log must retain every record "
            f"from {retained_from}: {self.retention}",
            seq=lo,
            last_seq=hi,
            **where,
        )

    def _damage_inside(
        self,
        *,
        gap: F.Damage,
        gap_end: int,
        foreign: bool,
        expected: int,
        after: F.RawRecord,
        segment: int,
        base_off: int,
    ) -> None:
        """Damage between two records of the log: media damage, or bytes that were moved."""
        where = {"segment": segment, "offset": base_off + gap.offset}
        size = after.offset - gap.offset
        if foreign:
            self.sink.add(
                "TAMPERING",
                f"a well-formed record that is not part of this segment's lap sits where "
                f"record {expected} should be: spliced or moved",
                seq=expected,
                **where,
            )
        elif after.seq <= expected:
            self.sink.add(
                "TAMPERING",
                f"{size} unexpected bytes before record {after.seq}",
                seq=after.seq,
                **where,
            )
        elif after.seq == expected + 1:
            self.sink.add(
                "MEDIA_CORRUPTION",
                f"record {expected} fails its CRC ({size} bytes damaged)",
                seq=expected,
                **where,
            )
        else:
            self.sink.add(
                "MEDIA_CORRUPTION",
                f"records {expected}..{after.seq - 1} fail their CRC ({size} bytes damaged)",
                seq=expected,
                last_seq=after.seq - 1,
                **where,
            )

    def _damage_at_end(
        self,
        *,
        gap: F.Damage,
        gap_end: int,
        foreign: bool,
        seg: F.SegmentInfo,
        is_head: bool,
        adjacent: bool,
        nxt_first: int | None,
        expected: int,
        base_off: int,
    ) -> None:
        """Damage after the segment's last record of the log: usually a crash's tear.

        ``adjacent``: the next live segment was started right after this one (generation
        + 1), so whatever seqs lie between them were written into this segment.
        """
        at = {"seq": expected, "segment": seg.index, "offset": base_off + gap.offset}
        if foreign:
            self.sink.add(
                "TAMPERING",
                f"segment {seg.index}: a well-formed record that is not part of this "
                f"segment's lap follows record {expected - 1}: spliced or moved",
                **at,
            )
        elif is_head:
            self.sink.add(
                "TORN_TAIL",
                f"segment {seg.index}: the write after record {expected - 1} is unfinished "
                "(a crash, or a writer still appending); its bytes are never returned",
                **at,
            )
        elif nxt_first == expected:
            self.sink.add(
                "TORN_TAIL",
                f"segment {seg.index}: an unfinished write after record {expected - 1}; "
                f"the writer resumed at {expected} in a later segment",
                **at,
            )
        elif not adjacent:
            self.sink.add(
                "TORN_TAIL",
                f"segment {seg.index}: an unfinished write after record {expected - 1}; the "
                "segments written after it have since left the ring",
                **at,
            )
        elif nxt_first is not None and nxt_first > expected:
            self.sink.add(
                "MEDIA_CORRUPTION",
                f"records {expected}..{nxt_first - 1} at the end of segment {seg.index} fail "
                "their CRC",
                last_seq=nxt_first - 1,
                **at,
            )
        else:
            self.sink.add(
                "TAMPERING",
                f"segment {seg.index}: damaged bytes after record {expected - 1}, and the next "
                f"segment restarts at {nxt_first}",
                **at,
            )
