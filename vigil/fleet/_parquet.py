"""The Parquet dataset: verified records as typed tables, partitioned by log and date.

Layout (docs/EXPORT.md)::

    DIR/_vigil_export.json                              schema version, a watermark per log
    DIR/<table>/log=<log_id>/date=<YYYY-MM-DD>/part-<first>-<last>.parquet
    DIR/logs/log=<log_id>/logs.parquet                  one row per log, rewritten each time

Incremental and idempotent: the state file keeps, per log, ``settled`` (the last seq whose
status can no longer change) and ``watermark`` (the last seq exported). A new export of the
log first removes its part files that begin after ``settled`` (the unsealed tail, which the
next checkpoint may authenticate, and whatever a crashed export left), then exports from
``settled + 1``. Exporting the same log twice leaves the same rows.

Each run also keeps the summaries under ``DIR/_summary/`` (:mod:`vigil.fleet._summary`) in
step with the part files: the run bumps the state's ``generation`` before it touches a part
file and, once every log is written, :meth:`ParquetWriter.finish` replaces the summaries of
the part files it replaced and marks them with that generation.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from vigil import _diagnostics as D
from vigil.errors import ExportDestinationError, ExportForked, ExtraMissing
from vigil.fleet._export import LogOutcome
from vigil.fleet._extras import need
from vigil.fleet._rows import COMMON, LOGS, SCHEMA_VERSION, TABLES, row
from vigil.fleet._summary import covered_generation, update
from vigil.fleet._verified import UNSEALED_TAIL, VerifiedLog

STATE_FILE = "_vigil_export.json"
_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")
BATCH_ROWS = 65_536


def _arrow_type(pa: Any, kind: str) -> Any:
    if kind == "timestamp":
        return pa.timestamp("us", tz="UTC")  # Spark reads no nanosecond timestamps
    return {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "bool": pa.bool_()}[
        kind
    ]


def arrow_schema(columns: tuple[tuple[str, str], ...]) -> Any:
    """The pyarrow schema of a table declared in :mod:`vigil.fleet._rows`."""
    pa = need("pyarrow")
    meta = {b"vigil_export_schema": str(SCHEMA_VERSION).encode()}
    return pa.schema([pa.field(n, _arrow_type(pa, k)) for n, k in columns], metadata=meta)


_NS_PER_DAY = 86_400 * 10**9


@functools.lru_cache(maxsize=64)
def _day_of(day: int) -> str:
    return _day(day * _NS_PER_DAY)


def _day(real_ns: int) -> str:
    try:
        return dt.datetime.fromtimestamp(real_ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return "invalid"


class ParquetWriter:
    """Writes verified logs into the dataset at ``dest`` (one call per log).

    Raises (from the constructor):
        ExportDestinationError: the state file is unreadable or of another schema version.
    """

    def __init__(
        self,
        dest: str,
        *,
        keep_damaged: bool = False,
        batch_rows: int = BATCH_ROWS,
        state: dict[str, Any] | None = None,
        persist: bool = True,
    ) -> None:
        """``state``/``persist``: a Spark task works on the driver's copy of the state and
        hands its entry back instead of writing the shared state file (vigil.fleet.spark)."""
        self.pa = need("pyarrow")
        self.pq = need("pyarrow.parquet")
        self.dest = Path(dest)
        self.keep_damaged = keep_damaged
        self.batch_rows = batch_rows
        self.persist = persist
        self.schemas = {t: arrow_schema(COMMON + cols) for t, cols in TABLES.items()}
        self.logs_schema = arrow_schema(LOGS)
        self.state = state if state is not None else self.load_state()
        self.generation = int(self.state.get("generation", 0))
        # summaries of another generation are stale (an interrupted run): rebuild them all
        self.rebuild = covered_generation(self.dest) != self.generation
        self.touched: dict[str, int] = {}
        """Per log whose part files this run changed: its ``settled`` before the run."""
        self.before: dict[str, int] = {}
        self.begun = False

    def load_state(self) -> dict[str, Any]:
        path = self.dest / STATE_FILE
        if not path.exists():
            return {
                "vigil_export": 1,
                "schema_version": SCHEMA_VERSION,
                "generation": 0,
                "logs": {},
            }
        try:
            state = json.loads(path.read_text("utf-8"))
            version = state["schema_version"]
            logs = state["logs"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ExportDestinationError(
                f"{path}: unreadable export state ({exc}); export into a new directory",
                path=str(path),
            ) from None
        if not isinstance(logs, dict):
            raise ExportDestinationError(
                f"{path}: unreadable export state (logs is not an object); export into a new "
                "directory",
                path=str(path),
            )
        if version != SCHEMA_VERSION:
            raise ExportDestinationError(
                f"{path}: written by export schema {version}, this is {SCHEMA_VERSION}; "
                "export into a new directory",
                path=str(path),
            )
        return dict(state)

    def begin(self) -> None:
        """Start a run: bump and save the generation before any part file changes, so that
        summaries left by an interrupted run are never taken for current."""
        if self.begun:
            return
        self.generation += 1
        self.state["generation"] = self.generation
        self.save_state()
        self.begun = True

    def finish(self) -> None:
        """End a run: bring the summaries up to date with the logs written, then save the
        state (nothing when no log was written, or for a Spark task's writer)."""
        if not self.begun:
            return
        try:
            update(self.dest, None if self.rebuild else self.touched, self.generation)
        except ExtraMissing:  # pyarrow without duckdb: the part files are the export; the
            pass  # summaries stay stale (the reports need duckdb too), the next run rebuilds
        else:
            self.rebuild = False
        self.touched, self.before = {}, {}
        self.save_state()

    def save_state(self) -> None:
        """Write the state file (atomically)."""
        self._atomic(self.dest / STATE_FILE, json.dumps(self.state, indent=1, sort_keys=True))

    def _atomic(self, path: Path, text: str | None = None, table: Any = None) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if table is not None:
                self.pq.write_table(table, tmp)
            else:
                tmp.write_text(text or "", "utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise ExportDestinationError(
                f"{path}: cannot write: {exc.strerror}", path=str(path)
            ) from None

    def _drop_after(self, log_id: str, settled: int) -> int:
        """Remove the log's part files that begin after ``settled`` (a stale tail): how many."""
        removed = 0
        for table in TABLES:
            root = self.dest / table / f"log={log_id}"
            if not root.is_dir():
                continue
            for part in root.glob("date=*/part-*.parquet"):
                m = _PART.match(part.name)
                if m and int(m.group(1)) > settled:
                    part.unlink()
                    removed += 1
        return removed

    def __call__(self, vlog: VerifiedLog, out: LogOutcome) -> None:
        entry = self.state["logs"].get(vlog.log_id)
        settled = int(entry["settled"]) if entry else 0
        watermark = int(entry["watermark"]) if entry else 0
        gaps: list[dict[str, Any]] = list(entry.get("gaps", [])) if entry else []
        anchor = entry.get("settled_chain") if entry else None
        if anchor is not None:
            _same_log(vlog, settled, anchor)  # before anything of this log changes
        if self.persist:
            self.begin()
        before = self.before.setdefault(vlog.log_id, settled)
        first = vlog.report.first_seq
        if entry and first is not None and first > watermark + 1:
            gaps.append(
                {
                    "kind": "EXPORT_GAP",
                    "code": D.EXPORT_GAP.code,
                    "message": f"records {watermark + 1}..{first - 1} were evicted by the ring "
                    "before this export: never exported",
                    "seq": watermark + 1,
                    "last_seq": first - 1,
                    "expected": False,
                }
            )
        removed = self._drop_after(vlog.log_id, settled)
        # a part file never straddles the tail's start: the next export drops the tail's parts
        buffers: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
        undecodable = rows = 0
        last_seq = settled
        first_tail: int | None = None
        last_chain = settled_chain = None  # the chain digest of the last settled record
        for rec, status in vlog.records(settled + 1, keep_damaged=self.keep_damaged):
            table, values = row(rec, vlog.log_id, vlog.device, status)
            last_seq = rec.seq
            if status == UNSEALED_TAIL and first_tail is None:
                first_tail = rec.seq
                settled_chain = last_chain
            last_chain = rec.chain.hex()
            if not table:
                undecodable += 1
                continue
            key = (table, _day_of(rec.real_ns // _NS_PER_DAY), first_tail is not None)
            buf = buffers.setdefault(key, [])
            buf.append(values)
            rows += 1
            if len(buf) >= self.batch_rows:
                out.files.append(self._write_part(vlog.log_id, key, buffers.pop(key)))
        for key, buf in sorted(buffers.items()):
            out.files.append(self._write_part(vlog.log_id, key, buf))
        out.rows = rows
        if removed or out.files:  # only a log whose part files changed has summaries to redo
            self.touched[vlog.log_id] = before
        new_settled = last_seq if first_tail is None else first_tail - 1
        if first_tail is None:
            settled_chain = last_chain
        if new_settled <= settled or settled_chain is None:  # nothing newly settled: as was
            settled_chain = anchor
        totals = {
            "path": vlog.path,
            "device": vlog.device,
            "settled": max(settled, new_settled),
            "watermark": max(watermark, last_seq),
            "undecodable": (int(entry.get("undecodable", 0)) if entry else 0) + undecodable,
            "gaps": gaps,
            "settled_chain": settled_chain,
        }
        self._write_logs_row(vlog, totals)
        self.state["logs"][vlog.log_id] = totals
        if self.persist:
            self.save_state()

    def _write_part(
        self, log_id: str, key: tuple[str, str, bool], rows: list[dict[str, Any]]
    ) -> str:
        table, day, _ = key
        schema = self.schemas[table]
        cols = {f.name: [r[f.name] for r in rows] for f in schema}
        arrays = [
            self.pa.array(cols[f.name], type=self.pa.int64()).cast(f.type)
            if f.name == "time"
            else self.pa.array(cols[f.name], type=f.type)
            for f in schema
        ]
        data = self.pa.Table.from_arrays(arrays, schema=schema)
        name = f"part-{rows[0]['seq']:012d}-{rows[-1]['seq']:012d}.parquet"
        path = self.dest / table / f"log={log_id}" / f"date={day}" / name
        self._atomic(path, table=data)
        return str(path)

    def _write_logs_row(self, vlog: VerifiedLog, totals: dict[str, Any]) -> None:
        rep = vlog.report
        auth = vlog.authenticated
        findings = list(totals["gaps"]) + list(vlog.findings)
        values: dict[str, Any] = {
            "log_id": vlog.log_id,
            "device": vlog.device,
            "path": os.path.abspath(vlog.path),
            "key_id": vlog.key_id,
            "sealed": vlog.sealed,
            "verdict": vlog.verdict,
            "retained_first": rep.first_seq,
            "retained_last": rep.last_seq,
            "authenticated_first": auth[0][0] if auth else None,
            "authenticated_last": max(b for _, b in auth) if auth else None,
            "unsealed_from": vlog.tail_from,
            "damage_seq": vlog.damage_seq,
            "exported_through": totals["watermark"] or None,
            "undecodable": totals["undecodable"],
            "findings": json.dumps(findings, sort_keys=True),
            "exported_at": time.time_ns() // 1000,
            "schema_version": SCHEMA_VERSION,
        }
        arrays = [
            self.pa.array([values[f.name]], type=self.pa.int64()).cast(f.type)
            if f.name == "exported_at"
            else self.pa.array([values[f.name]], type=f.type)
            for f in self.logs_schema
        ]
        data = self.pa.Table.from_arrays(arrays, schema=self.logs_schema)
        self._atomic(self.dest / "logs" / f"log={vlog.log_id}" / "logs.parquet", table=data)


def _same_log(vlog: VerifiedLog, settled: int, anchor: str) -> None:
    """Refuse a log whose record at ``settled`` -- the last one this export settled for its
    log id -- has another chain digest: a fork of that log (a cloned image that went on
    apart), whose records would otherwise be spliced into the other's as one log. A log
    that no longer holds that record (the ring evicted it) cannot be told apart.

    Raises:
        ExportForked: DIA-8011.
    """
    held = next(vlog.records(settled, keep_damaged=True), None)
    if held is None or held[0].seq != settled or held[0].chain.hex() == anchor:
        return
    raise ExportForked(
        f"{vlog.path}: log {vlog.log_id} is already in this export, and its record {settled} "
        "here is not the one exported (another chain digest): a fork of the log -- a cloned "
        "device image, a restored backup that went on -- not a later copy of it; not "
        "exported. Export this copy into another directory, and give a cloned device a "
        "fresh log",
        path=vlog.path,
        seq=settled,
    )
