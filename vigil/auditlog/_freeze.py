"""Freezing: keeping chosen segments out of the ring's reuse (evidence kept for an incident).

A frozen segment's header carries the FROZEN flag (rewritten in its other slot, revision + 1,
synced), so the ring's choice of the next segment skips it; at most ``frozen_quota`` segments
are frozen at once, so two always stay writable. Each freeze and unfreeze is recorded as an
ANNOTATION.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

from vigil.auditlog import _format as F
from vigil.errors import FreezeQuotaExceeded, LogClosed, LogCorrupt
from vigil.schemas import _records as R


class Freezing:
    """Freeze and unfreeze for :class:`~vigil.auditlog.FlightRecorder` (a mixin)."""

    path: str
    geometry: F.Geometry
    _lock: threading.Lock
    _closed: bool
    _next_seq: int
    _segs: list[F.SegmentInfo]
    _view: memoryview

    if TYPE_CHECKING:

        def _sync(self, offset: int, length: int) -> None: ...

        def annotate(self, key: str, text: str) -> int: ...

    def _segment_ranges(self) -> list[tuple[F.SegmentInfo, int, int]]:
        """``(segment, first_seq, last_seq)`` for every live segment, oldest first."""
        live = sorted((s for s in self._segs if s.live), key=lambda s: s.generation)
        out = []
        for i, s in enumerate(live):
            last = live[i + 1].first_seq - 1 if i + 1 < len(live) else self._next_seq - 1
            out.append((s, s.first_seq, last))
        return out

    def freeze(self, first_seq: int, last_seq: int | None = None) -> list[int]:
        """Keep the segments holding records ``first_seq..last_seq`` from being overwritten.

        The freeze is durable when this returns and is itself recorded as an ANNOTATION.

        Returns:
            The indexes of the segments newly frozen.

        Raises:
            FreezeQuotaExceeded: the quota would be exceeded (nothing is frozen then).
            LogCorrupt: a segment in the range has no valid header to rewrite.
        """
        with self._lock:
            if self._closed:
                raise LogClosed(f"{self.path}: flight recorder is closed", path=self.path)
            hi = self._next_seq - 1 if last_seq is None else last_seq
            chosen = [s for s, a, b in self._segment_ranges() if a <= hi and b >= first_seq]
            new = [s for s in chosen if not s.frozen]
            frozen = sum(s.frozen for s in self._segs)
            quota = self.geometry.frozen_quota
            if frozen + len(new) > quota:
                raise FreezeQuotaExceeded(
                    f"{self.path}: freezing {len(new)} segment(s) would make "
                    f"{frozen + len(new)} frozen, quota is {quota}",
                    requested=len(new),
                    frozen=frozen,
                    quota=quota,
                )
            for s in new:
                self._rewrite_header(s, frozen=True)
        self.annotate(
            "vigil.freeze",
            json.dumps(
                {
                    "first_seq": first_seq,
                    "last_seq": hi,
                    "segments": [s.index for s in new],
                }
            ),
        )
        return [s.index for s in new]

    def unfreeze(self, segments: list[int] | None = None) -> list[int]:
        """Release frozen segments (all when ``segments`` is None); durable on return."""
        with self._lock:
            if self._closed:
                raise LogClosed(f"{self.path}: flight recorder is closed", path=self.path)
            chosen = [
                s for s in self._segs if s.frozen and (segments is None or s.index in segments)
            ]
            for s in chosen:
                self._rewrite_header(s, frozen=False)
        self.annotate("vigil.unfreeze", json.dumps({"segments": [s.index for s in chosen]}))
        return [s.index for s in chosen]

    def _rewrite_header(self, seg: F.SegmentInfo, *, frozen: bool) -> None:
        if seg.status != "valid" or seg.start_chain is None:
            raise LogCorrupt(
                f"{self.path}: segment {seg.index} has no valid header; it cannot be "
                "frozen or unfrozen",
                path=self.path,
                segment=seg.index,
            )
        geo = self.geometry
        slot = 1 - seg.slot
        values = {
            "version": R.FORMAT_MAJOR,
            "flags": R.SEGMENT_FROZEN if frozen else 0,
            "index": seg.index,
            "generation": seg.generation,
            "revision": seg.revision + 1,
            "wear": seg.wear,
            "first_seq": seg.first_seq,
            "retained_from": seg.retained_from,
            "created_ns": seg.created_ns,
            "log_id": geo.log_id,
            "start_chain": seg.start_chain,
        }
        off = geo.segment_offset(seg.index) + R.SEGMENT_SLOTS[slot]
        raw = F.encode_segment_header(values)
        self._view[off : off + len(raw)] = raw
        self._sync(off, len(raw))
        seg.slot, seg.revision, seg.frozen = slot, seg.revision + 1, frozen
