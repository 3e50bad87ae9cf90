"""Fleet reports: SQL over the exported dataset, in an embedded DuckDB.

:func:`connect` opens an in-memory DuckDB whose views are the dataset's tables, verified rows
only: ``inferences``, ``transitions``, ``lifecycle``, ``checkpoints``, ``rejections``,
``annotations`` hold no ``after_damage`` row (``<table>_all`` views hold every exported row),
and ``logs`` has one row per log with its verdict and findings. The built-in reports
(:data:`REPORTS`) are plain SQL over those views; ``--sql`` runs the user's own.

At scale a report's cost is the passes over the files, not the SQL. The reports read four
relations that an export of schema 2 writes as summaries (:mod:`vigil.fleet._summary`,
``DIR/_summary/``): ``call_groups`` (the verified calls per log, model digest, UTC day,
known-answer and primary-or-not), ``transition_rows`` (the verified transitions),
``call_faults`` (the verified calls whose outcome is not OK) and ``primary_latency`` (the
latency of every verified primary answer). When the summaries are missing or stale (a
dataset of schema 1, an interrupted export) the same four names are defined over the raw
tables instead (``call_groups`` and ``transition_rows`` built once per connection on first
use), with the same columns and rows. tests/test_fleet.py keeps the plain one-query form of
each report as an oracle both forms must match row for row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vigil import _diagnostics as D
from vigil.errors import ReportError
from vigil.fleet._extras import need
from vigil.fleet._rows import COMMON, LOGS, READABLE_VERSIONS, SCHEMA_VERSION, TABLES
from vigil.fleet._summary import (
    DIGEST_SQL,
    FILES,
    covered_generation,
    empty_latency,
    summary_files,
    summary_glob,
    summary_path,
)

STATE_FILE = "_vigil_export.json"
_DUCK = {
    "string": "VARCHAR",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
}
_DAY_NS = 86_400 * 10**9

SUMMARY = "call_groups"
"""The verified calls grouped per log, model digest, UTC day, known-answer, primary-or-not."""
CHANGES = "transition_rows"
"""The verified ``transitions``."""
FAULTS = "call_faults"
"""The verified calls whose outcome is not OK."""
LATENCY = "primary_latency"
"""The latency of every verified primary answer (``device``, ``model_digest``, ``latency_ns``)."""
DIGEST = "latency_digest"
"""Per device and 12-digit model: calls, p50, p99 and max latency (ns) of the primary answers."""

_GROUPS = f"""
SELECT log_id, device, model_digest, real_ns // {_DAY_NS} AS utc_day, known_answer,
       served_by <> 'PRIMARY' AS not_primary,
       count(*) AS calls, min(real_ns) AS first_ns, max(real_ns) AS last_ns,
       min(time) AS first_time, max(time) AS last_time,
       min(seq) AS first_seq, arg_min(state, seq) AS first_state
FROM inferences GROUP BY ALL
"""
# One pass over the calls answers three reports: ``states`` (each log's first and last call
# and its first state), ``fallback`` (calls per device, model and UTC day) and ``models``.
# A group is one log, model digest, UTC day, known-answer flag and primary-or-not: a few rows
# per log and day, so the reports read thousands of rows, not millions.
_CACHED = {
    CHANGES: f"CREATE TEMP TABLE IF NOT EXISTS {CHANGES} AS SELECT * FROM transitions",
    SUMMARY: f"CREATE TEMP TABLE IF NOT EXISTS {SUMMARY} AS {_GROUPS}",
}
"""Over the raw tables: built on the first query of a connection that names them."""
_RAW_VIEWS = {
    FAULTS: "SELECT log_id, device, seq, time, outcome, code FROM inferences WHERE outcome <> 'OK'",
    LATENCY: "SELECT device, model_digest, latency_ns, log_id FROM inferences "
    "WHERE served_by = 'PRIMARY'",
    DIGEST: DIGEST_SQL.format(source=LATENCY),
}
_TRANSITION_COLUMNS = ", ".join(n for n, _ in COMMON + TABLES["transitions"])
_SUMMARY_VIEWS = {
    CHANGES: f"SELECT {_TRANSITION_COLUMNS} FROM {{transitions}}",
    SUMMARY: """
        SELECT log_id, device, model_digest, utc_day, known_answer, not_primary,
               CAST(sum(calls) AS BIGINT) AS calls, min(first_ns) AS first_ns,
               max(last_ns) AS last_ns, min(first_time) AS first_time,
               max(last_time) AS last_time, min(first_seq) AS first_seq,
               arg_min(first_state, first_seq) AS first_state
        FROM {calls} GROUP BY ALL""",
    FAULTS: "SELECT log_id, device, seq, time, outcome, code FROM {faults}",
    LATENCY: "SELECT device, model_digest, latency_ns, log_id FROM {latency}",
    DIGEST: "SELECT * FROM {latency_digest}",
}
"""Over the export's summaries (schema 2): the same columns and rows as over the raw tables."""

