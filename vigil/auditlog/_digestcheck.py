"""Checking that every deferred output digest was recorded (format 1.2).

A supervisor that digests large outputs off the caller's path writes INFERENCE records with
``DIGEST_FOLLOWS`` and a zero ``output_digest``; one recorder thread appends an
OUTPUT_DIGEST record naming each of them, in their order, within a bounded lag: the
supervisor declares its queue bound (``max_pending``) in a ``vigil.digester`` ANNOTATION when
it starts. Walking the log in order, per *writer session* (from one LIFECYCLE OPENED record to
the next, or to the end of the log):

* an OUTPUT_DIGEST naming a pending DIGEST_FOLLOWS record completes it; pending records
  older than it are DIGEST_MISSING (digests are written in order, so a crash cannot explain
  them);
* an OUTPUT_DIGEST naming anything else -- another record type, a record without the flag, a
  record already completed, a record of another session -- is DIGEST_UNEXPECTED (one
  naming a record older than the log's first is not judged: it may have been evicted);
* at the end of a session, the records still pending are DIGEST_PENDING (expected: the queue
  a crash took with it) as long as there are at most ``max_pending`` of them; the older ones
  beyond that bound are DIGEST_MISSING. A session whose start is not in the log (evicted)
  is given the largest bound a supervisor may declare (4096); a session that declared no
  digester has bound 0.

Limitation: one digesting supervisor per log (the order rule assumes one queue).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from vigil.auditlog import _format as F
from vigil.auditlog._verify import FindingSink
from vigil.errors import InvalidArgument
from vigil.schemas import _records as R
from vigil.schemas._enums import CallFlags, LifecycleEvent, RecordType

DIGESTER_KEY = "vigil.digester"
MAX_BOUND = 4096
_FLAG = int(CallFlags.DIGEST_FOLLOWS)
_FLAGS_AT = 115  # INFERENCE body: the flags byte (body versions 1 and 2)
_T_INFERENCE = int(RecordType.INFERENCE)
_T_DIGEST = int(RecordType.OUTPUT_DIGEST)
_T_ANNOTATION = int(RecordType.ANNOTATION)
_T_LIFECYCLE = int(RecordType.LIFECYCLE)
_SEQ = struct.Struct("<Q")
_DIGEST_VERSION = 1
_DIGEST_SIZE = R.BODIES[RecordType.OUTPUT_DIGEST].fixed_size  # 56: the body decodes exactly
_OPENED, _CLOSED = bytes([LifecycleEvent.OPENED]), bytes([LifecycleEvent.CLOSED])
_ANNOTATION = R.BODIES[RecordType.ANNOTATION]

BODY_TYPES = frozenset({_T_INFERENCE, _T_DIGEST, _T_ANNOTATION, _T_LIFECYCLE})
"""The record types whose bodies :meth:`DigestChecker.see` needs."""


class DigestChecker:
    """Follows the walk (records in log order) and reports digests missing or unexpected."""

    def __init__(self, sink: FindingSink, geo: F.Geometry) -> None:
        self.sink = sink
        self.geo = geo
        self.first_seq: int | None = None
        self.pending: dict[int, dict[str, int]] = {}  # flagged seq -> where, in seq order
        self.bound = MAX_BOUND  # until the first OPENED: the session's start is not in the log
        self.closed = False  # the session ended with CLOSED: its digests were all drained
        self.deferred = 0
        self.digested = 0

    def see(self, raw: F.RawRecord, body: bytes, segment: int) -> None:
        """One record of the log (in order) with its body."""
        if self.first_seq is None:
            self.first_seq = raw.seq
        where = {"segment": segment, "offset": self.geo.segment_offset(segment) + raw.offset}
        if raw.type == _T_INFERENCE:
            if len(body) > _FLAGS_AT and body[_FLAGS_AT] & _FLAG:
                self.pending[raw.seq] = {"seq": raw.seq, **where}
                self.deferred += 1
        elif raw.type == _T_DIGEST:
            self._digest(raw, body, where)
        elif raw.type == _T_ANNOTATION:
            self._annotation(body)
        elif raw.type == _T_LIFECYCLE and body[:1] == _OPENED:
            self.finish()
            self.bound, self.closed = 0, False
        elif raw.type == _T_LIFECYCLE and body[:1] == _CLOSED:
            self.closed = True

    def _digest(self, raw: F.RawRecord, body: bytes, where: dict[str, int]) -> None:
        if raw.body_version != _DIGEST_VERSION or len(body) != _DIGEST_SIZE:
            # it completes nothing: the call it may name keeps waiting for its digest
            self.sink.add(
                "DIGEST_UNEXPECTED",
                f"OUTPUT_DIGEST {raw.seq}: undecodable body (body_version {raw.body_version}, "
                f"{len(body)} bytes; version {_DIGEST_VERSION} has {_DIGEST_SIZE}): it "
                "records no digest",
                seq=raw.seq,
                **where,
            )
            return
        (named,) = _SEQ.unpack_from(body)
        if named in self.pending:
            for seq in [s for s in self.pending if s < named]:
                at = self.pending.pop(seq)
                self.sink.add(
                    "DIGEST_MISSING",
                    f"INFERENCE {seq} has DIGEST_FOLLOWS but no OUTPUT_DIGEST, and the digest "
                    f"of the later call {named} was recorded (record {raw.seq})",
                    **at,
                )
            del self.pending[named]
            self.digested += 1
            return
        assert self.first_seq is not None
        if 0 < named < self.first_seq:  # seqs start at 1: 0 names nothing
            return  # names a record the ring evicted: nothing to judge
        self.sink.add(
            "DIGEST_UNEXPECTED",
            f"OUTPUT_DIGEST {raw.seq} names record {named}, which is not a DIGEST_FOLLOWS "
            "INFERENCE record of this writer session awaiting its digest",
            seq=raw.seq,
            **where,
        )

    def _annotation(self, body: bytes) -> None:
        try:
            note = _ANNOTATION.unpack(body)
            if note["key"] != DIGESTER_KEY:
                return
            declared = json.loads(note["text"])["max_pending"]
        except (InvalidArgument, ValueError, KeyError, TypeError, RecursionError):
            return  # not a declaration: the session keeps the bound it has
        if type(declared) is int and 0 <= declared <= MAX_BOUND:
            self.bound = max(self.bound, declared)

    def finish(self) -> None:
        """The end of a writer session (or of the log): judge what is still pending."""
        seqs = list(self.pending)
        bound = 0 if self.closed else self.bound
        lost = seqs[: max(0, len(seqs) - bound)]
        for seq in lost:
            self.sink.add(
                "DIGEST_MISSING",
                f"INFERENCE {seq} has DIGEST_FOLLOWS but no OUTPUT_DIGEST, and more of its "
                f"writer session's digests are missing ({len(seqs)}) than a crash explains "
                f"(bound {bound}{', the session was closed' if self.closed else ''})",
                **self.pending[seq],
            )
        tail = seqs[len(lost) :]
        if tail:
            self.sink.add(
                "DIGEST_PENDING",
                f"{len(tail)} output digest(s) still queued when the writer session ended "
                f"(bound {bound}): a crash",
                seq=tail[0],
                last_seq=tail[-1],
                segment=self.pending[tail[0]]["segment"],
                offset=self.pending[tail[0]]["offset"],
            )
        self.pending.clear()

    def to_json(self) -> dict[str, Any]:
        return {"deferred": self.deferred, "digested": self.digested}
