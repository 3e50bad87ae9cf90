"""Tabulate ``bench/alternate_commits.sh``'s outputs: each headline figure's runs on the old and
the new side, their medians and new/old.

    python bench/alternate_summary.py DIR        # DIR: ALT_OUT of alternate_commits.sh

A figure a side's output does not print (the benchmark changed its wording, or failed) shows
as ``-``. The figures are the ones PERFORMANCE.md quotes for each benchmark; ``lower`` says
whether a smaller value is the better one.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

_N = r"([\d,]+(?:\.\d+)?)"
# (benchmark, figure, unit, lower is better, regex whose group 1 is the figure)
FIGURES: list[tuple[str, str, str, bool, str]] = [
    ("append", "durability none", "records/s", False, rf"^vigil-none\s+{_N}"),
    ("append", "durability batch", "records/s", False, rf"^vigil-batch\s+{_N}"),
    (
        "append",
        "none / SQLite WAL executemany",
        "x",
        False,
        rf" vigil-none / sqlite-wal-many >= 1: {_N}",
    ),
    ("append", "none / logging.FileHandler", "x", False, rf" vigil-none / logging-file >= 5: {_N}"),
    (
        "append",
        "batch API / SQLite WAL executemany",
        "x",
        False,
        rf"-many / sqlite-wal-many >= 1: {_N}",
    ),
    ("append", "batch API / logging.FileHandler", "x", False, rf"-many / logging-file >= 5: {_N}"),
    (
        "append",
        "none / SQLite, CPU time",
        "x",
        False,
        rf" vigil-none / sqlite-wal-many >= 1: .*?CPU time: {_N}",
    ),
    (
        "append",
        "batch API / SQLite, CPU time",
        "x",
        False,
        rf"-many / sqlite-wal-many >= 1: .*?CPU time: {_N}",
    ),
    (
        "append",
        "none / logging, CPU time",
        "x",
        False,
        rf" vigil-none / logging-file >= 5: .*?CPU time: {_N}",
    ),
    (
        "append",
        "batch API / logging, CPU time",
        "x",
        False,
        rf"-many / logging-file >= 5: .*?CPU time: {_N}",
    ),
    ("append", "none p99", "µs", True, rf"vigil-none p99 <= 10 us: {_N}"),
    ("supervisor", "inline overhead p50", "µs", True, rf"inline, p50 <= 10 us: {_N}"),
    ("supervisor", "thread overhead p50", "µs", True, rf"thread isolation, p50: {_N}"),
    ("supervisor", "fsm+watchdog / pybreaker", "x", True, rf"pybreaker <= 2: {_N}"),
    ("crc", "CRC32C 256 B", "ns", True, rf"^vigil crc32c \(bytes\)\s+{_N}"),
    ("crc", "crcmod fallback 256 B", "ns", True, rf"^crcmod \(portable, vigil\)\s+{_N}"),
    ("model", "bare, batch 1, p50", "µs", True, rf"^bare\s+{_N}"),
    ("model", "inline, batch 1, p50", "µs", True, rf"^supervised \(inline\)\s+{_N}"),
    ("model", "inline overhead, batch 1", "µs", True, rf"inline, batch 1: {_N}"),
    ("protocol", "socket added, small", "µs", True, rf"^small\s+{_N}\s+{_N}\s+{_N}"),
    ("protocol", "socket added, 1 MiB", "µs", True, rf"^1MiB\s+{_N}\s+{_N}\s+{_N}"),
    ("recover", "open (warm)", "ms", True, rf"^\s*open \(warm\)\s+{_N}"),
    ("recover", "open after SIGKILL", "ms", True, rf"^\s*open after SIGKILL \(warm\)\s+{_N}"),
    ("seal", "unsealed", "records/s", False, rf"^unsealed\s+{_N}"),
    ("seal", "ed25519 / unsealed", "x", False, rf"^ed25519\s+{_N}\s+{_N}"),
    ("verify", "LogReader.verify()", "k records/s", False, rf"^api: k records/s\s+{_N}"),
    ("verify", "vigil verify (CLI)", "s", True, rf"^cli: vigil verify \(s\)\s+{_N}"),
    ("worker", "pool boundary, 1x16", "µs", True, rf"1x16 float32\s+pool\s+{_N}"),
    ("worker", "hot-standby failover", "ms", True, rf"hot standby\s+median\s+{_N}"),
]


def _value(text: str, pattern: str) -> float | None:
    m = re.search(pattern, text, re.MULTILINE)
    if m is None:
        return None
    return float(m.group(m.lastindex or 1).replace(",", ""))


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".")
    print("| benchmark | figure | old runs | new runs | median old → new | new/old |")
    print("|---|---|---|---|---|---|")
    for bench, name, unit, lower, pattern in FIGURES:
        sides = {}
        for side in ("old", "new"):
            runs = sorted(root.glob(f"{side}.bench_{bench}.*.txt"))
            sides[side] = [_value(p.read_text(errors="replace"), pattern) for p in runs]
        got = {s: [v for v in vs if v is not None] for s, vs in sides.items()}
        med = {s: statistics.median(v) if v else None for s, v in got.items()}
        ratio = med["new"] / med["old"] if med["old"] and med["new"] is not None else None
        better = "" if ratio is None else (" (lower is better)" if lower else "")
        print(
            f"| {bench} | {name} ({unit}){better} | {', '.join(map(_fmt, sides['old']))} | "
            f"{', '.join(map(_fmt, sides['new']))} | {_fmt(med['old'])} → {_fmt(med['new'])} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
