"""The log as an MCAP file, for Foxglove: one channel per record type, on the log's time.

Each message is the record exactly as ``vigil dump --format jsonl`` prints it, plus
``status`` (its verification status) and, where a plot reads better than a name, ``plot``:
the enums as numbers and the latency in milliseconds (``/vigil/inference.plot.latency_ms``,
``.plot.state``, ``.plot.served_by``). Log and publish times are the records' ``real_ns``;
``sequence`` is the seq (mod 2^32). Channels carry a JSON schema (``jsonschema`` encoding)
and the file a ``vigil.log`` metadata record with the log's verification summary.
"""

from __future__ import annotations

import json
from typing import Any

from vigil.errors import ExportDestinationError
from vigil.fleet._export import LogOutcome
from vigil.fleet._extras import need
from vigil.fleet._files import commit, summary, target
from vigil.fleet._verified import VerifiedLog
from vigil.schemas import RecordType

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
_PLOTTED = {
    RecordType.INFERENCE: ("state", "served_by", "outcome"),
    RecordType.TRANSITION: ("from_state", "to_state"),
}


def topic(rtype: RecordType | int) -> str:
    """``/vigil/inference``, ``/vigil/transition``...; ``/vigil/type_N`` for a newer type."""
    return f"/vigil/{rtype.name.lower() if isinstance(rtype, RecordType) else f'type_{rtype}'}"


def _schema(name: str, message: dict[str, Any]) -> bytes:
    props = {k: {"type": _JSON_TYPES.get(type(v), "string")} for k, v in message.items()}
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": name}
    return json.dumps({**doc, "type": "object", "properties": props}, sort_keys=True).encode()


class McapWriter:
    """Writes each verified log to ``DIR/<log_id>.mcap`` (whole, replacing an earlier one)."""

    def __init__(self, dest: str, *, keep_damaged: bool = False) -> None:
        self.writer_mod = need("mcap.writer")
        self.dest = dest
        self.keep_damaged = keep_damaged

    def __call__(self, vlog: VerifiedLog, out: LogOutcome) -> None:
        final, tmp = target(self.dest, vlog, ".mcap")
        try:
            with open(tmp, "wb") as f:
                out.rows = self._write(f, vlog)
        except OSError as exc:
            raise ExportDestinationError(
                f"{tmp}: cannot write: {exc.strerror}", path=str(tmp)
            ) from None
        commit(tmp, final)
        out.files.append(str(final))

    def _write(self, f: Any, vlog: VerifiedLog) -> int:
        w = self.writer_mod.Writer(f)
        w.start(profile="", library="vigil")
        channels: dict[int, int] = {}
        n = 0
        for rec, status in vlog.records(keep_damaged=self.keep_damaged):
            message: dict[str, Any] = {**rec.to_json(), "status": status}
            fields = _PLOTTED.get(rec.type, ()) if isinstance(rec.type, RecordType) else ()
            if fields and "raw" not in rec.body:
                plot: dict[str, Any] = {k: int(rec.body[k]) for k in fields}
                if rec.type == RecordType.INFERENCE:
                    plot["latency_ms"] = rec.body["latency_ns"] / 1e6
                message["plot"] = plot
            key = int(rec.type)
            if key not in channels:
                name = f"vigil.{topic(rec.type).rsplit('/', 1)[1]}"
                schema_id = w.register_schema(
                    name=name, encoding="jsonschema", data=_schema(name, message)
                )
                channels[key] = w.register_channel(
                    topic=topic(rec.type), message_encoding="json", schema_id=schema_id
                )
            when = max(rec.real_ns, 0)
            w.add_message(
                channel_id=channels[key],
                log_time=when,
                publish_time=when,
                sequence=rec.seq & 0xFFFFFFFF,
                data=json.dumps(message, sort_keys=True).encode(),
            )
            n += 1
        w.add_metadata(name="vigil.log", data=summary(vlog))
        w.finish()
        return n
