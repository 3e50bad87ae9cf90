"""The flight log's on-disk structures, declared once with construct (format 1.0).

``docs/FORMAT.md`` is the prose specification of these declarations; the byte offsets written
in the comments are checked by the tests against the derived layouts. Everything is
little-endian and fixed-width. The fast paths (:class:`~vigil.schemas._layout.Layout`) are
derived from these declarations and never written by hand.
"""

from __future__ import annotations

import construct as cs

from vigil.schemas._enums import (
    CheckpointReason,
    ClockSource,
    Durability,
    LifecycleEvent,
    Outcome,
    RecordType,
    ServedBy,
    State,
)
from vigil.schemas._layout import Layout, enum_field

FORMAT_MAJOR = 1
SB_SIGNED = 1  # superblock flags (1.1): checkpoints are signed by the key named by key_id
SB_FSS = 2  # checkpoints carry forward-secure sealing tags
FORMAT_MINOR = 2  # 1.2: OUTPUT_DIGEST records, DIGEST_FOLLOWS, traced bodies (version 2)
MINOR_SEALED = 1  # 1.1: CHECKPOINT bodies and key_id (written only by sealed logs)
MINOR_DIGESTS = 2  # 1.2: written once a log holds a 1.2 record (docs/FORMAT.md §8)
BODY_VERSION = 1
BODY_VERSION_TRACED = 2  # 1.2: INFERENCE and REJECTED bodies that carry a trace context

SUPERBLOCK_MAGIC = b"VIGILLOG"
SEGMENT_MAGIC = b"VIGILSEG"
SECTOR = 512
"""Header slots sit in distinct 512-byte sectors, so a torn sector spoils at most one copy."""
SUPERBLOCK_SLOTS = (0, 512)
SUPERBLOCK_AREA = 4096
"""Segments start after this many bytes."""
SEGMENT_SLOTS = (0, 512)
SEGMENT_HEADER_AREA = 1024
"""Records of a segment start this many bytes after the segment's first byte."""
RECORD_ALIGN = 8
DIGEST_SIZE = 32
CRC_ALG_CRC32C = 1
HASH_ALG_SHA256 = 1
SEGMENT_FROZEN = 0x0001
"""Segment header flag: the writer must not reuse this segment."""

Superblock = cs.Struct(
    "magic" / cs.Const(SUPERBLOCK_MAGIC),  # 0
    "major" / cs.Int16ul,  # 8
    "minor" / cs.Int16ul,  # 10
    "flags" / cs.Int32ul,  # 12   reserved, 0
    "revision" / cs.Int64ul,  # 16   higher revision wins between the two copies
    "log_id" / cs.Bytes(16),  # 24   random identity of this log
    "created_ns" / cs.Int64sl,  # 40   CLOCK_REALTIME at creation
    "sector_size" / cs.Int32ul,  # 48
    "segment_size" / cs.Int32ul,  # 52
    "segment_count" / cs.Int32ul,  # 56
    "frozen_quota" / cs.Int32ul,  # 60   most segments that may be frozen at once
    "segments_offset" / cs.Int64ul,  # 64   file offset of segment 0
    "header_area" / cs.Int32ul,  # 72   bytes at the start of each segment for its header
    "crc_alg" / cs.Int8ul,  # 76   1 = CRC32C (Castagnoli)
    "hash_alg" / cs.Int8ul,  # 77   1 = SHA-256
    cs.Padding(2),  # 78
    "key_id" / cs.Bytes(32),  # 80   signing key id; zeros = none (reserved)
    cs.Padding(140),  # 112
    "crc" / cs.Int32ul,  # 252  CRC32C of bytes 0..251
)  # 256 bytes

