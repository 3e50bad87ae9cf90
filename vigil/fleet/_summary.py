"""Summary tables, written at export time: a fleet report reads thousands of rows, not millions.

Theory of operation
-------------------
At scale a report's cost is the passes over the part files (a thousand small files per table
for 800 logs), not the SQL. So the export also writes, next to the rows, one file per
summary under ``DIR/_summary/`` (docs/EXPORT.md, schema 2):

=================  =========================================================================
``calls``          the verified calls grouped by log, part file, model digest, UTC day,
                   known-answer and primary-or-not: count, first/last time, first state
``faults``         the verified calls whose outcome is not OK (the SAFE_STOP report's input)
``transitions``    every verified transition, all its columns (a few rows in many files)
``latency``        the latency of every verified primary answer (device, model digest)
=================  =========================================================================

and, from the whole ``latency`` summary, ``latency_digest``: per device and model, the count,
p50, p99 and max that the latency report prints (:data:`DIGEST_SQL`).

Every summary row is *computed by the SQL below over the part files themselves*, verified rows
only (``status <> 'after_damage'``), and carries its log and its part file's first seq
(``part_first``). Each summary merges exactly: the reports regroup ``calls`` with sums, mins,
maxes and ``arg_min`` (equal to one pass over the calls, since a group never spans two logs);
``faults``, ``transitions`` and ``latency`` are the raw rows' own values, so ``quantile_cont``
over ``latency`` sees exactly the values it sees over ``inferences``: ``latency_digest`` is the
same query over the same multiset of values, recomputed whole at each export (quantiles do not
merge; the export pays that pass, once, instead of every report).

Incremental with the watermark: an export of a log removes its part files that begin after
``settled`` and writes new ones, all beginning after it; :func:`update` does the same to the
summaries (removes that log's rows with ``part_first > settled``, adds the summaries of its
part files beginning after it), so exporting again adds only new records' summaries.

Crash-consistent by a generation: each export run first bumps ``generation`` in the state
file, and :func:`update` writes ``_summary/_covers.json`` with that generation only after
every summary file is in place. The report uses the summaries only when the two generations
are equal; else (an interrupted export, a dataset of schema 1) it reads the raw tables, and
the next export rebuilds the summaries from every part file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vigil.errors import ExportDestinationError
from vigil.fleet._extras import need
from vigil.fleet._rows import COMMON, TABLES

SUMMARY_DIR = "_summary"
COVERS = "_covers.json"
PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")
DAY_NS = 86_400 * 10**9

_TRANSITION_COLUMNS = ", ".join(n for n, _ in COMMON + TABLES["transitions"])

SUMMARIES: dict[str, tuple[str, str, str]] = {
    "calls": (
        "inferences",
        f"""
        SELECT log_id, part_first, device, model_digest, real_ns // {DAY_NS} AS utc_day,
               known_answer, served_by <> 'PRIMARY' AS not_primary, count(*) AS calls,
               min(real_ns) AS first_ns, max(real_ns) AS last_ns, min(time) AS first_time,
               max(time) AS last_time, min(seq) AS first_seq, arg_min(state, seq) AS first_state
        FROM parts WHERE status <> 'after_damage' GROUP BY ALL
        """,
        "log_id, part_first, device, model_digest, utc_day, known_answer, not_primary",
    ),
    "faults": (
        "inferences",
        """
        SELECT log_id, part_first, device, seq, time, outcome, code
        FROM parts WHERE status <> 'after_damage' AND outcome <> 'OK'
        """,
        "log_id, seq",
    ),
    "transitions": (
        "transitions",
        f"""
        SELECT {_TRANSITION_COLUMNS}, part_first
        FROM parts WHERE status <> 'after_damage'
        """,
        "log_id, seq",
    ),
    "latency": (
        "inferences",
        """
        SELECT device, model_digest, latency_ns, log_id, part_first
        FROM parts WHERE status <> 'after_damage' AND served_by = 'PRIMARY'
        """,
        "",
    ),
}
"""Summary name -> (the record table it reads, the SQL over its part files, the sort order)."""

DIGEST_SQL = """
SELECT device, left(model_digest, 12) AS model, count(*) AS calls,
       quantile_cont(latency_ns, 0.5) AS p50_ns, quantile_cont(latency_ns, 0.99) AS p99_ns,
       max(latency_ns) AS max_ns
FROM {source} GROUP BY ALL
"""
"""The latency report's digest (per device and model) over the primary latencies ``source``:
written as ``latency_digest`` from the whole ``latency`` summary at each export, and run by
the report over the raw tables when the summaries are not current. Quantiles do not merge,
so it is recomputed from every value each time; the values are the raw rows' own."""
FILES = (*SUMMARIES, "latency_digest")
"""The files under ``_summary/`` the reports need (and ``_covers.json``)."""


