"""The log as an ASAM MDF4 file, for measurement tools (asammdf, CANape, ...).

Two channel groups on the records' times (seconds from the first record; the file header's
start time is that record's ``real_ns``):

* ``inference``: ``latency`` (ms), ``state``, ``served_by``, ``outcome`` (uint8, with
  value-to-text conversions naming each value), ``code`` (the DIA number, 0 none),
  ``status`` (0 authenticated, 1 chain_valid, 2 unsealed_tail, 3 after_damage; named).
* ``transition``: ``to_state`` and ``from_state`` (named), ``code``.

The file comment holds the log's verification summary as JSON.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from pathlib import Path
from typing import Any

from vigil.errors import ExportDestinationError
from vigil.fleet._export import LogOutcome
from vigil.fleet._extras import need
from vigil.fleet._files import commit, summary, target
from vigil.fleet._verified import STATUSES, VerifiedLog
from vigil.schemas import Outcome, RecordType, ServedBy, State


def value_to_text(kind: type[enum.IntEnum] | tuple[str, ...]) -> dict[str, Any]:
    """An asammdf value-to-text conversion naming each value."""
    pairs = (
        [(m.value, m.name) for m in kind] if not isinstance(kind, tuple) else list(enumerate(kind))
    )
    conv: dict[str, Any] = {}
    for i, (value, text) in enumerate(pairs):
        conv[f"val_{i}"] = value
        conv[f"text_{i}"] = text
    conv["default"] = b""
    return conv


class MdfWriter:
    """Writes each verified log to ``DIR/<log_id>.mf4`` (whole, replacing an earlier one)."""

    def __init__(self, dest: str, *, keep_damaged: bool = False) -> None:
        self.asammdf = need("asammdf")
        self.np = need("numpy")
        self.dest = dest
        self.keep_damaged = keep_damaged

    def __call__(self, vlog: VerifiedLog, out: LogOutcome) -> None:
        inf: dict[str, list[Any]] = {k: [] for k in ("t", "lat", "st", "sb", "oc", "code", "vs")}
        tr: dict[str, list[Any]] = {k: [] for k in ("t", "to", "fr", "code")}
        t0: int | None = None
        for rec, status in vlog.records(keep_damaged=self.keep_damaged):
            b = rec.body
            if "raw" in b or rec.type not in (RecordType.INFERENCE, RecordType.TRANSITION):
                continue
            t0 = rec.real_ns if t0 is None else t0
            t = (rec.real_ns - t0) / 1e9
            if rec.type == RecordType.INFERENCE:
                inf["t"].append(t)
                inf["lat"].append(b["latency_ns"] / 1e6)
                inf["st"].append(int(b["state"]))
                inf["sb"].append(int(b["served_by"]))
                inf["oc"].append(int(b["outcome"]))
                inf["code"].append(int(b["code"]))
                inf["vs"].append(STATUSES.index(status))
            else:
                tr["t"].append(t)
                tr["to"].append(int(b["to_state"]))
                tr["fr"].append(int(b["from_state"]))
                tr["code"].append(int(b["code"]))
            out.rows += 1
        final, _ = target(self.dest, vlog, ".mf4")
        tmp = final.with_name(f".{final.stem}.tmp.mf4")  # asammdf keeps an .mf4 suffix
        mdf = self.asammdf.MDF(version="4.10")
        start = dt.datetime.fromtimestamp((t0 or 0) / 1e9, tz=dt.timezone.utc)
        mdf.header.start_time = start
        mdf.header.comment = json.dumps(summary(vlog), sort_keys=True)
        if inf["t"]:
            mdf.append(self._inference(inf), acq_name="inference", comment="INFERENCE records")
        if tr["t"]:
            mdf.append(self._transition(tr), acq_name="transition", comment="TRANSITION records")
        try:
            tmp = Path(mdf.save(tmp, overwrite=True))
        except OSError as exc:
            raise ExportDestinationError(
                f"{tmp}: cannot write: {exc.strerror}", path=str(tmp)
            ) from None
        finally:
            mdf.close()
        commit(tmp, final)
        out.files.append(str(final))

    def _signal(self, v: dict[str, list[Any]], key: str, name: str, **kw: Any) -> Any:
        dtype = self.np.float64 if key == "lat" else self.np.uint16 if key == "code" else "u1"
        return self.asammdf.Signal(
            self.np.array(v[key], dtype=dtype),
            self.np.array(v["t"], dtype=self.np.float64),
            name=name,
            **kw,
        )

    def _inference(self, v: dict[str, list[Any]]) -> list[Any]:
        return [
            self._signal(v, "lat", "latency", unit="ms"),
            self._signal(v, "st", "state", conversion=value_to_text(State)),
            self._signal(v, "sb", "served_by", conversion=value_to_text(ServedBy)),
            self._signal(v, "oc", "outcome", conversion=value_to_text(Outcome)),
            self._signal(v, "code", "code", comment="diagnostic code number, 0 = none"),
            self._signal(v, "vs", "status", conversion=value_to_text(STATUSES)),
        ]

    def _transition(self, v: dict[str, list[Any]]) -> list[Any]:
        return [
            self._signal(v, "to", "to_state", conversion=value_to_text(State)),
            self._signal(v, "fr", "from_state", conversion=value_to_text(State)),
            self._signal(v, "code", "transition_code", comment="diagnostic code number"),
        ]
