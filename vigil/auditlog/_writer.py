"""The flight recorder's writer.

Theory of operation
-------------------
Appending a record packs its header and body straight into the mapped file at the head
position, chains it (``chain = SHA-256(previous chain || record bytes up to the chain)``),
seals it (CRC32C over everything before the CRC) and zeroes the next 24 bytes as an end
marker, which the next record overwrites (without it, the end of the records in a reused
segment would be the middle of an older lap's record, indistinguishable from a torn write).
No other byte of the file changes per record: there is no index, no head pointer and no
counter page to wear the flash out. The head is rediscovered at open from the segment headers
(highest generation) and a scan of that one segment.

When a record does not fit in the head segment, the writer *switches*: it syncs the head
segment (``batch`` and ``always``), picks the next segment (a free one -- never used or
unreadable -- with the least wear, else the oldest unfrozen one, which evicts its records),
writes that segment's new
header (generation + 1, wear + 1, first seq, chain so far) into its non-winning slot, syncs
the header, and only then writes records into it. Hence, under ``batch`` and ``always``:

* a segment header on disk never describes records that are not yet durable elsewhere, and a
  torn header write leaves the previous header (and its records) in force;
* a torn tail can only be at the end of the head segment;
* ``retained_from`` in each header states which records the writer still held, so the
  verifier can tell ring eviction (expected) from a gap.

Recovery at open scans the head segment to the last record that continues the chain. If
nothing valid of the current lap follows, the torn bytes (if any) are zeroed and the writer
resumes in place; if valid records follow a damaged one (out-of-order writeback, or media
damage), they are left untouched as evidence and the writer resumes in a fresh segment.
Either way the recovered log is a prefix of what was appended, and a LIFECYCLE record says
what recovery found.

Durability: ``none`` never syncs on its own (only ``flush()``, ``close()`` and open do): it
survives a process crash, because the page cache does, but after a power cut anything since
the last flush may be torn anywhere, segment boundaries included. ``batch`` adds a background
group commit every ``batch_interval`` seconds, bounding the records at risk to that window,
and makes the segment-switch syncs described above; ``always`` syncs before each append
returns. ``durable_seq`` is the
highest sequence number known to be on stable storage.

Storage failure: a sync that fails (EIO: the kernel may already have dropped the dirty pages,
and a later sync can succeed without them) or a file found shorter than the mapping (truncated
under the writer: a store past its end is SIGBUS, which kills the process) makes the writer
*fail*: it raises the error (DIA-3041, DIA-3040), keeps it in :attr:`FlightRecorder.failed`,
and refuses every later append (DIA-3042) -- records are never again acknowledged that cannot
be made durable. The size is checked before each store under ``always`` (beside a sync per
record, the ``fstat`` is noise), and under ``batch`` at every group commit and segment switch:
a truncation is then found within ``batch_interval``, and a store in that window still dies
of SIGBUS (docs/SAFETY.md, residual risk).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import vigil
from vigil import _diagnostics as codes
from vigil.auditlog import _format as F
from vigil.auditlog._clock import Clock, SystemClock
from vigil.auditlog._crc import crc32c
from vigil.auditlog._freeze import Freezing
from vigil.auditlog._recovery import Recovery
from vigil.auditlog._ringconfig import RingConfig, superblock_area
from vigil.auditlog._seal import Sealer
from vigil.auditlog._storage import FileStorage, Storage
from vigil.errors import (
    ConfigError,
    FreezeQuotaExceeded,
    InvalidArgument,
    LogClosed,
    LogError,
    LogIOError,
    RecordTooLarge,
)
from vigil.schemas import _records as R
from vigil.schemas._enums import (
    CheckpointReason,
    Durability,
    LifecycleEvent,
    Outcome,
    RecordType,
    ServedBy,
    State,
)
from vigil.schemas._layout import Layout

_ZEROS = bytes(64 * 1024)
_AHEAD = 32 * 1024  # record_inferences zeroes the head segment this far ahead of its records
_NO_DIGEST = bytes(32)
_INFERENCE = R.BODIES[RecordType.INFERENCE]
# Header, INFERENCE body fixed part and payload length prefix, packed in one call.
_INFERENCE_HOT = struct.Struct("<" + R.RECORD_HEADER.format + _INFERENCE.format + "H").pack_into
_INFERENCE_BODY = _INFERENCE.fixed_size + 2  # body bytes before the payload
_INFERENCE_FIXED = R.HEADER_SIZE + _INFERENCE_BODY
_HDR_PACK = F.HDR.pack_into
# Plain ints for the hot path (module attribute and enum lookups cost ~50 ns each).
_T_INFERENCE = int(RecordType.INFERENCE)
_T_CHECKPOINT = int(RecordType.CHECKPOINT)
_CHECKPOINT = R.BODIES[RecordType.CHECKPOINT]
_NEVER = 1 << 64
_BODY_VERSION = R.BODY_VERSION
_TRACED = R.BODY_VERSION_TRACED
_DIGEST_FOLLOWS = 16  # CallFlags.DIGEST_FOLLOWS (format 1.2)
_T_OUTPUT_DIGEST = int(RecordType.OUTPUT_DIGEST)
_T_REJECTED = int(RecordType.REJECTED)
_NO_SPAN = bytes(8)


# pack_into, body bytes it packs, record type, body version; pack_into with the padding when
# nothing follows the packed bytes, and where the chain digest then lies
_Hot = tuple[Any, int, int, int, Any, int]


def _hot(rtype: RecordType, version: int, body: Layout, tail: str = "") -> _Hot:
    """How :meth:`FlightRecorder._append_packed` writes a record type: the header and the
    body's fixed part (plus ``tail``, a length prefix) packed in one ``struct`` call derived
    from the construct layouts, and how many body bytes that call packs."""
    fmt = "<" + R.RECORD_HEADER.format + body.format + tail
    packer = struct.Struct(fmt)
    assert packer.size == R.HEADER_SIZE + body.fixed_size + struct.calcsize("<" + tail)
    return (
        packer.pack_into,
        packer.size - R.HEADER_SIZE,
        int(rtype),
        version,
        *_padded(fmt, packer.size),
    )


_HEADER_SIZE = R.HEADER_SIZE
_OVERHEAD = F.OVERHEAD
_END_MARK = F.END_MARK
_MARK = bytes(_END_MARK)
_CRC_PACK = F.CRC.pack_into
# The trailer (chain digest, CRC32C) in one call, its CRC continued over the digest; and the
# same followed by the end mark.
_TRAILER = struct.Struct("<32sI").pack_into
_TRAILER_MARK = struct.Struct("<32sI" + str(_END_MARK) + "x").pack_into
_sha256 = hashlib.sha256


def _padded(fmt: str, size: int) -> tuple[Any, int]:
    """A packer of ``fmt`` (a record's header and body, ``size`` bytes) followed by the zero
    padding up to its chain digest, and the offset of that digest in the record."""
    chain_at = ((size + _OVERHEAD - _HEADER_SIZE + 7) & ~7) - 36
    packer = struct.Struct(fmt + str(chain_at - size) + "x")
    return packer.pack_into, chain_at


# record_inferences packs a batch's records with the header's constant parts pre-packed: its
# first 8 bytes (length, body_len, type, body_version: one value per payload length) and the
# 40 after seq (lap, durable_seq, boot_id, mono_ns, real_ns: shared by the batch's records).
_HDR_FMT = R.RECORD_HEADER.format
_H8 = struct.Struct("<" + _HDR_FMT[:4]).pack
_MID = struct.Struct("<" + _HDR_FMT[5:]).pack
_INFERENCE_ROW = struct.Struct("<8sQ40s" + _INFERENCE.format + "H").pack_into
assert _HDR_FMT == "LHBBQQQQQq"  # 8 bytes, seq at offset 8, then 40 bytes
_ROW0 = _H8((_OVERHEAD + _INFERENCE_BODY + 7) & ~7, _INFERENCE_BODY, _T_INFERENCE, _BODY_VERSION)

# An INFERENCE record without payload (the usual one): its padding packed in the same call.
_INFERENCE_HOT0, _INFERENCE_CHAIN0 = _padded(
    "<" + R.RECORD_HEADER.format + _INFERENCE.format + "H", _INFERENCE_FIXED
)


# The other hot records, each packed in one call like the untraced INFERENCE above: the
# INFERENCE body of body_version 2 (trace context) or with DIGEST_FOLLOWS, REJECTED (1 and 2),
# OUTPUT_DIGEST.
_I, _REJ = RecordType.INFERENCE, RecordType.REJECTED
_HOT_INFERENCE_12 = _hot(_I, _BODY_VERSION, R.BODIES[_I], "H")
_HOT_INFERENCE_TRACED = _hot(_I, _TRACED, R.TRACED_BODIES[_I], "H")
_HOT_REJECTED = _hot(_REJ, _BODY_VERSION, R.BODIES[_REJ], "H")
_HOT_REJECTED_TRACED = _hot(_REJ, _TRACED, R.TRACED_BODIES[_REJ], "H")
_HOT_OUTPUT_DIGEST = _hot(
    RecordType.OUTPUT_DIGEST, _BODY_VERSION, R.BODIES[RecordType.OUTPUT_DIGEST]
)

_DURABILITY = {"none": Durability.NONE, "batch": Durability.BATCH, "always": Durability.ALWAYS}


class InferenceRow(NamedTuple):
    """One INFERENCE record for :meth:`FlightRecorder.record_inferences`: the arguments of
    :meth:`FlightRecorder.record_inference`, in this order (a plain tuple of the same 13
    fields does as well)."""

    request_id: bytes
    model_digest: bytes
    input_digest: bytes
    output_digest: bytes
    state: int
    served_by: int
    outcome: int
    latency_ns: int
    deadline_ns: int
    code: int = 0
    answer_age_ns: int = 0
    flags: int = 0
    payload: bytes = b""


@dataclass(frozen=True)
class WriterStatistics:
    """A snapshot of the writer's counters (see :meth:`FlightRecorder.statistics`)."""

    records: int  # appended since open, the OPENED record included
    head_seq: int
    durable_seq: int
    head_segment: int
    head_generation: int
    segment_switches: int
    syncs: int
    frozen_segments: tuple[int, ...]
    wear_min: int
    wear_max: int


class FlightRecorder(Recovery, Freezing):
    """The single writer of a flight log. Thread-safe; one instance per file.

    Create a log with :meth:`create`, open an existing one with :meth:`open`, and always
    :meth:`close` it (or use it as a context manager): close appends a LIFECYCLE record and
    makes everything durable.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        path: str = "<storage>",
        durability: str = "batch",
        batch_interval: float = 0.005,
        clock: Clock | None = None,
        policy_digest: bytes = _NO_DIGEST,
        start_flusher: bool = True,
        sealer: Sealer | None = None,
    ) -> None:
        """Attach to ``storage`` that already holds a formatted log and run recovery.

        Most callers want :meth:`create` or :meth:`open`; this constructor is for custom
        storage such as the power-cut emulator. ``start_flusher=False`` leaves ``batch``
        commits to explicit :meth:`flush` calls (deterministic tests). ``sealer`` seals
        checkpoints (:class:`~vigil.auditlog.Sealer`); a log created with one must always be
        opened with one of the same keys.

        Raises:
            ConfigError: unknown durability or a non-positive batch interval; DIA-3013 a
                sealed log opened without its sealer; DIA-3014 a sealer that does not match.
            LogError: the storage does not hold a readable log (see the subclasses).
        """
        _check_options(durability, batch_interval, policy_digest, sealer)
        self.path = path
        self._storage = storage
        self._buf = storage.buf
        self._view = memoryview(storage.buf)
        self._durability = _DURABILITY[durability]
        self._interval = batch_interval
        self._clock: Clock = clock or SystemClock()
        self._boot = int.from_bytes(self._clock.boot_uuid[:8], "little")
        self._mono = self._clock.monotonic_ns
        self._real = self._clock.realtime_ns
        self._always = self._durability is Durability.ALWAYS
        self._lock = threading.Lock()
        self._durable_cv = threading.Condition(threading.Lock())
        self._closed = False
        self._switched_unsynced = False
        self._switches = 0
        self._syncs = 0
        self._durable_seq = 0
        self._sealer = sealer
        self._cp_due_seq = _NEVER
        self._cp_due_ns = _NEVER
        self._failed: LogError | None = None
        self._failed_event = threading.Event()
        self._check = getattr(storage, "check", None)  # FileStorage.check; custom: optional
        self._policy_digest = bytes(policy_digest)
        try:
            self._open_session(durability, batch_interval)
        except BaseException:
            self._view.release()
            raise
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self._durability is Durability.BATCH and start_flusher:
            self._flusher = threading.Thread(
                target=self._flush_loop,
                name=f"vigil-flush:{os.path.basename(path)}",
                daemon=True,
            )
            self._flusher.start()

    def _open_session(self, durability: str, batch_interval: float) -> None:
        """Recover, attach the sealer, and write the session's OPENED record (and, sealed,
        its checkpoint), each durable before the next vouches for it."""
        recovery = self._recover_without_readahead()
        seal_note = self._attach_sealer()
        self._opened_seq = self._next_seq
        detail = self._opened_detail(recovery)
        self._config_digest = hashlib.sha256(
            json.dumps(
                {
                    "geometry": asdict(self.geometry),
                    "durability": durability,
                    "batch_interval": batch_interval,
                },
                sort_keys=True,
                default=lambda b: b.hex(),
            ).encode()
        ).digest()
        if seal_note:
            detail["sealing"] = seal_note
        self._sync_head()  # the recovered records are durable before OPENED vouches for them
        self._lifecycle(LifecycleEvent.OPENED, detail)
        if self._sealer is not None:
            self.checkpoint(CheckpointReason.OPENED)
        self._sync_head()

    def _opened_detail(self, recovery: dict[str, Any]) -> dict[str, Any]:
        """The OPENED record's detail: who opened the log, what recovery found, the clock."""
        detail: dict[str, Any] = {
            "vigil": vigil.__version__,
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "boot_id_from_kernel": getattr(self._clock, "boot_from_kernel", False),
            "recovery": recovery,
        }
        describe = getattr(self._clock, "describe", None)
        if describe is not None:  # source, device, offset to CLOCK_REALTIME
            detail["clock"] = describe()
        return detail

    # --- construction -------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], config: RingConfig | None = None, **options: Any
    ) -> FlightRecorder:
        """Create a new log file at ``path`` and open it for writing.

        The file is allocated and zero-filled to its final size now; it never grows.

        Raises:
            ConfigError: invalid geometry.
            LogIOError: ``path`` exists, or the OS refused (message says which step).
        """
        config = config or RingConfig()
        path = os.fspath(path)
        clock = options.get("clock") or SystemClock()
        options["clock"] = clock
        header = superblock_area(config, clock.realtime_ns(), sealer=options.get("sealer"))
        storage = FileStorage.create(path, config.file_size, header)
        try:
            return cls(storage, path=path, **options)
        except BaseException:
            storage.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], **options: Any) -> FlightRecorder:
        """Open an existing log for writing; recovers from a crash if there was one.

        Raises:
            LogLocked: another writer has it open.
            LogGeometryError: the file is truncated or its geometry is invalid.
            LogError: other failures (subclass names the cause).
        """
        path = os.fspath(path)
        storage = FileStorage.open(path)
        try:
            return cls(storage, path=path, **options)
        except BaseException:
            storage.close()
            raise

    # --- appending ----------------------------------------------------------------------

    def append(self, rtype: RecordType | int, body: bytes) -> int:
        """Append one record with an already-encoded body; return its sequence number.

        Raises:
            RecordTooLarge: the body exceeds 65535 bytes or the segment's record space.
            LogClosed: after :meth:`close`.
        """
        return self._commit(int(rtype), bytes(body))

    def record_inference(
        self,
        *,
        request_id: bytes,
        model_digest: bytes,
        input_digest: bytes,
        output_digest: bytes,
        state: State | int,
        served_by: ServedBy | int,
        outcome: Outcome | int,
        latency_ns: int,
        deadline_ns: int,
        code: int = 0,
        answer_age_ns: int = 0,
        flags: int = 0,
        payload: bytes = b"",
        trace_id: bytes | None = None,
        span_id: bytes = bytes(8),
    ) -> int:
        """Append an INFERENCE record (the hot path: one pack, one hash, one CRC).

        Args:
            request_id: 16 bytes (a UUID or W3C trace id).
            model_digest, input_digest, output_digest: 32-byte SHA-256 digests.
            state, served_by, outcome: the call's routing and result.
            latency_ns, deadline_ns, answer_age_ns: durations in nanoseconds.
            code: diagnostic code number (2047 for DIA-2047), 0 for none.
            flags: :class:`~vigil.schemas.CallFlags` bits. ``DIGEST_FOLLOWS`` (format 1.2):
                ``output_digest`` must be 32 zero bytes, and :meth:`record_output_digest`
                must follow for this record's seq.
            payload: optional small opaque payload (at most a few KiB is sensible).
            trace_id, span_id: the call's W3C trace context (16 and 8 bytes): the record is
                then a body_version 2 (format 1.2) INFERENCE body that carries them.

        Returns:
            The record's sequence number.

        Raises:
            InvalidArgument: a digest or id has the wrong length, or a number is out of range.
            RecordTooLarge: the payload does not fit.
            LogClosed: after :meth:`close`.
        """
        if (
            len(request_id) != 16
            or len(model_digest) != 32
            or len(input_digest) != 32
            or len(output_digest) != 32
        ):
            raise InvalidArgument(
                "request_id must be 16 bytes and each digest 32 bytes; got "
                f"{len(request_id)}, {len(model_digest)}, {len(input_digest)}, "
                f"{len(output_digest)}"
            )
        if trace_id is not None or flags & _DIGEST_FOLLOWS:  # a format 1.2 record
            if flags & _DIGEST_FOLLOWS and output_digest != _NO_DIGEST:
                raise InvalidArgument("a DIGEST_FOLLOWS record's output_digest must be zero")
            fields: tuple[Any, ...] = (
                request_id, model_digest, input_digest, output_digest, state, served_by,
                outcome, flags, code, latency_ns, deadline_ns, answer_age_ns,
            )  # fmt: skip
            if trace_id is None:
                return self._append_packed(_HOT_INFERENCE_12, (*fields, len(payload)), payload)
            _check_trace(trace_id, span_id)
            fields += (trace_id, span_id, len(payload))
            return self._append_packed(_HOT_INFERENCE_TRACED, fields, payload)
        plen = len(payload)
        body_len = _INFERENCE_BODY + plen
        n = (_OVERHEAD + body_len + 7) & ~7
        if n > self._max_record:
            raise RecordTooLarge(
                f"INFERENCE payload of {plen} bytes does not fit (limit "
                f"{self._max_body - _INFERENCE_BODY})",
                size=plen,
                limit=self._max_body - _INFERENCE_BODY,
            )
        lock = self._lock
        lock.acquire()
        try:
            if self._always:
                self._check_storage()
            pos = self._pos
            if pos + n > self._seg_end:  # also taken after close or failure: _seg_end is -1
                pos = self._reserve_slow(n)
            seq = self._next_seq
            try:
                (_INFERENCE_HOT if plen else _INFERENCE_HOT0)(
                    self._buf,
                    pos,
                    n,
                    body_len,
                    _T_INFERENCE,
                    _BODY_VERSION,
                    seq,
                    self._lap,
                    self._durable_seq,
                    self._boot,
                    self._mono(),
                    self._real(),
                    request_id,
                    model_digest,
                    input_digest,
                    output_digest,
                    state,
                    served_by,
                    outcome,
                    flags,
                    code,
                    latency_ns,
                    deadline_ns,
                    answer_age_ns,
                    plen,
                )
            except struct.error as exc:
                self._view[pos : pos + _END_MARK] = _MARK  # pack_into may have begun
                raise InvalidArgument(f"INFERENCE field out of range: {exc}") from None
            if plen:
                end = pos + _INFERENCE_FIXED
                self._view[end : end + plen] = payload
                return self._seal(pos, n, end + plen, seq)
            return self._seal(pos, n, pos + _INFERENCE_CHAIN0, seq)  # padding packed
        finally:
            lock.release()

    def record_inferences(self, rows: Iterable[Sequence[Any]]) -> range:
        """Append one INFERENCE record per row, sealed in one pass under one lock acquisition,
        with one durability action for the batch; return the range of their sequence numbers.

        For callers that have batches (a batched model call, a service draining a queue): per
        record it saves :meth:`record_inference`'s call, argument parsing, lock round trip and
        two clock reads (the records of a batch share one ``mono_ns``/``real_ns``, taken when
        the batch starts), and under ``always`` it syncs once for the batch instead of once a
        record. The records and their bytes are exactly those N calls of
        :meth:`record_inference` would append.

        Crash safety is that of N appends, not more: each record is sealed (chain, CRC)
        before the next one is written, and the bytes after it are zero (the batch zeroes the
        head segment up to 32 KiB ahead of the records it writes, which is what the end mark
        of each single append does 24 bytes at a time), so a crash mid-batch leaves the
        batch's first k records whole followed by zeros or one torn record; recovery finds
        that prefix, never a torn record in the middle. The batch is not atomic. Under
        ``always`` the call returns only once every record of the batch is durable. With a
        sealer, a checkpoint due by count (``every_records``) is sealed where N appends would
        seal it, right after the record that makes it due (under ``always`` the batch's
        records before it are synced first: one more sync per checkpoint); one due by time
        (``every_ms``) is sealed after the batch, whose clock is read once.

        Args:
            rows: :class:`InferenceRow` values, or tuples of the same 13 fields in its order
                (the arguments of :meth:`record_inference`); any iterable, consumed once.

        Returns:
            ``range(first_seq, last_seq + 1)`` (empty for no rows).

        Raises:
            InvalidArgument: a row does not have 13 fields, a digest or id has the wrong
                length, or a number is out of range. The rows before it are appended (the
                message says which seqs); the rest are not.
            RecordTooLarge: a row's payload does not fit (the rows before it are appended).
            LogClosed: after :meth:`close`.
        """
        self._check_storage_always()  # before any store: one into a truncated file is SIGBUS
        lock = self._lock
        lock.acquire()
        first = seq = self._next_seq
        since = (self._pos, self._switches, seq)  # where the batch's unsealed stretch begins
        try:
            buf, view, chain, cp_due = self._buf, self._view, self._chain, self._cp_due_seq
            pos, seg_end, lap, max_record = self._pos, self._seg_end, self._lap, self._max_record
            durable, boot, mono, real = self._durable_seq, self._boot, self._mono(), self._real()
            mid = _MID(lap, durable, boot, mono, real)  # header bytes 16-55 of every record
            # zeroed: bytes from the head to there are zero (none yet)
            sha, crc, trailer, pack, zeroed = _sha256, crc32c, _TRAILER, _INFERENCE_ROW, pos
            for row in rows:
                try:
                    (rid, md, ind, outd, state, served, outcome, lat, dl, code, age, flags, pl) = (
                        row
                    )
                except (TypeError, ValueError):
                    raise self._bad_row(first, seq, "needs the 13 fields of InferenceRow") from None
                if (  # _row_problem, inline: a call per row is ~5 % of the batch
                    len(rid) != 16
                    or len(md) != 32
                    or len(ind) != 32
                    or len(outd) != 32
                    or flags & _DIGEST_FOLLOWS
                ):
                    raise self._bad_row(first, seq, _row_problem(rid, md, ind, outd, flags))
                plen = len(pl)
                n = (_OVERHEAD + _INFERENCE_BODY + plen + 7) & ~7
                if n > max_record:
                    raise RecordTooLarge(
                        f"INFERENCE payload of {plen} bytes does not fit (limit "
                        f"{self._max_body - _INFERENCE_BODY}); {self._appended(first, seq)}",
                        size=plen,
                        limit=self._max_body - _INFERENCE_BODY,
                    )
                if pos + n + _END_MARK > zeroed:  # zero ahead: padding and end marks in bulk
                    if pos + n > seg_end:  # switch segments (or raise LogClosed), state saved
                        self._pos, self._next_seq, self._chain = pos, seq, chain
                        pos = self._reserve_slow(n)
                        seg_end, lap = self._seg_end, self._lap
                        mid = _MID(lap, durable, boot, mono, real)
                    zeroed = min(seg_end, pos + n + _END_MARK + _AHEAD)
                    view[pos:zeroed] = bytes(zeroed - pos)
                try:
                    pack(buf, pos, _H8(n, _INFERENCE_BODY + plen, _T_INFERENCE, _BODY_VERSION)
                         if plen else _ROW0, seq, mid, rid, md, ind, outd, state, served,
                         outcome, flags, code, lat, dl, age, plen)  # fmt: skip
                except struct.error as exc:
                    view[pos : pos + n] = _ZEROS[:n]  # pack_into may have begun: zero again
                    raise self._bad_row(first, seq, f"a field is out of range: {exc}") from None
                if plen:
                    view[pos + _INFERENCE_FIXED : pos + _INFERENCE_FIXED + plen] = pl
                chain = sha(chain + (head := view[pos : pos + n - 36])).digest()  # then the CRC
                trailer(buf, pos + n - 36, chain, crc(chain, crc(head)))
                del head  # a live slice of the mapping would keep it from being closed
                pos, seq = pos + n, seq + 1
                if seq > cp_due:  # a checkpoint is due: seal it where N appends would have
                    (pos, zeroed, chain, seq, seg_end, durable, cp_due, mono, real, mid, since) = (
                        self._batch_point(pos, seq, chain, since)
                    )
        finally:
            if seq > self._next_seq:  # the batch's records since the last write-back
                self._pos, self._next_seq, self._chain = pos, seq, chain
            if seq > since[2] and seq == self._next_seq:
                self._batch_sealed(seq - 1, since[0] if self._switches == since[1] else -1)
            lock.release()
        return range(first, seq)

    def _batch_point(
        self, pos: int, seq: int, chain: bytes, since: tuple[int, int, int]
    ) -> tuple[int, int, bytes, int, int, int, int, int, int, bytes, tuple[int, int, int]]:
        """Mid-batch, a checkpoint came due: write the batch's state back, make its records
        durable (``always``) and seal the checkpoint, as :meth:`_seal` does after the record
        that made it due. Returns the state the batch goes on from (position, zeroed-to,
        chain, seq, segment end, durable seq, next due seq, fresh clock readings -- the
        checkpoint read the clock, and time in the log never goes back -- and the header
        bytes 16-55 they make). Holds the lock."""
        self._pos, self._next_seq, self._chain = pos, seq, chain
        self._batch_sealed(seq - 1, since[0] if self._switches == since[1] else -1)
        mono, real = self._mono(), self._real()
        return (
            self._pos,
            self._pos,
            self._chain,
            self._next_seq,
            self._seg_end,
            self._durable_seq,
            self._cp_due_seq,
            mono,
            real,
            _MID(self._lap, self._durable_seq, self._boot, mono, real),
            (self._pos, self._switches, self._next_seq),
        )

    def _batch_sealed(self, last: int, start: int) -> None:
        """After a batch, what :meth:`_seal` does per record: under ``always`` one sync from
        ``start`` (-1: the head segment's start, after a switch) to the end mark, then the
        checkpoint that came due. Holds the lock."""
        if self._always:
            lo = self._seg_start if start < 0 else start
            self._sync(lo, min(self._pos + _END_MARK, self._seg_end) - lo)
            self._mark_durable(last)
        if last >= self._cp_due_seq:
            self._checkpoint_locked(CheckpointReason.RECORDS)
        elif self._cp_due_ns != _NEVER and self._mono() >= self._cp_due_ns:
            self._checkpoint_locked(CheckpointReason.TIME)

    def _appended(self, first: int, seq: int) -> str:
        return (
            f"seqs {first}..{seq - 1} of the batch were appended"
            if seq > first
            else ("nothing of the batch was appended")
        )

    def _bad_row(self, first: int, seq: int, why: str) -> InvalidArgument:
        return InvalidArgument(
            f"INFERENCE row {seq - first} of the batch: {why}; {self._appended(first, seq)}"
        )

    def record_output_digest(
        self, inference_seq: int, output_digest: bytes, *, output_bytes: int, lag_ns: int
    ) -> int:
        """Append an OUTPUT_DIGEST record (format 1.2): the digest of the output of the
        ``DIGEST_FOLLOWS`` INFERENCE record ``inference_seq``, computed off the caller's path.

        Raises:
            InvalidArgument: the digest is not 32 bytes or a number is out of range.
            LogClosed: after :meth:`close`.
        """
        if len(output_digest) != 32:
            raise InvalidArgument("output_digest must be 32 bytes")
        fields = (inference_seq, output_bytes, lag_ns, output_digest)
        return self._append_packed(_HOT_OUTPUT_DIGEST, fields)

    def _append_packed(
        self,
        hot: _Hot,
        fields: tuple[Any, ...],
        tail: bytes = b"",
        *,
        v12: bool = True,
    ) -> int:
        """Append a record whose header and fixed body part ``hot`` (see :func:`_hot`) packs
        in one call from ``fields``, followed by ``tail``: the bytes :meth:`_commit` would
        write for the same body, without encoding the body first. ``v12``: the record needs
        format 1.2 (as in :meth:`_commit`).

        Raises:
            InvalidArgument: a field is out of range (nothing is appended).
            RecordTooLarge: the body does not fit a record.
            LogClosed: after :meth:`close`.
        """
        pack, fixed, rtype, version, pack_padded, chain_at = hot
        if not tail:  # the padding is packed too
            pack = pack_padded
        body_len = fixed + len(tail)
        if body_len > self._max_body:
            raise RecordTooLarge(
                f"record body of {body_len} bytes exceeds the limit ({self._max_body} bytes)",
                size=body_len,
                limit=self._max_body,
            )
        n = (_OVERHEAD + body_len + 7) & ~7
        with self._lock:
            if v12 and self.geometry.minor < R.MINOR_DIGESTS and not self._closed:
                self._upgrade_minor()
            if self._always:
                self._check_storage()
            pos = self._pos
            if pos + n > self._seg_end:  # also taken after close or failure: _seg_end is -1
                pos = self._reserve_slow(n)
            seq = self._next_seq
            try:
                pack(self._buf, pos, n, body_len, rtype, version, seq, self._lap, self._durable_seq,
                     self._boot, self._mono(), self._real(), *fields)  # fmt: skip
            except struct.error as exc:
                self._view[pos : pos + _END_MARK] = _MARK  # pack_into may have begun
                raise InvalidArgument(
                    f"{RecordType(rtype).name} field out of range: {exc}"
                ) from None
            if tail:
                end = pos + _HEADER_SIZE + fixed
                self._view[end : end + len(tail)] = tail
                return self._seal(pos, n, end + len(tail), seq)
            return self._seal(pos, n, pos + chain_at, seq)

    def _commit(
        self, rtype: int, body: bytes, *, version: int = _BODY_VERSION, v12: bool = False
    ) -> int:
        """Write one record with an encoded body; return its seq. ``v12``: the record needs
        format 1.2 (the superblock says so before the first such record is written).

        Raises:
            RecordTooLarge: the body does not fit a record.
            LogClosed: after :meth:`close`.
        """
        body_len = len(body)
        n = (_OVERHEAD + body_len + 7) & ~7
        if body_len > self._max_body:
            raise RecordTooLarge(
                f"record body of {body_len} bytes exceeds the limit ({self._max_body} bytes)",
                size=body_len,
                limit=self._max_body,
            )
        with self._lock:
            if v12 and self.geometry.minor < R.MINOR_DIGESTS and not self._closed:
                self._upgrade_minor()
            return self._commit_locked(rtype, body, n, version)

    def _upgrade_minor(self) -> None:
        """Rewrite the superblock as format 1.2, before the log's first 1.2 record: copy B
        first, then copy A, each synced (a torn write leaves the other copy in force; a
        reader takes the higher revision). Holds the lock."""
        geo = self.geometry
        values = F.superblock_values(geo, minor=R.MINOR_DIGESTS, revision=geo.revision + 1)
        raw = F.encode_superblock(values)
        for off in reversed(R.SUPERBLOCK_SLOTS):
            self._view[off : off + len(raw)] = raw
            self._sync(off, len(raw))
        self.geometry = dataclasses.replace(geo, minor=R.MINOR_DIGESTS, revision=geo.revision + 1)

    def _commit_locked(self, rtype: int, body: bytes, n: int, version: int = _BODY_VERSION) -> int:
        """Write one record of ``n`` bytes; holds the lock."""
        if self._always:
            self._check_storage()
        pos = self._pos
        if pos + n > self._seg_end:  # also taken after close or failure: _seg_end is -1
            pos = self._reserve_slow(n)
        seq = self._next_seq
        _HDR_PACK(
            self._buf,
            pos,
            n,
            len(body),
            rtype,
            version,
            seq,
            self._lap,
            self._durable_seq,
            self._boot,
            self._mono(),
            self._real(),
        )
        end = pos + _HEADER_SIZE + len(body)
        self._view[pos + _HEADER_SIZE : end] = body
        return self._seal(pos, n, end, seq)

    def _seal(self, pos: int, n: int, end: int, seq: int) -> int:
        """Zero the padding from ``end``, write chain digest and CRC, end-mark, advance.

        The single sealing path for every record type. Holds the lock.
        """
        view = self._view
        chain_at = pos + n - 36
        if end < chain_at:
            view[end:chain_at] = _ZEROS[: chain_at - end]
        head = view[pos:chain_at]
        chain = _sha256(self._chain + head).digest()  # one call: ~30 % less than new+update
        crc = crc32c(chain, crc32c(head))  # CRC32C of the record up to its CRC
        del head  # a live slice of the mapping would keep it from being closed
        end = pos + n
        mark = end + _END_MARK
        if mark <= self._seg_end:  # the trailer and the end mark in one call
            _TRAILER_MARK(self._buf, chain_at, chain, crc)
        else:
            _TRAILER(self._buf, chain_at, chain, crc)
            mark = self._seg_end
            view[end:mark] = _ZEROS[: mark - end]
        self._chain = chain
        self._pos = end
        self._next_seq = seq + 1
        if self._always:
            self._sync(pos, mark - pos)
            self._mark_durable(seq)
        if seq >= self._cp_due_seq:
            self._checkpoint_locked(CheckpointReason.RECORDS)
        elif self._cp_due_ns != _NEVER and self._mono() >= self._cp_due_ns:
            self._checkpoint_locked(CheckpointReason.TIME)
        return seq

    # --- sealing ------------------------------------------------------------------------

    def _attach_sealer(self) -> dict[str, Any]:
        """Check the sealer against the superblock and continue the log's checkpoint
        numbering. Returns what the OPENED record should say about it."""
        geo, sealer = self.geometry, self._sealer
        self._last_cp_seq = self._epoch = 0
        if sealer is None:
            if geo.sealed:
                raise ConfigError(
                    f"{self.path} is sealed (key {geo.key_id.hex()[:16]}…); open it with its "
                    "sealer: sealer=Sealer(key, fss=...)",
                    diagnostic=codes.SEAL_REQUIRED,
                )
            return {}
        if geo.flags & (R.SB_SIGNED | R.SB_FSS) != sealer.superblock_flags or (
            geo.key_id != sealer.key_id
        ):
            raise ConfigError(
                f"{self.path}: sealer (signed={sealer.key is not None}, forward-secure="
                f"{sealer.fss is not None}, key {sealer.key_id.hex()[:16]}…) does not match "
                f"the log (flags {geo.flags}, key {geo.key_id.hex()[:16]}…); a log keeps the "
                "sealing it was created with",
                diagnostic=codes.SEAL_KEY_MISMATCH,
            )
        self._last_cp_seq, last_epoch = self._find_last_checkpoint()
        self._epoch = last_epoch + 1
        note: dict[str, Any] = {"last_checkpoint": self._last_cp_seq, "epoch": self._epoch}
        if sealer.fss is not None:
            sealer.fss.bind(geo.log_id)
            if sealer.fss.epoch > self._epoch:
                # Durable checkpoints the state moved past are missing from the log: the
                # verifier will report the epoch gap; say here that the writer saw it.
                note["epochs_missing"] = [self._epoch, sealer.fss.epoch - 1]
            sealer.fss.advance_to(self._epoch)
            self._epoch = sealer.fss.epoch
            note["epoch"] = self._epoch
            sealer.fss.persist()
        return note

    def _find_last_checkpoint(self) -> tuple[int, int]:
        """``(seq, epoch)`` of the newest CHECKPOINT the log holds, ``(0, 0)`` if none."""
        geo = self.geometry
        live = sorted((s for s in self._segs if s.live), key=lambda s: -s.generation)
        for seg in live:
            base = geo.segment_offset(seg.index)
            best: F.RawRecord | None = None
            for item in F.scan_segment(self._buf, base, geo.segment_size, seg, geo.header_area):
                if (
                    isinstance(item, F.RawRecord)
                    and item.type == _T_CHECKPOINT
                    and item.seq < self._next_seq
                    and (best is None or item.seq > best.seq)
                ):
                    best = item
            if best is not None:
                at = base + best.offset + _HEADER_SIZE
                try:
                    body = _CHECKPOINT.unpack(bytes(self._buf[at : at + best.body_len]))
                except InvalidArgument:
                    continue
                return best.seq, int(body["epoch"])
        return 0, 0

    def checkpoint(self, reason: CheckpointReason = CheckpointReason.REQUESTED) -> int:
        """Seal a checkpoint now; return its seq (0 when the log has no sealer).

        Raises:
            LogClosed: after :meth:`close`.
        """
        if self._sealer is None:
            return 0
        with self._lock:
            if self._closed:
                raise LogClosed(f"{self.path}: flight recorder is closed", path=self.path)
            return self._checkpoint_locked(reason)

    def _checkpoint_locked(self, reason: CheckpointReason) -> int:
        sealer = self._sealer
        assert sealer is not None
        self._cp_due_seq = self._cp_due_ns = _NEVER  # the checkpoint's own _seal must not recurse
        body = sealer.body(
            log_id=self.geometry.log_id,
            covered_seq=self._next_seq - 1,
            chain=self._chain,
            prev_checkpoint_seq=self._last_cp_seq,
            epoch=self._epoch,
            real_ns=self._real(),
            reason=reason,
        )
        seq = self._commit_locked(_T_CHECKPOINT, body, (_OVERHEAD + len(body) + 7) & ~7)
        self._last_cp_seq = seq
        self._epoch += 1
        self._cp_due_seq = seq + sealer.every_records
        if sealer.every_ms:
            self._cp_due_ns = self._mono() + sealer.every_ms * 1_000_000
        sealer.sealed(seq)
        if self._always:
            sealer.durable(seq)
        return seq

    def record_transition(
        self,
        from_state: State | int,
        to_state: State | int,
        *,
        code: int = 0,
        cause_seq: int = 0,
        at_ns: int = 0,
        reason: str = "",
    ) -> int:
        """Append a TRANSITION record.

        Args:
            cause_seq: the record whose outcome caused it (0: time-driven or operator).
            at_ns: the state machine's clock when it changed state (replay uses it).
        """
        return self._append_body(
            RecordType.TRANSITION,
            {
                "from_state": from_state,
                "to_state": to_state,
                "code": code,
                "cause_seq": cause_seq,
                "at_ns": at_ns,
                "reason": reason,
            },
        )

    def record_rejected(
        self,
        *,
        request_id: bytes,
        input_digest: bytes,
        code: int,
        reason: str,
        trace_id: bytes | None = None,
        span_id: bytes = bytes(8),
    ) -> int:
        """Append a REJECTED record for input refused before the model ran; with a trace
        context (``trace_id``, ``span_id``: 16 and 8 bytes) a body_version 2 (format 1.2)."""
        if len(request_id) != 16 or len(input_digest) != 32:
            raise InvalidArgument("request_id must be 16 bytes and input_digest 32 bytes")
        if not isinstance(reason, str):
            raise InvalidArgument(f"REJECTED body: reason must be str, not {type(reason).__name__}")
        text = reason.encode("utf-8", "backslashreplace")  # as every text field (_layout)
        if len(text) > 0xFFFF:
            raise InvalidArgument(f"REJECTED body: reason is {len(text)} bytes, limit 65535")
        if trace_id is None:
            fields: tuple[Any, ...] = (request_id, input_digest, code, len(text))
            return self._append_packed(_HOT_REJECTED, fields, text, v12=False)
        _check_trace(trace_id, span_id)
        fields = (request_id, input_digest, code, trace_id, span_id, len(text))
        return self._append_packed(_HOT_REJECTED_TRACED, fields, text)

    def annotate(self, key: str, text: str) -> int:
        """Append an ANNOTATION record (operator notes, incident markers)."""
        return self._append_body(RecordType.ANNOTATION, {"key": key, "text": text})

    def record_lifecycle(self, event: LifecycleEvent, detail: dict[str, Any]) -> int:
        """Append a LIFECYCLE record for a model event (MODEL_LOADED and after); ``detail``
        becomes its JSON text. OPENED and CLOSED are the writer's own."""
        if event in (LifecycleEvent.OPENED, LifecycleEvent.CLOSED):
            raise InvalidArgument(f"{event.name} is recorded by the writer itself")
        return self._lifecycle(event, detail)

    def _lifecycle(self, event: LifecycleEvent, detail: dict[str, Any]) -> int:
        return self._append_body(
            RecordType.LIFECYCLE,
            {
                "event": event,
                "clock": self._clock.source,
                "durability": self._durability,
                "pid": os.getpid() & 0xFFFFFFFF,
                "boot_uuid": self._clock.boot_uuid,
                "config_digest": self._config_digest,
                "policy_digest": self._policy_digest,
                "detail": json.dumps(detail, sort_keys=True, separators=(",", ":")),
            },
        )

    def _append_body(self, rtype: RecordType, values: dict[str, Any]) -> int:
        return self._commit(int(rtype), R.BODIES[rtype].pack(values))

    def _reserve_slow(self, n: int) -> int:
        """Position for an ``n``-byte record that does not fit the head. Holds the lock."""
        if self._failed is not None:
            raise self._refusal(self._failed)
        if self._closed:
            raise LogClosed(f"{self.path}: flight recorder is closed", path=self.path)
        self._switch()
        return self._pos

    # --- segments -----------------------------------------------------------------------

    def _switch(self) -> None:
        """Start the next segment. Holds the lock; see the module docstring for the order."""
        geo = self.geometry
        ordered = self._durability is not Durability.NONE
        self._check_storage()
        if self._head is not None and ordered:
            self._sync(self._seg_start, self._pos - self._seg_start)
            self._mark_durable(self._next_seq - 1)
        self._switched_unsynced = not ordered
        nxt = self._ring.choose(self._head)
        if nxt is None:  # cannot happen while frozen_quota <= segment_count - 2
            raise FreezeQuotaExceeded(
                f"{self.path}: every segment but the head is frozen; unfreeze one",
                requested=0,
                frozen=len(self._segs) - 1,
                quota=geo.frozen_quota,
            )
        evicted = nxt.generation if nxt.live else None
        gen = self._ring.max_gen + 1
        retained_from = self._ring.retained_from(nxt, self._next_seq)
        slot = 1 - nxt.slot if nxt.status == "valid" else 0
        now = self._clock.realtime_ns()
        values = {
            "version": R.FORMAT_MAJOR,
            "flags": 0,
            "index": nxt.index,
            "generation": gen,
            "revision": 0,
            "wear": nxt.wear + 1,
            "first_seq": self._next_seq,
            "retained_from": retained_from,
            "created_ns": now,
            "log_id": geo.log_id,
            "start_chain": self._chain,
        }
        off = geo.segment_offset(nxt.index) + R.SEGMENT_SLOTS[slot]
        raw = F.encode_segment_header(values)
        self._view[off : off + len(raw)] = raw
        if ordered:
            self._sync(off, len(raw))
        nxt.status, nxt.generation, nxt.revision, nxt.wear = "valid", gen, 0, nxt.wear + 1
        nxt.first_seq, nxt.retained_from, nxt.created_ns = self._next_seq, retained_from, now
        nxt.start_chain, nxt.frozen, nxt.slot, nxt.problems = self._chain, False, slot, []
        self._ring.started(nxt, evicted)
        self._set_head(nxt)
        if self._failed is not None:  # failed by the flusher meanwhile: keep refusing
            self._seg_end = -1
        self._switches += 1

    # --- durability ---------------------------------------------------------------------

    def _sync(self, offset: int, length: int) -> None:
        """Sync a range; a failure fails the writer (DIA-3041). Holds the lock, except from
        :meth:`_sync_head` (which takes it to fail)."""
        try:
            self._storage.sync(offset, length)
        except LogError as exc:
            err = LogIOError(
                f"{self.path}: sync failed ({exc.message}); records after seq "
                f"{self._durable_seq} may not be durable, and the recorder takes no more",
                diagnostic=codes.LOG_SYNC_FAILED,
                path=self.path,
                errno=getattr(exc, "errno", None),
                durable_seq=self._durable_seq,
            )
            self._fail(err)
            raise err from exc
        self._syncs += 1

    def _check_storage_always(self) -> None:
        """:meth:`_check_storage` under durability ``always`` (each append's check)."""
        if self._always:
            self._check_storage()

    def _check_storage(self) -> None:
        """Before a store: fail the writer (DIA-3040) if the file shrank under the mapping."""
        if self._check is not None and self._failed is None:
            try:
                self._check()
            except LogError as exc:
                self._fail(exc)
                raise

    def _refusal(self, failed: LogError) -> LogIOError:
        return LogIOError(
            f"{self.path}: the recorder's storage failed ({failed.code}: {failed.message}); "
            "it takes no more records",
            diagnostic=codes.LOG_FAILED,
            path=self.path,
            first=failed.code,
        )

    def _fail(self, exc: LogError) -> None:
        """Latch the first storage failure: every later append raises DIA-3042 (through the
        slow path, so the hot path pays nothing)."""
        if self._failed is None:
            self._failed = exc
            self._seg_end = -1
            self._failed_event.set()

    @property
    def failed(self) -> LogError | None:
        """The storage failure that stopped this writer (DIA-3040, DIA-3041), or None."""
        return self._failed

    def wait_failed(self, timeout: float | None = None) -> bool:
        """Block until the writer has failed (or ``timeout`` seconds pass); True if it has."""
        return self._failed_event.wait(timeout)

    def _mark_durable(self, seq: int) -> None:
        with self._durable_cv:
            if seq > self._durable_seq:
                self._durable_seq = seq
                self._durable_cv.notify_all()
        if self._sealer is not None:
            self._sealer.durable(seq)

    def _sync_head(self) -> None:
        """Make every appended record durable.

        Under ``batch`` and ``always`` older segments were synced when the writer left them,
        so the head segment's records and end mark suffice; under ``none``, after a switch,
        the whole file is synced (the segments written since are not in offset order).
        """
        with self._lock:
            if self._failed is not None:
                raise self._refusal(self._failed)
            seq = self._next_seq - 1
            if self._switched_unsynced:
                lo, hi = 0, len(self._buf)
                self._switched_unsynced = False
            else:
                lo, hi = self._seg_start, min(self._pos + _END_MARK, self._seg_end)
        try:
            self._check_storage()
            if hi > lo:
                self._sync(lo, hi - lo)
        except BaseException:
            if lo == 0:
                self._switched_unsynced = True
            raise
        self._mark_durable(seq)

    def flush(self) -> int:
        """Make every record appended so far durable; return the durable sequence number."""
        if self._closed:
            raise LogClosed(f"{self.path}: flight recorder is closed", path=self.path)
        self._sync_head()
        return self._durable_seq

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Block until record ``seq`` is durable (or ``timeout`` seconds pass).

        Returns:
            True when ``seq`` is durable.
        """
        with self._durable_cv:
            return self._durable_cv.wait_for(lambda: self._durable_seq >= seq, timeout)

    def _flush_loop(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                if self._pos > self._seg_start and self._durable_seq < self._next_seq - 1:
                    self._sync_head()
                else:  # idle: still look for a truncation before the next store meets it
                    self._check_storage()
        except Exception:  # the writer has failed (see _fail): appends raise it
            return

    @property
    def durable_seq(self) -> int:
        """Highest sequence number known to be on stable storage."""
        return self._durable_seq

    @property
    def head_seq(self) -> int:
        """Sequence number of the last record appended (0 when the log is empty)."""
        return self._next_seq - 1

    def statistics(self) -> WriterStatistics:
        """A consistent snapshot of the writer's counters."""
        with self._lock:
            wear = [s.wear for s in self._segs]
            head = self._head
            return WriterStatistics(
                records=self._next_seq - self._opened_seq,
                head_seq=self._next_seq - 1,
                durable_seq=self._durable_seq,
                head_segment=head.index if head else -1,
                head_generation=head.generation if head else 0,
                segment_switches=self._switches,
                syncs=self._syncs,
                frozen_segments=tuple(s.index for s in self._segs if s.frozen),
                wear_min=min(wear),
                wear_max=max(wear),
            )

    def segment_wear(self) -> list[int]:
        """Wear count of every segment, by index."""
        with self._lock:
            return [s.wear for s in self._segs]

    # --- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Make everything durable, append a CLOSED record, sync it and release the file.

        Safe to call twice; the second call does nothing.
        """
        if self._closed:
            return
        if self._failed is not None:  # already raised to whoever hit it: just let go
            self._drop()
            return
        try:
            # Sync first, so that the CLOSED record vouches (durable_seq) for every record
            # before it: damage to any of them then reads as lost data, never as a tear.
            self._sync_head()
            self._lifecycle(LifecycleEvent.CLOSED, {"records": self._next_seq - self._opened_seq})
            if self._sealer is not None:
                self.checkpoint(CheckpointReason.CLOSED)
            self._sync_head()
        finally:
            self._stop_flusher()
            self._release()

    def _drop(self) -> None:
        """Release the file without a closing record or sync: what a crash leaves behind
        (in-process recovery tests; real crash tests SIGKILL a writer process)."""
        self._stop_flusher()
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._closed = True
            self._seg_end = -1  # sends any late append to the slow path, which raises
        self._view.release()
        self._storage.close()

    def _stop_flusher(self) -> None:
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join()
            self._flusher = None

    def __enter__(self) -> FlightRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_trace(trace_id: bytes, span_id: bytes) -> None:
    """A W3C trace context as the record stores it: a 16-byte trace id that is not all zero
    and an 8-byte span id (zeros: none)."""
    if len(trace_id) != 16 or not any(trace_id) or len(span_id) != 8:
        raise InvalidArgument(
            "trace_id must be 16 bytes, not all zero, and span_id 8 bytes; got "
            f"{len(trace_id)} and {len(span_id)}"
        )


def _row_problem(rid: bytes, md: bytes, ind: bytes, outd: bytes, flags: int) -> str:
    """Why a batch row cannot be appended as it is."""
    if len(rid) != 16 or len(md) != 32 or len(ind) != 32 or len(outd) != 32:
        return "request_id is 16 bytes, each digest 32"
    # a format 1.2 record: record_inference writes it
    return "DIGEST_FOLLOWS needs record_inference (a deferred digest is format 1.2)"


def _check_options(
    durability: str, batch_interval: float, policy_digest: bytes, sealer: Sealer | None
) -> None:
    """Refuse what the writer cannot honour, before it touches the storage."""
    if durability not in _DURABILITY:
        raise ConfigError(f"durability={durability!r}: choose one of none, batch, always")
    if not 0 < batch_interval <= 10:
        raise ConfigError(f"batch_interval={batch_interval}: must be in (0, 10] seconds")
    if len(policy_digest) != 32:
        raise InvalidArgument("policy_digest must be 32 bytes (a SHA-256 digest)")
    if sealer is not None and sealer.fss is not None and durability == "none":
        raise ConfigError(
            "forward-secure sealing needs durability 'batch' or 'always': an epoch key is "
            "erased from disk only once the checkpoint it sealed is durable"
        )
