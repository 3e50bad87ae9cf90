"""Summary tables, written at export time: a fleet report reads thousands of rows, not millions.

Theory of operation
-------------------
At scale a report's cost is the passes over the part files (a thousand small files per table
for 800 logs), not the SQL. So the export also writes, next to the rows, summaries under
``DIR/_summary/`` (docs/EXPORT.md, schema 2):

=================  =========================================================================
``calls``          the verified calls grouped by log, part file, model digest, UTC day,
                   known-answer and primary-or-not: count, first/last time, first state
``faults``         the verified calls whose outcome is not OK (the SAFE_STOP report's input)
``transitions``    every verified transition, all its columns (a few rows in many files)
``latency``        the latency of every verified primary answer (device, model digest): a
                   file per device bucket and log, ``latency/dev=<bucket>/log=<id>.parquet``
                   (bucket: ``left(md5(device), 16)``)
=================  =========================================================================

(the first three one file each) and one file ``latency_digest``: per device and model, the
count, p50, p99 and max that the latency report prints (:data:`DIGEST_SQL`).

Every summary row is *computed by the SQL below over the part files themselves*, verified rows
only (``status <> 'after_damage'``), and carries its log and its part file's first seq
(``part_first``). Each summary merges exactly: the reports regroup ``calls`` with sums, mins,
maxes and ``arg_min`` (equal to one pass over the calls, since a group never spans two logs);
``faults``, ``transitions`` and ``latency`` are the raw rows' own values, so ``quantile_cont``
over ``latency`` sees exactly the values it sees over ``inferences``. Quantiles do not merge:
a device's ``latency_digest`` rows are recomputed from every latency value of its bucket,
whenever a file of that bucket changed; the other devices' rows are kept.

Incremental with the watermark: an export of a log removes its part files that begin after
``settled`` and writes new ones, all beginning after it; :func:`update` does the same to that
log's summary rows (keeps those with ``part_first <= settled``, adds the summaries of its part
files beginning after it). The latencies, the bulk (every primary call), are rewritten only
in the changed logs' own files, the digest only for the devices of the buckets those files
are in: a run costs what it changed, not the fleet's calls. ``calls``, ``faults`` and
``transitions`` (a few rows per log and day; the non-OK calls) stay one file each, rewritten
when some log changed: at 10 M rows 5-100 ms, and the reports read one file each, not one per
log (docs/PERFORMANCE.md, run P2). A run in which no log's part files changed rewrites no
summary.

Crash-consistent by a generation: each export run first bumps ``generation`` in the state
file, and :func:`update` writes ``_summary/_covers.json`` with that generation (and the
layout, :data:`LAYOUT`) only after every summary file is in place. The report uses the
summaries only when the two generations are equal; else (an interrupted export, a dataset of
schema 1 or of another summary layout) it reads the raw tables, and the next export rebuilds
the summaries from every part file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

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
written as ``latency_digest`` from the files of the latency buckets a run changed (each
device's every value), and run by the report over the raw tables when the summaries are not
current. Quantiles do not merge: a device's rows are recomputed from all its values."""
FILES = (*SUMMARIES, "latency_digest")
"""What ``_summary/`` holds for the reports (and ``_covers.json``): ``latency/`` a file per
device bucket and log, the others one ``<name>.parquet`` each."""
LAYOUT = 2
"""The layout of ``_summary/`` that ``_covers.json`` names: summaries of another (the single
files of the first schema 2 exports) are rebuilt, never merged into."""
BUCKET_SQL = "left(md5(device), 16)"
"""A device's latency bucket (``latency/dev=<bucket>/``): the digest of a bucket's devices is
recomputed from that folder alone. A collision only puts two devices in one folder."""


def part_first(path: str | Path) -> int:
    """The first seq of a part file (by its name); 0 for a file not named by the export."""
    m = PART.match(Path(path).name)
    return int(m.group(1)) if m else 0


def summary_path(dest: str | Path, name: str) -> Path:
    """The summary's file, or for ``latency`` its folder (per device bucket and log)."""
    root = Path(dest) / SUMMARY_DIR
    return root / name if name == "latency" else root / f"{name}.parquet"


