"""Exporting many logs: one outcome per log, the others carry on when one fails.

Each log is verified first (:func:`~vigil.fleet._verified.open_verified`) and then handed
to the format's writer. An error that concerns one log (not a log, unreadable, a FIFO, a key
that does not match) becomes that log's :class:`LogOutcome`, with its diagnostic code; an
error of the destination (:class:`~vigil.errors.ExportDestinationError`) stops the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vigil.errors import ExportDestinationError, UsageError, VigilError
from vigil.fleet._verified import Keys, VerifiedLog, open_verified

EXIT_OK = 0
EXIT_NOT_INTACT = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3

FORMATS = ("parquet", "mcap", "mdf")


@dataclass
class LogOutcome:
    """What became of one log.

    Attributes:
        path: the log file given.
        log_id, device, verdict: from verification (None when it failed before).
        rows: rows (records) written by this run.
        error_code, error: why the log was not exported (None when it was).
        files: files this run wrote for the log.
    """

    path: str
    log_id: str | None = None
    device: str | None = None
    verdict: str | None = None
    rows: int = 0
    error_code: str | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExportSummary:
    """The result of :func:`export`: one :class:`LogOutcome` per log given."""

    dest: str
    format: str
    logs: list[LogOutcome]
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 every log exported intact; 1 some had damage (exported up to it); 3 some were
        not exported at all (the others were)."""
        if any(o.failed for o in self.logs):
            return EXIT_SOME_FAILED
        if any(o.verdict != "INTACT" for o in self.logs):
            return EXIT_NOT_INTACT
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "dest": self.dest,
            "format": self.format,
            "seconds": self.seconds,
            "exit_code": self.exit_code,
            "logs": [o.to_json() for o in self.logs],
        }


Writer = Callable[[VerifiedLog, LogOutcome], None]


def prepare(dest: str) -> None:
    """Create the export directory if needed; it must be writable.

    Raises:
        ExportDestinationError: DIA-8004.
    """
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as exc:
        raise ExportDestinationError(
            f"{dest}: cannot create the export directory: {exc.strerror}", path=dest
        ) from None
    if not os.access(dest, os.W_OK | os.X_OK):
        raise ExportDestinationError(f"{dest}: the export directory is not writable", path=dest)


def run_export(
    paths: Sequence[str],
    dest: str,
    fmt: str,
    writer_for: Callable[[str], Writer],
    *,
    keys: Keys,
    max_findings: int = 1000,
    device_from: str = "host",
) -> ExportSummary:
    """Verify each log and hand it to the writer; collect one outcome per log."""
    start = time.perf_counter()
    if not paths:
        raise UsageError("give at least one log to export")
    prepare(dest)
    write = writer_for(dest)
    outcomes: list[LogOutcome] = []
    for path in paths:
        out = LogOutcome(path=str(path))
        outcomes.append(out)
        try:
            vlog = open_verified(
                str(path), keys, max_findings=max_findings, device_from=device_from
            )
            out.log_id, out.device, out.verdict = vlog.log_id, vlog.device, vlog.verdict
            write(vlog, out)
        except ExportDestinationError:
            raise
        except VigilError as exc:
            out.error_code, out.error = exc.code, str(exc)
    finish = getattr(write, "finish", None)  # the Parquet writer's summaries
    if callable(finish):
        finish()
    return ExportSummary(dest, fmt, outcomes, time.perf_counter() - start)
