"""Fleet scale: verified logs exported to Parquet (DuckDB, Spark), MCAP (Foxglove) and MDF4.

Every exported row rests on a verified record: each log is verified first, with the keys that
match it, and each row carries its verification status (``authenticated``, ``chain_valid``,
``unsealed_tail``, or ``after_damage`` only when asked for). The heavy packages are optional
extras, imported only when used: ``vigil[fleet]`` (pyarrow, duckdb), ``vigil[mcap]``,
``vigil[mdf]`` (asammdf), ``vigil[spark]`` (pyspark). docs/EXPORT.md documents the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

from vigil.errors import UsageError
from vigil.fleet._export import (
    EXIT_NOT_INTACT,
    EXIT_OK,
    EXIT_SOME_FAILED,
    FORMATS,
    ExportSummary,
    LogOutcome,
    Writer,
)
from vigil.fleet._export import run_export as _run_export
from vigil.fleet._report import REPORTS, connect, report, run_sql
from vigil.fleet._rows import SCHEMA_VERSION, TABLES
from vigil.fleet._verified import STATUSES, VERIFIED, Keys, VerifiedLog, open_verified

__all__ = [
    "EXIT_NOT_INTACT",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "FORMATS",
    "REPORTS",
    "SCHEMA_VERSION",
    "STATUSES",
    "TABLES",
    "VERIFIED",
    "ExportSummary",
    "Keys",
    "LogOutcome",
    "VerifiedLog",
    "connect",
    "export",
    "open_verified",
    "report",
    "run_sql",
]


def export(
    paths: Sequence[str],
    dest: str,
    *,
    format: str = "parquet",
    keys: Keys | None = None,
    keep_damaged: bool = False,
    max_findings: int = 1000,
    device_from: str = "host",
) -> ExportSummary:
    """Verify each log, then export what verifies into ``dest``.

    Args:
        paths: log files; each is verified and exported on its own.
        dest: the dataset directory (Parquet) or the directory for one file per log (MCAP
            ``<log_id>.mcap``, MDF4 ``<log_id>.mf4``).
        format: ``parquet``, ``mcap`` or ``mdf``.
        keys: the auditor's public keys, seeds and anchors (matched to each log).
        keep_damaged: also export records after damage, with status ``after_damage``.
        device_from: ``host`` (the OPENED record's host name) or ``dir`` (the directory that
            holds the log) names each log's device.

    Returns:
        An :class:`ExportSummary`; its ``exit_code`` says whether some logs failed (3) or had
        damage (1). A failed log's outcome holds the error and its diagnostic code.

    Raises:
        ExtraMissing: the format's package is not installed (DIA-8001).
        ExportDestinationError: ``dest`` cannot be used (DIA-8004).
        UsageError: an unknown format, no paths.
    """
    if device_from not in ("host", "dir"):
        raise UsageError(f"device_from {device_from!r}: choose host or dir")
    if format not in FORMATS:
        raise UsageError(f"format {format!r}: choose from {', '.join(FORMATS)}")

    def writer_for(dest: str) -> Writer:
        if format == "parquet":
            from vigil.fleet._parquet import ParquetWriter  # noqa: PLC0415 - pyarrow on use

            return ParquetWriter(dest, keep_damaged=keep_damaged)
        if format == "mcap":
            from vigil.fleet._mcap import McapWriter  # noqa: PLC0415 - mcap on use

            return McapWriter(dest, keep_damaged=keep_damaged)
        from vigil.fleet._mdf import MdfWriter  # noqa: PLC0415 - asammdf on use

        return MdfWriter(dest, keep_damaged=keep_damaged)

    return _run_export(
        list(paths),
        dest,
        format,
        writer_for,
        keys=keys or Keys(),
        max_findings=max_findings,
        device_from=device_from,
    )