def summary_glob(dest: str | Path, name: str) -> str:
    """A glob of every file of the summary ``name``."""
    path = summary_path(dest, name)
    return str(path / "dev=*" / "log=*.parquet") if name == "latency" else str(path)


def summary_files(dest: str | Path, name: str) -> list[Path]:
    """Every file of the summary ``name`` (sorted)."""
    path = summary_path(dest, name)
    if name == "latency":
        return sorted(path.glob("dev=*/log=*.parquet"))
    return [path] if path.is_file() else []


def covered_generation(dest: str | Path) -> int | None:
    """The export generation the summaries were last completed for (None: none, unreadable,
    or summaries of another layout)."""
    try:
        covers = json.loads((Path(dest) / SUMMARY_DIR / COVERS).read_text("utf-8"))
        value, layout = covers["generation"], covers["layout"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return value if isinstance(value, int) and layout == LAYOUT else None


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


def _listed(files: Iterable[str | Path]) -> str:
    return "[" + ", ".join(_quote(str(f)) for f in files) + "]"


def _parts_view(con: Any, files: Iterable[str]) -> bool:
    """Define ``parts`` over ``files`` (with ``part_first``); False when there are none."""
    names = list(files)
    if not names:
        return False
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW parts AS
        SELECT *, coalesce(TRY_CAST(regexp_extract(filename, 'part-(\\d+)-\\d+\\.parquet$', 1)
                                    AS BIGINT), 0) AS part_first
        FROM read_parquet({_listed(names)}, filename = true, hive_partitioning = false)
        """
    )
    return True


def update(dest: str | Path, settled: dict[str, int] | None, generation: int) -> None:
    """Bring the summaries up to date with the part files, then mark them ``generation``.

    Only the files of the logs in ``settled`` are rewritten (with the latency buckets of
    their devices and those buckets' ``latency_digest`` rows): a run costs what it touched.

    Args:
        dest: the dataset.
        settled: per log whose part files this run changed, its ``settled`` seq *before* the
            run (its rows with ``part_first`` above it are replaced); None rebuilds every
            summary from every part file (no summaries yet, or an interrupted run left them
            stale, or another layout).
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
        if settled is None:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            (out_dir / COVERS).unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        con.execute("CREATE TEMP TABLE touched (log_id VARCHAR, settled BIGINT)")
        if settled:
            con.executemany("INSERT INTO touched VALUES (?, ?)", list(settled.items()))
        buckets: set[str] = set()
        for name in SUMMARIES:
            buckets |= _update_one(con, root, name, settled)
        _update_digest(con, root, None if settled is None else buckets)
        _atomic_text(out_dir / COVERS, json.dumps({"generation": generation, "layout": LAYOUT}))
    except duckdb.Error as exc:
        raise ExportDestinationError(
            f"{out_dir}: cannot write the summaries: {exc}", path=str(out_dir)
        ) from None
    except OSError as exc:
        raise ExportDestinationError(
            f"{out_dir}: cannot write the summaries: {exc.strerror}", path=str(out_dir)
        ) from None
    finally:
        con.close()


def _update_one(con: Any, root: Path, name: str, settled: dict[str, int] | None) -> set[str]:
    """Bring summary ``name`` up to date for the logs in ``settled`` (every log: None).

    Returns:
        The latency buckets whose files changed (``latency`` only).
    """
    if name == "latency":
        return _update_latency(con, root, settled)
    if settled is not None and not settled:
        return set()  # no log changed: the file stays as it is
    table, sql, order = SUMMARIES[name]
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
    _write(con, f"SELECT * FROM ({body}) ORDER BY {order}", path)
    return set()


def _update_latency(con: Any, root: Path, settled: dict[str, int] | None) -> set[str]:
    """Rewrite the latency files of the logs in ``settled`` (every log: None): their rows
    with ``part_first <= settled`` and the latencies of their new part files.

    Returns:
        The buckets whose files changed (their devices' digests are to be recomputed).
    """
    table, sql, _ = SUMMARIES["latency"]
    folder = summary_path(root, "latency")
    old = [] if settled is None else _old_files(folder, settled)
    sources = []
    if old:
        sources.append(
            f"SELECT s.* FROM read_parquet({_listed(old)}, hive_partitioning = false) s "
            "SEMI JOIN touched t ON s.log_id = t.log_id AND s.part_first <= t.settled"
        )
    if _parts_view(con, _files(root, table, settled)):
        sources.append(f"SELECT * FROM ({sql})")
    written: dict[tuple[str, str], Path] = {}
    if sources:
        body = " UNION ALL BY NAME ".join(sources)
        query = f"SELECT *, log_id AS _log, {BUCKET_SQL} AS _bucket FROM ({body})"
        written = _write_per_log(con, query, folder)
    for path in old:  # a touched log's file that has no rows now
        if path not in written.values():
            path.unlink()
    return {b for b, _ in written} | {p.parent.name.removeprefix("dev=") for p in old}


def _old_files(folder: Path, settled: dict[str, int]) -> list[Path]:
    """The existing latency files of the logs in ``settled`` (in any bucket)."""
    wanted = {f"log={log}.parquet" for log in settled}
    return sorted(p for p in folder.glob("dev=*/log=*.parquet") if p.name in wanted)


def _write_per_log(con: Any, query: str, folder: Path) -> dict[tuple[str, str], Path]:
    """COPY ``query`` partitioned by bucket and log into a scratch folder, then move each
    file to ``folder/dev=<bucket>/log=<log_id>.parquet``: ``{(bucket, log): path}``."""
    scratch = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    con.execute(
        f"COPY ({query}) TO {_quote(str(scratch))} "
        "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (_bucket, _log), OVERWRITE_OR_IGNORE)"
    )
    out: dict[tuple[str, str], Path] = {}
    for data in sorted(scratch.glob("**/*.parquet")):
        log_dir = data.parent
        log = unquote(log_dir.name.removeprefix("_log="))
        bucket = unquote(log_dir.parent.name.removeprefix("_bucket="))
        target = folder / f"dev={bucket}"
        if (bucket, log) in out:  # DuckDB split a partition: not expected at these sizes
            raise ExportDestinationError(
                f"{data}: a summary partition in two files", path=str(data)
            )
        target.mkdir(parents=True, exist_ok=True)
        out[(bucket, log)] = target / f"log={log}.parquet"
        os.replace(data, out[(bucket, log)])
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def _update_digest(con: Any, root: Path, buckets: set[str] | None) -> None:
    """Recompute ``latency_digest`` for the devices of ``buckets`` (every device: None) from
    their latency files; the other devices' rows are kept."""
    path = summary_path(root, "latency_digest")
    folder = summary_path(root, "latency")
    if buckets is not None and not buckets and path.is_file():
        return  # no device's latencies changed: every row stays
    if buckets is None:
        files = summary_files(root, "latency")
    else:
        files = [
            f for b in sorted(buckets) for f in sorted((folder / f"dev={b}").glob("log=*.parquet"))
        ]
    sources = []
    if buckets and path.is_file():
        con.execute("CREATE OR REPLACE TEMP TABLE buckets (b VARCHAR)")
        con.executemany("INSERT INTO buckets VALUES (?)", [[b] for b in sorted(buckets)])
        sources.append(
            f"SELECT * FROM read_parquet({_quote(str(path))}) "
            f"WHERE {BUCKET_SQL} NOT IN (SELECT b FROM buckets)"
        )
    if files:
        source = f"read_parquet({_listed(files)}, hive_partitioning = false)"
        sources.append(DIGEST_SQL.format(source=source))
    else:
        sources.append(DIGEST_SQL.format(source=f"({empty_latency()})"))
    _write(con, " UNION ALL BY NAME ".join(f"SELECT * FROM ({s})" for s in sources), path)


def empty_latency() -> str:
    """A query with the columns of the ``latency`` summary and no rows."""
    from vigil.fleet._report import empty_select  # noqa: PLC0415 - avoids an import cycle

    empty = empty_select(COMMON + TABLES["inferences"])
    sql = SUMMARIES["latency"][1]
    return f"WITH parts AS (SELECT *, CAST(0 AS BIGINT) AS part_first FROM ({empty})) {sql}"


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
