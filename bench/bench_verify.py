"""Verification throughput: ``LogReader.verify()`` and the ``vigil verify`` command.

The script fills a ring (default 64 MiB, 1 MiB segments) with INFERENCE records until it has
wrapped once (so verification meets evicted records and a head in mid-ring), then measures,
each ``--repeats`` times:

* ``api``: ``LogReader(path)`` + ``verify()`` in this process; records/s = records checked /
  wall time. Every record's CRC32C and SHA-256 chain link are checked, and its header decoded;
* ``floor``: the same bytes read segment by segment, and for each record only what cannot be
  skipped: unpack the header, CRC32C, SHA-256 chain link (a bare loop following docs/FORMAT.md,
  no classification). ``api / floor`` is the ratio to trust on a noisy machine;
* ``cli``: wall time of ``vigil verify PATH`` as a subprocess (exit status must be 0), and of
  ``python -c "import vigil.cli"``, the start-up part of it.

The page cache is warm (the log was just written). The table shows median, min and max.
Target from the issue: verify >= 500 k records/s.

    python bench/bench_verify.py [--quick] [--size 67108864] [--repeats 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from vigil.auditlog import FlightRecorder, LogReader, RingConfig, crc32c

FIELDS = {
    "request_id": bytes(16),
    "model_digest": b"m" * 32,
    "input_digest": b"i" * 32,
    "output_digest": b"o" * 32,
    "state": 1,
    "served_by": 1,
    "outcome": 0,
    "latency_ns": 123_456,
    "deadline_ns": 10_000_000,
}


def fill(path: str, size: int) -> int:
    """Create the log and append until it has wrapped (plus a quarter lap); return appends."""
    config = RingConfig(size=size, segment_size=1 << 20)
    goal = config.segment_count + max(config.segment_count // 4, 1)
    n = 0
    with FlightRecorder.create(path, config, durability="none") as w:
        while w.statistics().segment_switches < goal:
            for _ in range(10_000):
                w.record_inference(**FIELDS)
            n += 10_000
    return n


def floor_scan(path: str) -> int:
    """Check CRC and chain link of every record of every segment, nothing else; return count."""
    hdr, crc_at = struct.Struct("<IHBBQQ"), struct.Struct("<I")  # length .. lap
    n = 0
    with LogReader(path) as reader, open(path, "rb", buffering=0) as f:
        geo = reader.geometry
        for seg in sorted((s for s in reader.segments if s.status == "valid"),
                          key=lambda s: s.generation):  # fmt: skip
            f.seek(geo.segment_offset(seg.index))
            buf = f.read(geo.segment_size)
            view, pos, prev = memoryview(buf), geo.header_area, None
            while pos + 56 <= len(buf):
                length, _, _, _, _, lap = hdr.unpack_from(buf, pos)
                if lap != seg.generation or not 96 <= length <= len(buf) - pos:
                    break
                end = pos + length
                if crc32c(view[pos : end - 4]) != crc_at.unpack_from(buf, end - 4)[0]:
                    break
                if prev is not None:
                    h = hashlib.sha256(prev)
                    h.update(view[pos : end - 36])
                    if h.digest() != buf[end - 36 : end - 4]:
                        break
                prev, pos, n = buf[end - 36 : end - 4], end, n + 1
    return n


def cli_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "vigil")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "import sys; from vigil.cli import main; sys.exit(main())"]


def timed_run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:  # not a timing check: a fresh log must verify intact
        print(f"WARNING: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return wall


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):>10.3f} {min(values):>10.3f} {max(values):>10.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 MiB ring, 1 repeat")
    ap.add_argument("--size", type=int, default=64 << 20, help="ring size in bytes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"), help="scratch directory")
    a = ap.parse_args()
    if a.quick:
        a.size, a.repeats = 4 << 20, 1
    workdir = tempfile.mkdtemp(prefix="vigil-bench-verify-", dir=a.dir)
    path = os.path.join(workdir, "ring.vigil")
    cli = cli_command()
    try:
        appended = fill(path, a.size)
        api, rates, floor, ratio, cli_wall, start_wall = [], [], [], [], [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            checked = floor_scan(path)
            floor.append(checked / (time.perf_counter() - t0) / 1e3)
            t0 = time.perf_counter()
            with LogReader(path) as reader:
                report = reader.verify()
            wall = time.perf_counter() - t0
            if not report.intact:
                print(f"WARNING: a freshly written log does not verify intact: {report.counts}")
            api.append(wall)
            rates.append(report.records / wall / 1e3)
            ratio.append(rates[-1] / floor[-1])
            cli_wall.append(timed_run([*cli, "verify", path]))
            start_wall.append(timed_run([sys.executable, "-c", "import vigil.cli"]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"verify: {a.size >> 20} MiB ring, 1 MiB segments, {appended:,} records appended "
        f"(wrapped); {report.records:,} records retained in {report.segments} segments, "
        f"{report.bytes / 2**20:.1f} MiB; findings {report.counts or 'none'}; "
        f"{a.repeats} repeats; warm page cache; the floor checked {checked:,} records"
    )
    print(f"\n{'':<38} {'median':>10} {'min':>10} {'max':>10}")
    print(f"{'api: LogReader + verify() (s)':<38} {stats(api)}")
    print(f"{'api: k records/s':<38} {stats(rates)}")
    print(f"{'floor: k records/s':<38} {stats(floor)}")
    print(f"{'api / floor (per repeat)':<38} {stats(ratio)}")
    print(f"{'cli: vigil verify (s)':<38} {stats(cli_wall)}")
    print(f"{'cli: python -c import vigil.cli (s)':<38} {stats(start_wall)}")
    cli_rate = report.records / statistics.median(cli_wall) / 1e3
    rate = statistics.median(rates)
    print(f"\ncli effective rate {cli_rate:,.0f} k records/s (start-up included)")
    print(
        f"  {'PASS' if rate >= 500 else 'MISS'}  verify >= 500 k records/s: {rate:,.0f} k "
        f"records/s (ratio to target {rate / 500:.2f}); cli {cli_rate / 500:.2f}"
    )


if __name__ == "__main__":
    main()
