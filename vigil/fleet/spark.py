"""The verify-and-export as an Apache Spark job: one task per log, the same dataset layout.

Each task verifies one log and writes its Parquet part files exactly as ``vigil export``
does (a log's files live under its own ``log=<log_id>`` directories, so tasks never write
the same file); the driver hands every task the dataset's watermarks and, once all are back,
merges their entries into ``_vigil_export.json``, the one file they share. Logs and key files
must be readable by the executors at the paths given (a shared filesystem), and vigil with
its ``fleet`` extra installed on them. A path given twice is exported once; two *copies* of
one log (the same log id at two paths) must not be given to one job. The result is the same
dataset, to the row, as :func:`vigil.fleet.export` with the same keys.

Run it with ``spark-submit`` (docs/EXPORT.md)::

    spark-submit --master yarn vigil/fleet/spark.py LOG... --to DIR [--pubkey PUB]...

or from Python with :func:`export_spark` (``master="local[2]"`` starts a local Spark).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vigil.errors import UsageError, VigilError
from vigil.fleet._export import ExportSummary, LogOutcome, prepare, run_export
from vigil.fleet._extras import need
from vigil.fleet._verified import Keys

__all__ = ["export_spark", "main"]


@dataclass(frozen=True)
class _Job:
    """What every task needs (shipped to the executors with the task)."""

    dest: str
    state: dict[str, Any]
    public_keys: tuple[str, ...]
    fss_seeds: tuple[str, ...]
    anchors: tuple[str, ...]
    keep_damaged: bool
    device_from: str


def _task(path: str, job: _Job) -> tuple[dict[str, Any], str | None, dict[str, Any] | None]:
    """On an executor: export one log; return its outcome and its new state entry."""
    from vigil import keys as _keys  # noqa: PLC0415 - on the executor
    from vigil.auditlog import Anchor, FssSeed  # noqa: PLC0415
    from vigil.fleet._parquet import ParquetWriter  # noqa: PLC0415

    try:
        keys = Keys(
            public_keys=tuple(_keys.load_public(p) for p in job.public_keys),
            fss_seeds=tuple(FssSeed.load(p) for p in job.fss_seeds),
            anchors=tuple(Anchor.load(p) for p in job.anchors),
        )
    except VigilError as exc:
        out = LogOutcome(path=path, error_code=exc.code, error=str(exc))
        return out.to_json(), None, None
    writer = ParquetWriter(job.dest, keep_damaged=job.keep_damaged, state=job.state, persist=False)
    summary = run_export(
        [path], job.dest, "parquet", lambda _: writer, keys=keys, device_from=job.device_from
    )
    (out,) = summary.logs
    entry = writer.state["logs"].get(out.log_id) if out.log_id and not out.failed else None
    return out.to_json(), out.log_id, entry


def export_spark(
    paths: Sequence[str],
    dest: str,
    *,
    spark: Any = None,
    master: str | None = None,
    public_keys: Sequence[str] = (),
    fss_seeds: Sequence[str] = (),
    anchors: Sequence[str] = (),
    keep_damaged: bool = False,
    device_from: str = "host",
) -> ExportSummary:
    """Export ``paths`` into the Parquet dataset ``dest`` with one Spark task per log.

    Args:
        spark: a SparkSession; None builds one (``master`` if given, else spark-submit's).
        public_keys, fss_seeds, anchors: key *files*, loaded on the executors.
        The rest: as :func:`vigil.fleet.export`.

    Returns:
        The same :class:`~vigil.fleet.ExportSummary` as :func:`vigil.fleet.export`.

    Raises:
        ExtraMissing: pyspark or pyarrow is not installed (DIA-8001).
        ExportDestinationError: ``dest`` cannot be used (DIA-8004).
    """
    if not paths:
        raise UsageError("give at least one log to export")
    from vigil.fleet._parquet import ParquetWriter  # noqa: PLC0415 - pyarrow on use

    start = time.perf_counter()
    sql = need("pyspark.sql")
    if spark is None:
        builder = sql.SparkSession.builder.appName("vigil-export")
        spark = (builder.master(master) if master else builder).getOrCreate()
    prepare(dest)
    driver = ParquetWriter(dest)  # validates the state file before any task runs
    driver.begin()  # a new generation before any task changes a part file
    state = driver.state
    settled = {log_id: int(e["settled"]) for log_id, e in state["logs"].items()}
    job = _Job(
        dest=dest,
        state=state,
        public_keys=tuple(public_keys),
        fss_seeds=tuple(fss_seeds),
        anchors=tuple(anchors),
        keep_damaged=keep_damaged,
        device_from=device_from,
    )
    # a path given twice would be two tasks writing the same log's files: one task each
    unique: dict[str, str] = {}
    for p in paths:
        unique.setdefault(os.path.realpath(p), str(p))
    items = list(unique.values())
    results = (
        spark.sparkContext.parallelize(items, numSlices=len(items))
        .map(lambda p: _task(p, job))
        .collect()
    )
    outcomes = []
    for out_json, log_id, entry in results:
        outcomes.append(LogOutcome(**out_json))
        if log_id and entry is not None:
            state["logs"][log_id] = entry
            driver.touched[log_id] = settled.get(log_id, 0)
    driver.finish()  # the summaries of the parts the tasks wrote, then the state
    return ExportSummary(dest, "parquet", outcomes, time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    """``spark-submit vigil/fleet/spark.py LOG... --to DIR``: exit codes as ``vigil export``."""
    ap = argparse.ArgumentParser(prog="vigil-export-spark", description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="+", metavar="LOG")
    ap.add_argument("--to", required=True, metavar="DIR")
    ap.add_argument("--master", help="Spark master (default: spark-submit's)")
    ap.add_argument("--pubkey", action="append", default=[])
    ap.add_argument("--fss-seed", action="append", default=[])
    ap.add_argument("--anchor", action="append", default=[])
    ap.add_argument("--keep-damaged", action="store_true")
    ap.add_argument("--device-from", choices=("host", "dir"), default="host")
    a = ap.parse_args(argv)
    try:
        summary = export_spark(
            a.logs,
            a.to,
            master=a.master,
            public_keys=a.pubkey,
            fss_seeds=a.fss_seed,
            anchors=a.anchor,
            keep_damaged=a.keep_damaged,
            device_from=a.device_from,
        )
    except VigilError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    for o in summary.logs:
        if o.failed:
            print(f"vigil: export: {o.error}", file=sys.stderr)
    print(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    return summary.exit_code


if __name__ == "__main__":  # pragma: no cover - spark-submit
    sys.exit(main())
