"""``vigil export`` and ``vigil fleet report``: verified logs into fleet tools."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any

from vigil import fleet
from vigil import keys as _keys
from vigil.auditlog import Anchor, FssSeed
from vigil.errors import UsageError


def add_parsers(sub: Any) -> None:
    """Add ``export`` and ``fleet`` to the ``vigil`` command."""
    export = sub.add_parser(
        "export",
        help="verify logs and export what verifies: Parquet dataset, MCAP or MDF4",
        description="Each log is verified first; rows carry their verification status. "
        "Exit 0 all exported intact, 1 some had damage (exported up to it), 2 usage or "
        "destination error, 3 some logs could not be exported (the others were).",
    )
    export.add_argument("logs", nargs="+", metavar="LOG")
    export.add_argument("--to", required=True, metavar="DIR", help="the export directory")
    export.add_argument("--format", choices=fleet.FORMATS, default="parquet")
    export.add_argument(
        "--pubkey", action="append", default=[], help="a device public key (repeatable)"
    )
    export.add_argument(
        "--fss-seed", action="append", default=[], help="a forward-secure seed (repeatable)"
    )
    export.add_argument("--anchor", action="append", default=[], help="an anchor file (repeatable)")
    export.add_argument(
        "--keep-damaged",
        action="store_true",
        help="also export records after damage, with status after_damage",
    )
    export.add_argument(
        "--device-from",
        choices=("host", "dir"),
        default="host",
        help="name each device by the log's recorded host, or by the directory holding it",
    )
    export.add_argument("--json", action="store_true", help="print the summary as JSON")
    export.set_defaults(run=export_command)

    fleet_p = sub.add_parser("fleet", help="reports over an exported fleet dataset (DuckDB)")
    fsub = fleet_p.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    rep = fsub.add_parser(
        "report",
        help="per device: states, transitions, fallback rate, latency, SAFE_STOP, models",
    )
    rep.add_argument("dir", metavar="DIR")
    rep.add_argument(
        "--report",
        action="append",
        dest="reports",
        choices=list(fleet.REPORTS),
        help="only this report (repeatable; default: all)",
    )
    rep.add_argument("--sql", help="run this query instead (views: see docs/EXPORT.md)")
    rep.add_argument("--json", action="store_true", help="print as JSON")
    rep.add_argument("--png", metavar="FILE", help="also draw the fallback rate per day")
    rep.set_defaults(run=report_command)


def export_command(args: argparse.Namespace) -> int:
    keys = fleet.Keys(
        public_keys=tuple(_keys.load_public(p) for p in args.pubkey),
        fss_seeds=tuple(FssSeed.load(p) for p in args.fss_seed),
        anchors=tuple(Anchor.load(p) for p in args.anchor),
    )
    summary = fleet.export(
        args.logs,
        args.to,
        format=args.format,
        keys=keys,
        keep_damaged=args.keep_damaged,
        device_from=args.device_from,
    )
    if args.json:
        print(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    for o in summary.logs:
        if o.failed:
            print(f"vigil: export: {o.error}", file=sys.stderr)
            if not args.json:
                print(f"{o.path}: FAILED {o.error_code}")
        elif not args.json:
            print(f"{o.path}: {o.verdict}, log {o.log_id} ({o.device}): {o.rows} records")
    if not args.json:
        failed = sum(o.failed for o in summary.logs)
        print(
            f"exported {len(summary.logs) - failed}/{len(summary.logs)} logs to "
            f"{summary.dest} ({summary.format}) in {summary.seconds:.2f} s"
        )
    return summary.exit_code


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return str(value)


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c), *(min(len(r[i]), 60) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def report_command(args: argparse.Namespace) -> int:
    if args.sql is not None and args.reports:
        raise UsageError("give --sql or --report, not both")
    if args.sql is not None and not args.sql.strip():
        raise UsageError("--sql: the query is empty (leave --sql out to run the reports)")
    if args.png is not None and (
        not args.png.lower().endswith(".png") or os.path.isdir(args.png)
    ):  # matplotlib would write DIR.png or guess a format from another suffix
        raise UsageError(f"--png {args.png}: give a file name ending in .png")
    if args.sql is not None:
        results = {"sql": {"title": args.sql, **fleet.run_sql(args.dir, args.sql)}}
    else:
        results = fleet.report(args.dir, args.reports)
    if args.json:
        out = {
            name: {
                "title": r["title"],
                "rows": [
                    {c: _jsonable(v) for c, v in zip(r["columns"], row, strict=True)}
                    for row in r["rows"]
                ],
            }
            for name, r in results.items()
        }
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        for name, r in results.items():
            print(f"== {name}: {r['title']}")
            print(_table(r["columns"], r["rows"]) if r["rows"] else "(no rows)")
            print()
    if args.png:
        from vigil.fleet._plot import fallback_png  # noqa: PLC0415 - matplotlib on use

        fallback_png(args.dir, args.png)
    return 0