def part_first(path: str | Path) -> int:
    """The first seq of a part file (by its name); 0 for a file not named by the export."""
    m = PART.match(Path(path).name)
    return int(m.group(1)) if m else 0


def summary_path(dest: str | Path, name: str) -> Path:
    return Path(dest) / SUMMARY_DIR / f"{name}.parquet"


def covered_generation(dest: str | Path) -> int | None:
    """The export generation the summaries were last completed for (None: none, unreadable)."""
    try:
        value = json.loads((Path(dest) / SUMMARY_DIR / COVERS).read_text("utf-8"))["generation"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def _files(dest: Path, table: str, settled: dict[str, int] | None) -> list[str]:
    """The part files of ``table`` to summarize: every one (``settled`` None), or those of the
    logs in ``settled`` that begin after the log's settled seq."""
    if settled is None:
        return sorted(str(p) for p in (dest / table).glob("log=*/date=*/*.parquet"))
    out: list[str] = []
    for log_id, seq in settled.items():
        parts = (dest / table / f"log={log_id}").glob("date=*/*.parquet")
        out.extend(str(p) for p in parts if part_first(p) > seq)
    return sorted(out)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parts_view(con: Any, files: Iterable[str]) -> bool:
    """Define ``parts`` over ``files`` (with ``part_first``); False when there are none."""
    names = list(files)
    if not names:
        return False
    listed = ", ".join(_quote(f) for f in names)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW parts AS
        SELECT *, coalesce(TRY_CAST(regexp_extract(filename, 'part-(\\d+)-\\d+\\.parquet$', 1)
                                    AS BIGINT), 0) AS part_first
        FROM read_parquet([{listed}], filename = true, hive_partitioning = false)
        """
    )
    return True


def update(dest: str | Path, settled: dict[str, int] | None, generation: int) -> None:
    """Bring the summaries up to date with the part files, then mark them ``generation``.

    Args:
        dest: the dataset.
        settled: per log exported in this run, its ``settled`` seq *before* the run (its rows
            with ``part_first`` above it are replaced); None rebuilds every summary from every
            part file (no summaries yet, or an interrupted run left them stale).
        generation: the run's generation (the state file's), written last.

    Raises:
        ExportDestinationError: a summary file cannot be written (DIA-8004).
    """
    duckdb = need("duckdb")
    root = Path(dest)
    out_dir = root / SUMMARY_DIR
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET preserve_insertion_order = false")
        if settled is not None:
            con.execute("CREATE TEMP TABLE touched (log_id VARCHAR, settled BIGINT)")
            con.executemany("INSERT INTO touched VALUES (?, ?)", list(settled.items()))
        for name, (table, sql, order) in SUMMARIES.items():
            path = summary_path(root, name)
            sources = []
            if settled is not None and path.is_file():
                sources.append(
                    f"SELECT s.* FROM read_parquet({_quote(str(path))}) s ANTI JOIN touched t "
                    "ON s.log_id = t.log_id AND s.part_first > t.settled"
                )
            if _parts_view(con, _files(root, table, settled)):
                sources.append(f"SELECT * FROM ({sql})")
            if not sources:
                sources.append(f"SELECT * FROM ({_empty_parts(con, table, sql)})")
            body = " UNION ALL BY NAME ".join(sources)
            _write(con, f"SELECT * FROM ({body})" + (f" ORDER BY {order}" if order else ""), path)
        source = f"read_parquet({_quote(str(summary_path(root, 'latency')))})"
        _write(con, DIGEST_SQL.format(source=source), summary_path(root, "latency_digest"))
        _atomic_text(out_dir / COVERS, json.dumps({"generation": generation}))
    except duckdb.Error as exc:
        raise ExportDestinationError(
            f"{out_dir}: cannot write the summaries: {exc}", path=str(out_dir)
        ) from None
    finally:
        con.close()


def _empty_parts(con: Any, table: str, sql: str) -> str:
    """``sql`` over an empty ``parts`` of ``table``'s columns (a summary with no rows)."""
    from vigil.fleet._report import empty_select  # noqa: PLC0415 - avoids an import cycle

    con.execute(
        "CREATE OR REPLACE TEMP VIEW parts AS SELECT *, CAST(0 AS BIGINT) AS part_first FROM ("
        f"{empty_select(COMMON + TABLES[table])})"
    )
    return sql


def _write(con: Any, query: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    con.execute(f"COPY ({query}) TO {_quote(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ExportDestinationError(
            f"{path}: cannot write: {exc.strerror}", path=str(path)
        ) from None
