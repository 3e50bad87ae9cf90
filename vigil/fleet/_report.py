"""Fleet reports: SQL over the exported dataset, in an embedded DuckDB.

:func:`connect` opens an in-memory DuckDB whose views are the dataset's tables, verified rows
only: ``inferences``, ``transitions``, ``lifecycle``, ``checkpoints``, ``rejections``,
``annotations`` hold no ``after_damage`` row (``<table>_all`` views hold every exported row),
and ``logs`` has one row per log with its verdict and findings. The built-in reports
(:data:`REPORTS`) are plain SQL over those views; ``--sql`` runs the user's own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vigil import _diagnostics as D
from vigil.errors import ReportError
from vigil.fleet._extras import need
from vigil.fleet._rows import COMMON, LOGS, SCHEMA_VERSION, TABLES

STATE_FILE = "_vigil_export.json"
_DUCK = {
    "string": "VARCHAR",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
}
_NOT_PRIMARY = "served_by <> 'PRIMARY'"

REPORTS: dict[str, tuple[str, str]] = {
    "states": (
        "time in each state, per device (seconds), from the transitions' timeline",
        """
        WITH bounds AS (
            SELECT log_id, any_value(device) AS device, min(real_ns) AS t0, max(real_ns) AS t1
            FROM (SELECT log_id, device, real_ns FROM inferences
                  UNION ALL SELECT log_id, device, real_ns FROM transitions)
            GROUP BY log_id),
        first_transition AS (
            SELECT log_id, arg_min(from_state, seq) AS state, min(real_ns) AS t
            FROM transitions GROUP BY log_id),
        first_call AS (SELECT log_id, arg_min(state, seq) AS state FROM inferences GROUP BY log_id),
        steps AS (
            SELECT t.log_id, t.to_state AS state, t.real_ns AS t_start,
                   coalesce(lead(t.real_ns) OVER (PARTITION BY t.log_id ORDER BY t.seq), b.t1)
                       AS t_end
            FROM transitions t JOIN bounds b USING (log_id)
            UNION ALL
            SELECT b.log_id, coalesce(f.state, c.state), b.t0, coalesce(f.t, b.t1)
            FROM bounds b LEFT JOIN first_transition f USING (log_id)
                          LEFT JOIN first_call c USING (log_id))
        SELECT b.device, s.state, round(sum(s.t_end - s.t_start) / 1e9, 3) AS seconds,
               count(*) AS stretches
        FROM steps s JOIN bounds b USING (log_id)
        WHERE s.state IS NOT NULL
        GROUP BY ALL ORDER BY b.device, s.state
        """,
    ),
    "transitions": (
        "state transitions by device, states, code and reason",
        """
        SELECT device, from_state, to_state,
               CASE WHEN code = 0 THEN NULL ELSE printf('DIA-%04d', code) END AS code,
               reason, count(*) AS n, min(time) AS first, max(time) AS last
        FROM transitions GROUP BY ALL ORDER BY device, n DESC, from_state, to_state
        """,
    ),
    "fallback": (
        "fallback rate per device, model digest and day (calls not served by the primary)",
        f"""
        SELECT device, left(model_digest, 12) AS model, CAST(time AS DATE) AS day,
               count(*) AS calls, count(*) FILTER ({_NOT_PRIMARY}) AS not_primary,
               round(count(*) FILTER ({_NOT_PRIMARY}) / count(*), 4) AS fallback_rate
        FROM inferences WHERE NOT known_answer
        GROUP BY ALL ORDER BY device, day, model
        """,
    ),
    "latency": (
        "latency p50/p99 (ms) per device and model digest, primary answers",
        """
        SELECT device, left(model_digest, 12) AS model, count(*) AS calls,
               round(quantile_cont(latency_ns, 0.5) / 1e6, 3) AS p50_ms,
               round(quantile_cont(latency_ns, 0.99) / 1e6, 3) AS p99_ms,
               round(max(latency_ns) / 1e6, 3) AS max_ms
        FROM inferences WHERE served_by = 'PRIMARY'
        GROUP BY ALL ORDER BY device, model
        """,
    ),
    "safe_stop": (
        "SAFE_STOP incidents with the faults (non-OK outcomes) of the 60 s before them",
        """
        SELECT t.device, t.log_id, t.seq, t.time, t.from_state, t.reason,
               CASE WHEN t.code = 0 THEN NULL ELSE printf('DIA-%04d', t.code) END AS code,
               (SELECT string_agg(f.outcome || coalesce(' DIA-' || lpad(CAST(f.code AS
                       VARCHAR), 4, '0'), ''), ', ' ORDER BY f.seq)
                FROM (SELECT i.outcome, nullif(i.code, 0) AS code, i.seq FROM inferences i
                      WHERE i.log_id = t.log_id AND i.seq < t.seq AND i.outcome <> 'OK'
                        AND i.time >= t.time - INTERVAL 60 SECOND
                      ORDER BY i.seq DESC LIMIT 20) f) AS preceding_faults
        FROM transitions t WHERE t.to_state = 'SAFE_STOP'
        ORDER BY t.time
        """,
    ),
    "models": (
        "model digests in service over time, per device",
        """
        SELECT device, model_digest, min(time) AS first_seen, max(time) AS last_seen,
               count(*) AS calls,
               round(count(*) FILTER (WHERE served_by <> 'PRIMARY') / count(*), 4)
                   AS fallback_rate
        FROM inferences WHERE model_digest <> repeat('0', 64)
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