SegmentHeader = cs.Struct(
    "magic" / cs.Const(SEGMENT_MAGIC),  # 0
    "version" / cs.Int16ul,  # 8    = FORMAT_MAJOR
    "flags" / cs.Int16ul,  # 10   bit 0: FROZEN
    "index" / cs.Int32ul,  # 12   this segment's index in the file
    "generation" / cs.Int64ul,  # 16   global, +1 at every segment start; = the lap
    "revision" / cs.Int64ul,  # 24   +1 at each in-place rewrite (freeze, unfreeze)
    "wear" / cs.Int64ul,  # 32   times this segment has been started
    "first_seq" / cs.Int64ul,  # 40   sequence number of the segment's first record
    "retained_from" / cs.Int64ul,  # 48   every seq >= this was in the log at start
    "created_ns" / cs.Int64sl,  # 56   CLOCK_REALTIME when the segment was started
    "log_id" / cs.Bytes(16),  # 64   = the superblock's log_id
    "start_chain" / cs.Bytes(32),  # 80   chain digest of record first_seq - 1
    cs.Padding(12),  # 112
    "crc" / cs.Int32ul,  # 124  CRC32C of bytes 0..123
)  # 128 bytes

RecordHeader = cs.Struct(
    "length" / cs.Int32ul,  # 0    whole record, padding and trailer included; % 8 == 0
    "body_len" / cs.Int16ul,  # 4
    "type" / enum_field(RecordType, cs.Int8ul),  # 6
    "body_version" / cs.Int8ul,  # 7
    "seq" / cs.Int64ul,  # 8    1, 2, 3, ... without gaps
    "lap" / cs.Int64ul,  # 16   = generation of the segment it was written in
    "durable_seq" / cs.Int64ul,  # 24   highest seq known durable when this one was appended
    "boot_id" / cs.Int64ul,  # 32   monotonic times compare only within one boot_id
    "mono_ns" / cs.Int64ul,  # 40   CLOCK_MONOTONIC
    "real_ns" / cs.Int64sl,  # 48   CLOCK_REALTIME, ns since the Unix epoch
)  # 56 bytes, then body_len bytes of body, zero padding, and the trailer

RecordTrailer = cs.Struct(
    "chain" / cs.Bytes(32),  # SHA-256(previous chain || record bytes 0..length-37)
    "crc" / cs.Int32ul,  # CRC32C of record bytes 0..length-5
)  # 36 bytes

Record = cs.Struct(
    "length" / cs.Int32ul,
    "body_len" / cs.Int16ul,
    "type" / cs.Int8ul,
    "body_version" / cs.Int8ul,
    "seq" / cs.Int64ul,
    "lap" / cs.Int64ul,
    "durable_seq" / cs.Int64ul,
    "boot_id" / cs.Int64ul,
    "mono_ns" / cs.Int64ul,
    "real_ns" / cs.Int64sl,
    "body" / cs.Bytes(cs.this.body_len),
    "padding" / cs.Bytes(cs.this.length - 92 - cs.this.body_len),
    "chain" / cs.Bytes(32),
    "crc" / cs.Int32ul,
)
"""A whole record, for independent decoding in tests and tools (not used on the hot path)."""

LifecycleBody = cs.Struct(
    "event" / enum_field(LifecycleEvent, cs.Int8ul),
    "clock" / enum_field(ClockSource, cs.Int8ul),
    "durability" / enum_field(Durability, cs.Int8ul),
    cs.Padding(1),
    "pid" / cs.Int32ul,
    "boot_uuid" / cs.Bytes(16),  # the full boot id whose first 8 bytes are boot_id
    "config_digest" / cs.Bytes(32),  # SHA-256 of the writer's canonical configuration
    "policy_digest" / cs.Bytes(32),  # SHA-256 of the safety policy, zeros when none
    "detail" / cs.PascalString(cs.Int16ul, "utf8"),  # JSON object
)

InferenceBody = cs.Struct(
    "request_id" / cs.Bytes(16),
    "model_digest" / cs.Bytes(32),
    "input_digest" / cs.Bytes(32),
    "output_digest" / cs.Bytes(32),
    "state" / enum_field(State, cs.Int8ul),
    "served_by" / enum_field(ServedBy, cs.Int8ul),
    "outcome" / enum_field(Outcome, cs.Int8ul),
    "flags" / cs.Int8ul,  # bit 0: recovery probe; bit 1: shadow run
    "code" / cs.Int16ul,  # diagnostic code number, 0 = none
    cs.Padding(2),
    "latency_ns" / cs.Int64ul,
    "deadline_ns" / cs.Int64ul,
    "answer_age_ns" / cs.Int64ul,  # age of a fallback answer (last good output), else 0
    "payload" / cs.Prefixed(cs.Int16ul, cs.GreedyBytes),
)

