"""What the one-file-per-log formats (MCAP, MDF4) share: the file's name and its summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vigil.errors import ExportDestinationError
from vigil.fleet._verified import VerifiedLog


def summary(vlog: VerifiedLog) -> dict[str, str]:
    """The log's verification, as strings (MCAP metadata, the MDF4 file comment)."""
    rep = vlog.report
    auth = vlog.authenticated
    values: dict[str, Any] = {
        "log_id": vlog.log_id,
        "device": vlog.device,
        "path": os.path.abspath(vlog.path),
        "key_id": vlog.key_id or "",
        "verdict": vlog.verdict,
        "retained": f"{rep.first_seq}..{rep.last_seq}" if rep.first_seq is not None else "",
        "authenticated": f"{auth[0][0]}..{max(b for _, b in auth)}" if auth else "",
        "unsealed_from": vlog.tail_from or "",
        "damage_seq": vlog.damage_seq or "",
        "findings": json.dumps(vlog.findings, sort_keys=True),
    }
    return {k: str(v) for k, v in values.items()}


def target(dest: str, vlog: VerifiedLog, suffix: str) -> tuple[Path, Path]:
    """``(final, temporary)`` paths of the log's file: written whole, then renamed."""
    final = Path(dest) / f"{vlog.log_id}{suffix}"
    return final, final.with_name(f".{final.name}.tmp")


def commit(tmp: Path, final: Path) -> None:
    try:
        os.replace(tmp, final)
    except OSError as exc:
        raise ExportDestinationError(
            f"{final}: cannot write: {exc.strerror}", path=str(final)
        ) from None