REPORTS: dict[str, tuple[str, str]] = {
    "states": (
        "time in each state, per device (seconds), from the transitions' timeline",
        # a log whose rows carry two device names (--device-from changed between exports)
        # counts under the name of its newest rows: any_value would pick one by scan order,
        # differently over the raw rows and over the summaries
        f"""
        WITH changes AS (SELECT log_id, device, seq, real_ns, from_state, to_state FROM {CHANGES}),
        calls AS (
            SELECT log_id, arg_max(device, last_ns) AS device, min(first_ns) AS t0,
                   max(last_ns) AS t1, arg_min(first_state, first_seq) AS state
            FROM {SUMMARY} GROUP BY log_id),
        changed AS (
            SELECT log_id, arg_max(device, real_ns) AS device, min(real_ns) AS t0,
                   max(real_ns) AS t1, arg_min(from_state, seq) AS state
            FROM changes GROUP BY log_id),
        bounds AS MATERIALIZED (
            SELECT log_id, CASE WHEN c.t1 IS NULL OR x.t1 > c.t1 THEN x.device
                                ELSE c.device END AS device,
                   least(coalesce(c.t0, x.t0), coalesce(x.t0, c.t0)) AS t0,
                   greatest(coalesce(c.t1, x.t1), coalesce(x.t1, c.t1)) AS t1,
                   x.state AS before_first_change, x.t0 AS first_change, c.state AS first_call
            FROM calls c FULL JOIN changed x USING (log_id)),
        steps AS (
            SELECT t.log_id, t.to_state AS state, t.real_ns AS t_start,
                   coalesce(lead(t.real_ns) OVER (PARTITION BY t.log_id ORDER BY t.seq), b.t1)
                       AS t_end
            FROM changes t JOIN bounds b USING (log_id)
            UNION ALL
            SELECT log_id, coalesce(before_first_change, first_call), t0,
                   coalesce(first_change, t1)
            FROM bounds)
        SELECT b.device, s.state, round(sum(s.t_end - s.t_start) / 1e9, 3) AS seconds,
               count(*) AS stretches
        FROM steps s JOIN bounds b USING (log_id)
        WHERE s.state IS NOT NULL
        GROUP BY ALL ORDER BY b.device, s.state
        """,
    ),
    "transitions": (
        "state transitions by device, states, code and reason",
        f"""
        SELECT device, from_state, to_state,
               CASE WHEN code = 0 THEN NULL ELSE printf('DIA-%04d', code) END AS code,
               reason, count(*) AS n, min(time) AS first, max(time) AS last
        FROM {CHANGES} GROUP BY ALL ORDER BY device, n DESC, from_state, to_state, code, reason
        """,
    ),
    "fallback": (
        "fallback rate per device, model digest and UTC day (calls not served by the primary)",
        f"""
        SELECT device, left(model_digest, 12) AS model,
               DATE '1970-01-01' + CAST(utc_day AS INTEGER) AS day,
               CAST(sum(calls) AS BIGINT) AS calls,
               CAST(coalesce(sum(calls) FILTER (not_primary), 0) AS BIGINT) AS not_primary,
               round(coalesce(sum(calls) FILTER (not_primary), 0) / sum(calls), 4)
                   AS fallback_rate
        FROM {SUMMARY} WHERE NOT known_answer
        GROUP BY ALL ORDER BY device, day, model
        """,
    ),
    "latency": (
        "latency p50/p99 (ms) per device and model digest, primary answers",
        f"""
        SELECT device, model, calls, round(p50_ns / 1e6, 3) AS p50_ms,
               round(p99_ns / 1e6, 3) AS p99_ms, round(max_ns / 1e6, 3) AS max_ms
        FROM {DIGEST} ORDER BY device, model
        """,
    ),
    "safe_stop": (
        "SAFE_STOP incidents with the faults (non-OK outcomes) of the 60 s before them",
        f"""
        WITH stops AS MATERIALIZED (
            SELECT device, log_id, seq, time, from_state, reason, code
            FROM {CHANGES} WHERE to_state = 'SAFE_STOP'),
        faults AS (
            SELECT s.log_id, s.seq AS stop_seq, i.seq, i.outcome, nullif(i.code, 0) AS code,
                   row_number() OVER (PARTITION BY s.log_id, s.seq ORDER BY i.seq DESC) AS k
            FROM stops s JOIN {FAULTS} i
              ON i.log_id = s.log_id AND i.seq < s.seq AND i.outcome <> 'OK'
                 AND i.time >= s.time - INTERVAL 60 SECOND),
        preceding AS (
            SELECT log_id, stop_seq,
                   string_agg(outcome || coalesce(' DIA-' || lpad(CAST(code AS VARCHAR), 4,
                              '0'), ''), ', ' ORDER BY seq) AS faults
            FROM faults WHERE k <= 20 GROUP BY ALL)
        SELECT t.device, t.log_id, t.seq, t.time, t.from_state, t.reason,
               CASE WHEN t.code = 0 THEN NULL ELSE printf('DIA-%04d', t.code) END AS code,
               p.faults AS preceding_faults
        FROM stops t LEFT JOIN preceding p ON p.log_id = t.log_id AND p.stop_seq = t.seq
        ORDER BY t.time
        """,
    ),
    "models": (
        "model digests in service over time, per device",
        f"""
        SELECT device, model_digest, min(first_time) AS first_seen, max(last_time) AS last_seen,
               CAST(sum(calls) AS BIGINT) AS calls,
               round(coalesce(sum(calls) FILTER (not_primary), 0) / sum(calls), 4)
                   AS fallback_rate
        FROM {SUMMARY} WHERE model_digest <> repeat('0', 64)
        GROUP BY ALL ORDER BY device, first_seen
        """,
    ),
    "logs": (
        "every exported log: device, verdict, retained and authenticated ranges, findings",
        """
        SELECT device, log_id, verdict, key_id IS NOT NULL AS signed, retained_first,
               retained_last, authenticated_first, authenticated_last, unsealed_from,
               damage_seq, exported_through, undecodable,
               json_array_length(CAST(findings AS JSON)) AS findings
        FROM logs ORDER BY device, log_id
        """,
    ),
}
"""Built-in reports: name -> (what it answers, SQL over the views)."""