InferenceBodyTraced = cs.Struct(
    *InferenceBody.subcons[:-1],  # bytes 0-143 as in body_version 1
    "trace_id" / cs.Bytes(16),  # 144  W3C trace-id (never all zero)
    "span_id" / cs.Bytes(8),  # 160  W3C parent-id of the caller's span; zeros = none
    "payload" / cs.Prefixed(cs.Int16ul, cs.GreedyBytes),  # 168
)
"""Format 1.2: an INFERENCE body of body_version 2 (the call carried a trace context)."""

OutputDigestBody = cs.Struct(
    "inference_seq" / cs.Int64ul,  # 0   the DIGEST_FOLLOWS INFERENCE record this completes
    "output_bytes" / cs.Int64ul,  # 8   bytes of tensor data the digest covers
    "lag_ns" / cs.Int64ul,  # 16  from the INFERENCE append to this digest's hashing end
    "output_digest" / cs.Bytes(32),  # 24  the output digest the INFERENCE record left zero
)  # 56 bytes
"""Format 1.2: the output digest of a call whose digest was computed off the caller's path."""

TransitionBody = cs.Struct(
    "from_state" / enum_field(State, cs.Int8ul),
    "to_state" / enum_field(State, cs.Int8ul),
    "code" / cs.Int16ul,
    cs.Padding(4),
    "cause_seq" / cs.Int64ul,  # the record whose outcome caused it, 0 = none (time-driven)
    "at_ns" / cs.Int64ul,  # the state machine's clock when it changed state (for replay)
    "reason" / cs.PascalString(cs.Int16ul, "utf8"),
)

RejectedBody = cs.Struct(
    "request_id" / cs.Bytes(16),
    "input_digest" / cs.Bytes(32),
    "code" / cs.Int16ul,
    cs.Padding(6),
    "reason" / cs.PascalString(cs.Int16ul, "utf8"),
)

RejectedBodyTraced = cs.Struct(
    *RejectedBody.subcons[:-1],  # bytes 0-55 as in body_version 1
    "trace_id" / cs.Bytes(16),  # 56
    "span_id" / cs.Bytes(8),  # 72
    "reason" / cs.PascalString(cs.Int16ul, "utf8"),  # 80
)
"""Format 1.2: a REJECTED body of body_version 2 (the call carried a trace context)."""

AnnotationBody = cs.Struct(
    "key" / cs.PascalString(cs.Int8ul, "utf8"),
    "text" / cs.PascalString(cs.Int16ul, "utf8"),
)

CheckpointBody = cs.Struct(
    "sig_alg" / cs.Int8ul,  # 0 = unsigned, 1 = Ed25519, 2 = ECDSA P-384 (KeyAlgorithm)
    "flags" / cs.Int8ul,  # bit 0: fss_tag is set (forward-secure sealing)
    "reason" / enum_field(CheckpointReason, cs.Int8ul),
    cs.Padding(1),
    "every_records" / cs.Int32ul,  # the writer's checkpoint interval, in records
    "every_ms" / cs.Int32ul,  # and in milliseconds (0 = none)
    cs.Padding(4),
    "covered_seq" / cs.Int64ul,  # the last record this checkpoint covers: its own seq - 1
    "prev_checkpoint_seq" / cs.Int64ul,  # the previous checkpoint of this log, 0 = none
    "epoch" / cs.Int64ul,  # 1, 2, 3 ... per checkpoint of this log
    "real_ns" / cs.Int64sl,  # the writer's CLOCK_REALTIME when it sealed
    "chain" / cs.Bytes(32),  # chain digest of record covered_seq
    "key_id" / cs.Bytes(32),  # SHA-256 of the signing key's DER public key; zeros = unsigned
    "fss_id" / cs.Bytes(16),  # identity of the forward-secure sealing seed; zeros = none
    "fss_tag" / cs.Bytes(32),  # HMAC-SHA256 under the epoch's key; zeros = none
    "signature" / cs.Prefixed(cs.Int16ul, cs.GreedyBytes),  # 64 (Ed25519) / 96 (P-384) or 0
)
"""Format 1.1: a signed checkpoint (docs/FORMAT.md §5, docs/SECURITY.md)."""

