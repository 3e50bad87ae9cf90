"""The export's tables: their columns (declared once) and how a record becomes a row.

Every record table starts with the same columns (:data:`COMMON`); docs/EXPORT.md is the
prose of these declarations. Types are Arrow's, by name: ``string``, ``int32``, ``int64``,
``bool``, ``timestamp`` (microseconds, UTC: what Spark, DuckDB and pandas all read; the
exact nanoseconds are in ``real_ns``).
"""

from __future__ import annotations

import enum
from typing import Any

from vigil.auditlog import LogRecord
from vigil.schemas import CallFlags, RecordType

SCHEMA_VERSION = 2
"""Bumped on any change of a column's name, type or meaning, or of the dataset's layout
(docs/EXPORT.md). 2: the summaries under ``_summary/`` and the state's ``generation``."""
READABLE_VERSIONS = (1, 2)
"""The schemas the reports read: 1 has the same record tables and no summaries (the reports
read its raw tables); an export into a directory of another schema is refused."""

COMMON: tuple[tuple[str, str], ...] = (
    ("log_id", "string"),
    ("device", "string"),
    ("seq", "int64"),
    ("time", "timestamp"),
    ("real_ns", "int64"),
    ("mono_ns", "int64"),
    ("boot_id", "string"),
    ("status", "string"),
)

TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "inferences": (
        ("state", "string"),
        ("served_by", "string"),
        ("outcome", "string"),
        ("code", "int32"),
        ("latency_ns", "int64"),
        ("deadline_ns", "int64"),
        ("answer_age_ns", "int64"),
        ("probe", "bool"),
        ("shadow", "bool"),
        ("counted", "bool"),
        ("known_answer", "bool"),
        ("flags", "int32"),
        ("request_id", "string"),
        ("model_digest", "string"),
        ("input_digest", "string"),
        ("output_digest", "string"),
        ("payload_bytes", "int32"),
    ),
    "transitions": (
        ("from_state", "string"),
        ("to_state", "string"),
        ("code", "int32"),
        ("cause_seq", "int64"),
        ("at_ns", "int64"),
        ("reason", "string"),
    ),
    "lifecycle": (
        ("event", "string"),
        ("clock", "string"),
        ("durability", "string"),
        ("pid", "int64"),
        ("boot_uuid", "string"),
        ("config_digest", "string"),
        ("policy_digest", "string"),
        ("detail", "string"),
    ),
    "checkpoints": (
        ("reason", "string"),
        ("epoch", "int64"),
        ("covered_seq", "int64"),
        ("prev_checkpoint_seq", "int64"),
        ("sealed_ns", "int64"),
        ("sig_alg", "int32"),
        ("every_records", "int64"),
        ("every_ms", "int64"),
        ("key_id", "string"),
        ("fss_id", "string"),
    ),
    "rejections": (
        ("code", "int32"),
        ("reason", "string"),
        ("request_id", "string"),
        ("input_digest", "string"),
    ),
    "annotations": (
        ("key", "string"),
        ("text", "string"),
    ),
}
"""Per record table, the columns after :data:`COMMON`."""

LOGS: tuple[tuple[str, str], ...] = (
    ("log_id", "string"),
    ("device", "string"),
    ("path", "string"),
    ("key_id", "string"),
    ("sealed", "bool"),
    ("verdict", "string"),
    ("retained_first", "int64"),
    ("retained_last", "int64"),
    ("authenticated_first", "int64"),
    ("authenticated_last", "int64"),
    ("unsealed_from", "int64"),
    ("damage_seq", "int64"),
    ("exported_through", "int64"),
    ("undecodable", "int64"),
    ("findings", "string"),
    ("exported_at", "timestamp"),
    ("schema_version", "int32"),
)
"""The ``logs`` table: one row per log, rewritten at each export (``findings`` is JSON)."""