def empty_select(columns: tuple[tuple[str, str], ...]) -> str:
    """A query with ``columns`` (declared as in :mod:`vigil.fleet._rows`) and no rows."""
    cols = ", ".join(f"CAST(NULL AS {_DUCK[k]}) AS {n}" for n, k in columns)
    return f"SELECT {cols} WHERE false"


def _state(root: Path) -> dict[str, Any]:
    """The export's state file, checked for a schema this vigil reads.

    Raises:
        ReportError: DIA-8008 (no export, unreadable) or DIA-8010 (another schema version).
    """
    if not (root / STATE_FILE).is_file():
        raise ReportError(
            f"{root}: holds no vigil export ({STATE_FILE} is missing); run vigil export "
            "LOG... --to DIR first",
            diagnostic=D.REPORT_NO_DATASET,
            path=str(root),
        )
    try:
        state = json.loads((root / STATE_FILE).read_text("utf-8"))
        version = state["schema_version"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ReportError(
            f"{root / STATE_FILE}: unreadable ({exc}); export again into a new directory",
            diagnostic=D.REPORT_NO_DATASET,
            path=str(root),
        ) from None
    if version not in READABLE_VERSIONS:
        raise ReportError(
            f"{root}: an export of schema {version}; this vigil reads schemas "
            f"{', '.join(map(str, READABLE_VERSIONS))}: export the logs again into a new "
            "directory",
            diagnostic=D.REPORT_SCHEMA,
            path=str(root),
        )
    return dict(state)


def summarized(dest: str | os.PathLike[str]) -> bool:
    """Whether the dataset's summaries are complete and current (the reports read them)."""
    root = Path(dest)
    try:
        state = _state(root)
    except ReportError:
        return False
    return _summaries_current(root, state)


def _summaries_current(root: Path, state: dict[str, Any]) -> bool:
    return (
        state.get("schema_version") == SCHEMA_VERSION
        and state.get("generation") is not None
        and covered_generation(root) == state.get("generation")
        and all(summary_path(root, n).is_file() for n in FILES if n != "latency")
    )


def connect(dest: str | os.PathLike[str], *, summaries: bool = True) -> Any:
    """An in-memory DuckDB connection with the dataset's views (see the module docstring).

    ``summaries=False`` defines the reports' relations over the raw tables even when the
    summaries are current (what the summaries must agree with).

    Raises:
        ReportError: DIA-8008 when ``dest`` holds no vigil export, DIA-8010 when it holds one
            of a schema this vigil does not read.
        ExtraMissing: duckdb is not installed (DIA-8001).
    """
    return _connect(Path(dest), summaries=summaries, raw=True)


def _connect(root: Path, *, summaries: bool, raw: bool) -> Any:
    """``raw=False``: when the summaries are current, no views of the record tables (the
    built-in reports do not read them; each costs a listing of its thousand files)."""
    state = _state(root)
    duckdb = need("duckdb")
    con = duckdb.connect(":memory:")
    current = summaries and _summaries_current(root, state)
    try:
        _views(con, root, ("logs",) if current and not raw else None)
        _derived(con, root, current)
    except duckdb.Error as exc:
        raise ReportError(
            f"{root}: the dataset does not have the columns of schema {SCHEMA_VERSION} "
            f"(was it written by another tool or changed?): {exc}",
            path=str(root),
        ) from None
    return con


def _views(con: Any, root: Path, only: tuple[str, ...] | None = None) -> None:
    # Every report reads the same files again: keep their footers after the first read.
    con.execute("SET parquet_metadata_cache = true")
    for table, cols in (*TABLES.items(), ("logs", ())):
        if only is not None and table not in only:
            continue
        declared = LOGS if table == "logs" else COMMON + cols
        if next(root.glob(f"{table}/log=*/**/*.parquet"), None) is not None:
            # the layout's depth: logs/log=ID/logs.parquet, TABLE/log=ID/date=DAY/part-*
            depth = ("*",) if table == "logs" else ("*", "*")
            glob = str(root / table / Path(*depth) / "*.parquet").replace("'", "''")
            names = ", ".join(n for n, _ in declared)
            # Columns are matched by name in every file (all of one schema version carry
            # them all): no union_by_name, which reads every file's schema at each query.
            source = f"SELECT {names} FROM read_parquet('{glob}')"
        else:
            source = empty_select(declared)
        if table == "logs":
            con.execute(f"CREATE VIEW logs AS {source}")
        else:
            con.execute(f"CREATE VIEW {table}_all AS {source}")
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM {table}_all WHERE status <> 'after_damage'"
            )


