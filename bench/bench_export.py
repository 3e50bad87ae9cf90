"""Fleet export and reports: ``vigil export`` against ``vigil dump``, and DuckDB at scale.

Logs are real: ``vigil demo --out D --calls N --seed S`` for ``--devices`` seeds (the demo's
faults, fallbacks, transitions and SAFE_STOP; the logs' ``--device-from dir`` names them).
Then, each ``--repeats`` times, as subprocesses on the same logs (page cache warm):

* ``dump``: ``vigil dump LOG --format jsonl > file`` for every log;
* ``export``: ``vigil export LOGS --to DIR`` (Parquet) into a fresh directory: verification,
  decoding and typed columns; ``export/dump`` is the ratio to trust on a noisy machine;
* ``again``: the same export once more into the same directory (the watermarks: no new rows).

Then the DuckDB report: the real export's ``inferences`` and ``transitions`` are replicated
(in DuckDB, new log ids, seqs and times, ``--logs`` logs) until ``inferences`` holds
``--rows`` rows, written with the same layout, and ``vigil.fleet.report`` runs every built-in
report over it ``--repeats`` times (median, and each report's own median).

    python bench/bench_export.py [--quick] [--calls 10000] [--devices 4] [--rows 5000000]
                                 [--logs 200] [--repeats 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from vigil import fleet


def run(cmd: list[str], out: str | None = None) -> float:
    t0 = time.perf_counter()
    if out is None:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    else:
        with open(out, "wb") as f:
            subprocess.run(cmd, check=True, stdout=f)
    return time.perf_counter() - t0


def make_logs(root: str, devices: int, calls: int) -> list[str]:
    logs = []
    for i in range(devices):
        out = os.path.join(root, f"device-{i:02d}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vigil",
                "demo",
                "--out",
                out,
                "--calls",
                str(calls),
                "--seed",
                str(100 + i),
                "--device",
                "cpu",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        logs.append(os.path.join(out, "flight.vigil"))
    return logs


def synthesize(src: str, dest: str, rows: int, logs: int) -> tuple[int, int, int]:
    """Replicate ``src``'s inferences and transitions into ``dest`` until ``rows`` rows."""
    import duckdb

    con = duckdb.connect()
    base = con.execute(
        f"SELECT count(*), max(seq), max(epoch_ns(time)) - min(epoch_ns(time)) "
        f"FROM read_parquet('{src}/inferences/**/*.parquet', hive_partitioning = false)"
    ).fetchone()
    assert base is not None
    n, max_seq, span = base
    copies = -(-rows // n)
    os.makedirs(dest, exist_ok=True)
    for table in ("inferences", "transitions"):
        con.execute(
            f"""
            COPY (
              SELECT * EXCLUDE (log_id, device, seq, time, real_ns),
                     real_ns + ((j // {logs}) * {span // 1000 + 60_000_000}
                                + (j % 7) * 86400000000) * 1000 AS real_ns,
                     md5(log_id || (j % {logs})) AS log_id,
                     'device-' || lpad(CAST(j % {logs} AS VARCHAR), 4, '0') AS device,
                     seq + (j // {logs}) * {max_seq} AS seq,
                     time + to_microseconds((j // {logs}) * {span // 1000 + 60_000_000}
                                            + (j % 7) * 86400000000) AS time,
                     md5(log_id || (j % {logs})) AS log,
                     CAST(time + to_microseconds((j // {logs}) * {span // 1000 + 60_000_000}
                                                 + (j % 7) * 86400000000) AS DATE) AS date
              FROM read_parquet('{src}/{table}/**/*.parquet', hive_partitioning = false),
                   range({copies}) AS r(j)
              {"LIMIT " + str(rows) if table == "inferences" else ""}
            ) TO '{dest}/{table}' (FORMAT parquet, PARTITION_BY (log, date), OVERWRITE_OR_IGNORE)
            """
        )
    shutil.copytree(f"{src}/logs", f"{dest}/logs", dirs_exist_ok=True)
    shutil.copy(f"{src}/_vigil_export.json", dest)
    got = con.execute(
        f"SELECT count(*), count(DISTINCT log_id), count(DISTINCT device) "
        f"FROM read_parquet('{dest}/inferences/**/*.parquet', hive_partitioning = false)"
    ).fetchone()
    assert got is not None
    return int(got[0]), int(got[1]), int(got[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small logs, 200 k report rows")
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--logs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir")
    a = ap.parse_args()
    if a.quick:
        a.calls, a.devices, a.rows, a.logs, a.repeats = 400, 2, 200_000, 20, 2
    root = tempfile.mkdtemp(prefix="vigil-bench-export-", dir=a.dir)
    try:
        t0 = time.perf_counter()
        logs = make_logs(root, a.devices, a.calls)
        print(f"{a.devices} demo logs of {a.calls} calls in {time.perf_counter() - t0:.1f} s")
        vigil = [sys.executable, "-m", "vigil"]
        dump_s, export_s, again_s = [], [], []
        for r in range(a.repeats):
            dump_s.append(
                sum(run([*vigil, "dump", p, "--format", "jsonl"], f"{p}.jsonl") for p in logs)
            )
            ds = os.path.join(root, f"ds{r}")
            cmd = [*vigil, "export", *logs, "--to", ds, "--device-from", "dir"]
            export_s.append(run(cmd))
            again_s.append(run(cmd))
        summary = json.loads(
            subprocess.run(
                [*vigil, "export", *logs, "--to", os.path.join(root, "dsj"), "--json"],
                check=True,
                capture_output=True,
            ).stdout
        )
        records = sum(o["rows"] for o in summary["logs"])
        jsonl = sum(os.path.getsize(f"{p}.jsonl") for p in logs)
        parquet = sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, fs in os.walk(os.path.join(root, "ds0"))
            for f in fs
        )
        med = statistics.median
        print(f"{records} records; jsonl {jsonl / 1e6:.1f} MB, parquet {parquet / 1e6:.2f} MB")
        print(f"{'':10} {'median s':>9} {'min':>7} {'max':>7} {'records/s':>10}")
        for name, xs in (("dump", dump_s), ("export", export_s), ("again", again_s)):
            print(
                f"{name:10} {med(xs):9.3f} {min(xs):7.3f} {max(xs):7.3f} {records / med(xs):10.0f}"
            )
        print(f"export/dump = {med(export_s) / med(dump_s):.2f} (same logs, same run)")

        big = os.path.join(root, "big")
        t0 = time.perf_counter()
        n, n_logs, n_devices = synthesize(os.path.join(root, "ds0"), big, a.rows, a.logs)
        print(
            f"\nsynthesized {n} inference rows, {n_logs} logs of {n_devices} devices, in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        per: dict[str, list[float]] = {k: [] for k in fleet.REPORTS}
        total = []
        for _ in range(a.repeats):
            con = fleet.connect(big)
            t_all = time.perf_counter()
            for name, (_, sql) in fleet.REPORTS.items():
                t1 = time.perf_counter()
                fleet.run_sql(big, sql, con)
                per[name].append(time.perf_counter() - t1)
            total.append(time.perf_counter() - t_all)
        print(
            f"fleet report (all {len(per)} reports) over {n} rows: median {med(total):.2f} s "
            f"(min {min(total):.2f}, max {max(total):.2f}, {a.repeats} runs)"
        )
        for name, xs in per.items():
            print(f"  {name:12} {med(xs):7.3f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