def _empty(columns: tuple[tuple[str, str], ...]) -> str:
    cols = ", ".join(f"CAST(NULL AS {_DUCK[k]}) AS {n}" for n, k in columns)
    return f"SELECT {cols} WHERE false"


def connect(dest: str | os.PathLike[str]) -> Any:
    """An in-memory DuckDB connection with the dataset's views (see the module docstring).

    Raises:
        ReportError: DIA-8008 when ``dest`` holds no vigil export.
        ExtraMissing: duckdb is not installed (DIA-8001).
    """
    root = Path(dest)
    if not (root / STATE_FILE).is_file():
        raise ReportError(
            f"{root}: holds no vigil export ({STATE_FILE} is missing); run vigil export "
            "LOG... --to DIR first",
            diagnostic=D.REPORT_NO_DATASET,
            path=str(root),
        )
    try:
        version = json.loads((root / STATE_FILE).read_text("utf-8"))["schema_version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(
            f"{root / STATE_FILE}: unreadable ({exc}); export again into a new directory",
            diagnostic=D.REPORT_NO_DATASET,
            path=str(root),
        ) from None
    if version != SCHEMA_VERSION:
        raise ReportError(
            f"{root}: an export of schema {version}; this vigil reads schema {SCHEMA_VERSION} "
            "(export again into a new directory)",
            diagnostic=D.REPORT_NO_DATASET,
            path=str(root),
        )
    duckdb = need("duckdb")
    con = duckdb.connect(":memory:")
    try:
        _views(con, root)
    except duckdb.Error as exc:
        raise ReportError(
            f"{root}: the dataset does not have the columns of schema {SCHEMA_VERSION} "
            f"(was it written by another tool or changed?): {exc}",
            path=str(root),
        ) from None
    return con


def _views(con: Any, root: Path) -> None:
    for table, cols in (*TABLES.items(), ("logs", ())):
        files = sorted(root.glob(f"{table}/log=*/**/*.parquet"))
        declared = LOGS if table == "logs" else COMMON + cols
        if files:
            glob = str(root / table / "**" / "*.parquet").replace("'", "''")
            names = ", ".join(n for n, _ in declared)
            source = f"SELECT {names} FROM read_parquet('{glob}', union_by_name = true)"
        else:
            source = _empty(declared)
        if table == "logs":
            con.execute(f"CREATE VIEW logs AS {source}")
        else:
            con.execute(f"CREATE VIEW {table}_all AS {source}")
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM {table}_all WHERE status <> 'after_damage'"
            )


def run_sql(dest: str | os.PathLike[str], sql: str, con: Any = None) -> dict[str, Any]:
    """Run one query over the dataset; ``{"columns": [...], "rows": [[...], ...]}``.

    Raises:
        ReportError: DIA-8007 with DuckDB's message when the query fails; DIA-8008 no export.
    """
    con = con if con is not None else connect(dest)
    duckdb = need("duckdb")
    try:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = [list(r) for r in cur.fetchall()]
    except duckdb.Error as exc:
        raise ReportError(f"the query failed: {exc}", sql=sql) from None
    return {"columns": columns, "rows": rows}


def report(dest: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, Any]:
    """Run built-in reports (all by default): ``{name: {"title", "columns", "rows"}}``."""
    con = connect(dest)
    out: dict[str, Any] = {}
    for name in names or list(REPORTS):
        if name not in REPORTS:
            raise ReportError(f"no report {name!r}; choose from {', '.join(REPORTS)}")
        title, sql = REPORTS[name]
        out[name] = {"title": title, **run_sql(dest, sql, con)}
    return out