def _derived(con: Any, root: Path, summaries: bool) -> None:
    """The reports' four relations: over the summaries when they are current, else over the
    raw tables (``call_groups`` and ``transition_rows`` then built on first use)."""
    if summaries:
        files = {n: _summary_source(root, n) for n in FILES}
        for name, sql in _SUMMARY_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {sql.format(**files)}")
    else:
        for name, sql in _RAW_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {sql}")


def _summary_source(root: Path, name: str) -> str:
    """``read_parquet`` of the summary's files; for ``latency`` (a file per device bucket and
    log) with none, a relation with its columns and no rows (no primary answer anywhere)."""
    glob = summary_glob(root, name)
    if name == "latency" and not summary_files(root, name):
        return f"({empty_latency()})"
    return "read_parquet('" + glob.replace("'", "''") + "', hive_partitioning = false)"


def run_sql(dest: str | os.PathLike[str], sql: str, con: Any = None) -> dict[str, Any]:
    """Run one query over the dataset; ``{"columns": [...], "rows": [[...], ...]}``.

    Raises:
        ReportError: DIA-8007 with DuckDB's message when the query fails; DIA-8008 no export.
    """
    con = con if con is not None else connect(dest)
    duckdb = need("duckdb")
    try:
        for name, ddl in _CACHED.items():
            if name in sql and not _defined(con, name):
                con.execute(ddl)
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = [list(r) for r in cur.fetchall()]
    except duckdb.Error as exc:
        raise ReportError(f"the query failed: {exc}", sql=sql) from None
    return {"columns": columns, "rows": rows}


def _defined(con: Any, name: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal", [name]
    ).fetchone()
    return bool(found and found[0])


def report(dest: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, Any]:
    """Run built-in reports (all by default): ``{name: {"title", "columns", "rows"}}``."""
    con = _connect(Path(dest), summaries=True, raw=False)
    out: dict[str, Any] = {}
    for name in names or list(REPORTS):
        if name not in REPORTS:
            raise ReportError(f"no report {name!r}; choose from {', '.join(REPORTS)}")
        title, sql = REPORTS[name]
        out[name] = {"title": title, **run_sql(dest, sql, con)}
    return out