LegacyCheckpointBody = cs.Struct(
    "opaque" / cs.Prefixed(cs.Int16ul, cs.GreedyBytes),
)
"""Format 1.0 reserved CHECKPOINT bodies as opaque bytes; readers still decode those."""

CHECKPOINT_SIGNED_PREFIX = 128
"""Bytes 0-127 of a CHECKPOINT body are what the FSS tag covers; the signature covers them
and the tag (bytes 0-159)."""

FssState = cs.Struct(
    "magic" / cs.Const(b"VIGILFSS"),
    "version" / cs.Int16ul,  # 1
    cs.Padding(6),
    "fss_id" / cs.Bytes(16),
    "log_id" / cs.Bytes(16),  # the log this sealing chain is bound to; zeros until first use
    "epoch" / cs.Int64ul,  # the epoch the key below seals next
    "key" / cs.Bytes(32),
    "crc" / cs.Int32ul,  # CRC32C of the bytes before it
)
"""The device's forward-secure sealing state file (only the current epoch's key)."""

FssSeed = cs.Struct(
    "magic" / cs.Const(b"VIGILFSV"),
    "version" / cs.Int16ul,  # 1
    cs.Padding(6),
    "fss_id" / cs.Bytes(16),
    "seed" / cs.Bytes(32),
    "crc" / cs.Int32ul,
)
"""The verifier's forward-secure sealing seed file (derives every epoch's key)."""

SUPERBLOCK = Layout("superblock", Superblock)
SEGMENT_HEADER = Layout("segment header", SegmentHeader)
FSS_STATE = Layout("FSS state", FssState)
LEGACY_CHECKPOINT = Layout("CHECKPOINT body (1.0)", LegacyCheckpointBody)
FSS_SEED = Layout("FSS seed", FssSeed)
RECORD_HEADER = Layout("record header", RecordHeader)
RECORD_TRAILER = Layout("record trailer", RecordTrailer)

BODIES: dict[RecordType, Layout] = {
    RecordType.LIFECYCLE: Layout("LIFECYCLE body", LifecycleBody),
    RecordType.INFERENCE: Layout("INFERENCE body", InferenceBody),
    RecordType.TRANSITION: Layout("TRANSITION body", TransitionBody),
    RecordType.REJECTED: Layout("REJECTED body", RejectedBody),
    RecordType.ANNOTATION: Layout("ANNOTATION body", AnnotationBody),
    RecordType.CHECKPOINT: Layout("CHECKPOINT body", CheckpointBody),
    RecordType.OUTPUT_DIGEST: Layout("OUTPUT_DIGEST body", OutputDigestBody),
}
TRACED_BODIES: dict[RecordType, Layout] = {
    RecordType.INFERENCE: Layout("INFERENCE body (traced)", InferenceBodyTraced),
    RecordType.REJECTED: Layout("REJECTED body (traced)", RejectedBodyTraced),
}
"""Body version 2 (format 1.2) of the record types that carry a trace context."""

HEADER_SIZE = RECORD_HEADER.fixed_size
TRAILER_SIZE = RECORD_TRAILER.fixed_size
MIN_RECORD = HEADER_SIZE + TRAILER_SIZE + 4  # 96: an empty body, padded to 8
MAX_BODY = 0xFFFF

# Every layout is checked against the byte offsets above when the module loads.
assert SUPERBLOCK.fixed_size == 256
assert SEGMENT_HEADER.fixed_size == 128
assert HEADER_SIZE == 56
assert TRAILER_SIZE == 36
assert BODIES[RecordType.OUTPUT_DIGEST].fixed_size == 56
assert TRACED_BODIES[RecordType.INFERENCE].fixed_size == 168
assert TRACED_BODIES[RecordType.REJECTED].fixed_size == 80