TABLE_OF: dict[int, str] = {
    RecordType.INFERENCE: "inferences",
    RecordType.TRANSITION: "transitions",
    RecordType.LIFECYCLE: "lifecycle",
    RecordType.CHECKPOINT: "checkpoints",
    RecordType.REJECTED: "rejections",
    RecordType.ANNOTATION: "annotations",
}


_PROBE, _SHADOW = int(CallFlags.PROBE), int(CallFlags.SHADOW)
_COUNTED, _KNOWN = int(CallFlags.COUNTED), int(CallFlags.KNOWN_ANSWER)


def name(value: Any) -> str:
    """An enum member's name; an unknown (newer) value as its number."""
    return value.name if isinstance(value, enum.Enum) else str(value)


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, bytes | bytearray) else str(value)


def row(rec: LogRecord, log_id: str, device: str, status: str) -> tuple[str, dict[str, Any]]:
    """The table and the row for one record, or ``("", {})`` for one that cannot be a row
    (an unknown type, a body that does not decode): the caller counts those."""
    table = TABLE_OF.get(int(rec.type), "")
    b = rec.body
    if not table or "raw" in b:
        return "", {}
    out: dict[str, Any] = {
        "log_id": log_id,
        "device": device,
        "seq": rec.seq,
        "time": rec.real_ns // 1000,
        "real_ns": rec.real_ns,
        "mono_ns": rec.mono_ns,
        "boot_id": f"{rec.boot_id:016x}",
        "status": status,
    }
    if table == "inferences":
        flags = int(b["flags"])
        out.update(
            state=name(b["state"]),
            served_by=name(b["served_by"]),
            outcome=name(b["outcome"]),
            code=int(b["code"]),
            latency_ns=int(b["latency_ns"]),
            deadline_ns=int(b["deadline_ns"]),
            answer_age_ns=int(b["answer_age_ns"]),
            probe=bool(flags & _PROBE),
            shadow=bool(flags & _SHADOW),
            counted=bool(flags & _COUNTED),
            known_answer=bool(flags & _KNOWN),
            flags=flags,
            request_id=_hex(b["request_id"]),
            model_digest=_hex(b["model_digest"]),
            input_digest=_hex(b["input_digest"]),
            output_digest=_hex(b["output_digest"]),
            payload_bytes=len(b["payload"]),
        )
    elif table == "transitions":
        out.update(
            from_state=name(b["from_state"]),
            to_state=name(b["to_state"]),
            code=int(b["code"]),
            cause_seq=int(b["cause_seq"]),
            at_ns=int(b["at_ns"]),
            reason=b["reason"],
        )
    elif table == "lifecycle":
        out.update(
            event=name(b["event"]),
            clock=name(b["clock"]),
            durability=name(b["durability"]),
            pid=int(b["pid"]),
            boot_uuid=_hex(b["boot_uuid"]),
            config_digest=_hex(b["config_digest"]),
            policy_digest=_hex(b["policy_digest"]),
            detail=b["detail"],
        )
    elif table == "checkpoints":
        if "covered_seq" not in b:  # a 1.0 log's opaque checkpoint body
            return "", {}
        out.update(
            reason=name(b["reason"]),
            epoch=int(b["epoch"]),
            covered_seq=int(b["covered_seq"]),
            prev_checkpoint_seq=int(b["prev_checkpoint_seq"]),
            sealed_ns=int(b["real_ns"]),
            sig_alg=int(b["sig_alg"]),
            every_records=int(b["every_records"]),
            every_ms=int(b["every_ms"]),
            key_id=_hex(b["key_id"]),
            fss_id=_hex(b["fss_id"]),
        )
    elif table == "rejections":
        out.update(
            code=int(b["code"]),
            reason=b["reason"],
            request_id=_hex(b["request_id"]),
            input_digest=_hex(b["input_digest"]),
        )
    else:
        out.update(key=b["key"], text=b["text"])
    return table, out
