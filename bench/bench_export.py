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
report over it ``--repeats`` times (median, and each report's own median), each time on a
new connection (opening it counted: ``vigil fleet report`` opens one per run).

``--no-reports`` stops after the dump/export timing; ``--reports-only`` skips it (the logs
are made and exported once, for the synthesis, whose summaries are then written by the
export's own SQL over every part file); ``--keep DIR`` keeps the synthesized dataset in DIR
and, when DIR already holds one, reuses it without making logs at all; ``--explain`` prints
each report's ``EXPLAIN ANALYZE`` once. ``--baseline FILE`` also times the views and reports
of another commit's ``vigil/fleet/_report.py``, alternating with this one's on the same
dataset. Before timing, every report over the summaries is checked against the same report
over the raw rows.

    python bench/bench_export.py [--quick] [--calls 10000] [--devices 4] [--rows 10000000]
                                 [--logs 200] [--repeats 3] [--dir DIR]
                                 [--reports-only] [--keep DIR] [--explain] [--baseline FILE]
                                 [--no-reports]
    python bench/bench_export.py --keep DIR --incremental LOG... [--baseline-src SRC DIR2]

``--incremental LOG...`` exports each log, one at a time, into the kept dataset DIR (a new
log: what a device's daily export adds), then once more (nothing new), each in a subprocess,
and prints the export's in-process time and its summaries' share; ``--baseline-src SRC
DIR2`` alternates with another commit's source tree SRC exporting into its own dataset DIR2
(a copy: ``cp -al DIR DIR2`` shares the part files, which are never changed in place).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from vigil import fleet
from vigil.fleet._report import summarized


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
    summarize(dest)
    got = con.execute(
        f"SELECT count(*), count(DISTINCT log_id), count(DISTINCT device) "
        f"FROM read_parquet('{dest}/inferences/**/*.parquet', hive_partitioning = false)"
    ).fetchone()
    assert got is not None
    return int(got[0]), int(got[1]), int(got[2])


def summarize(dest: str) -> None:
    """Write the export's summaries for rows that were not written by the export (the
    synthesized ones): the export's own SQL over every part file (a dataset of schema 1 is
    upgraded: its record tables are the same)."""
    from vigil.fleet._rows import SCHEMA_VERSION
    from vigil.fleet._summary import update

    path = os.path.join(dest, "_vigil_export.json")
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    state["schema_version"] = SCHEMA_VERSION
    state["generation"] = int(state.get("generation", 0)) + 1
    with open(path, "w", encoding="utf-8") as f:
        json.dump(state, f)
    t0 = time.perf_counter()
    update(dest, None, state["generation"])
    print(f"summaries of every part file written in {time.perf_counter() - t0:.1f} s")


def same_answers(big: str) -> None:
    """Every report over the summaries against the same report over the raw tables."""
    t0 = time.perf_counter()
    con, raw = fleet.connect(big), fleet.connect(big, summaries=False)
    for name, (_, sql) in fleet.REPORTS.items():
        got, want = fleet.run_sql(big, sql, con), fleet.run_sql(big, sql, raw)
        # the same rows; the order of rows the ORDER BY ties is DuckDB's to choose
        same = got["columns"] == want["columns"] and sorted(map(repr, got["rows"])) == sorted(
            map(repr, want["rows"])
        )
        print(f"  {name:12} {len(got['rows']):6} rows, summaries == raw: {same}")
        assert same, name
    print(f"  (checked in {time.perf_counter() - t0:.1f} s)")


def make_logs_timed(root: str, a: argparse.Namespace) -> list[str]:
    t0 = time.perf_counter()
    logs = make_logs(root, a.devices, a.calls)
    print(f"{a.devices} demo logs of {a.calls} calls in {time.perf_counter() - t0:.1f} s")
    return logs


def export_vs_dump(root: str, logs: list[str], repeats: int) -> None:
    vigil = [sys.executable, "-m", "vigil"]
    dump_s, export_s, again_s = [], [], []
    for r in range(repeats):
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
        print(f"{name:10} {med(xs):9.3f} {min(xs):7.3f} {max(xs):7.3f} {records / med(xs):10.0f}")
    print(f"export/dump = {med(export_s) / med(dump_s):.2f} (same logs, same run)")


def time_reports(big: str, repeats: int, explain: bool, baseline: str | None = None) -> None:
    """Every built-in report, ``repeats`` times, each time on a new connection; with
    ``baseline`` (a ``_report.py`` of another commit) its reports too, alternating."""
    med = statistics.median
    suites: dict[str, Any] = {"this": fleet}
    if baseline:
        spec = importlib.util.spec_from_file_location("baseline_report", baseline)
        assert spec is not None
        assert spec.loader is not None
        suites["baseline"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(suites["baseline"])
        # the record tables of schemas 1 and 2 are the same: let the old module read them
        suites["baseline"].SCHEMA_VERSION = fleet.SCHEMA_VERSION
    con = fleet.connect(big)
    n = con.execute("SELECT count(*) FROM inferences_all").fetchone()[0]
    same_answers(big)
    files = sum(len(fs) for _, _, fs in os.walk(big))
    if explain:
        for name, (_, sql) in fleet.REPORTS.items():
            print(f"--- EXPLAIN ANALYZE {name}")
            for row in fleet.run_sql(big, "EXPLAIN ANALYZE " + sql, con)["rows"]:
                print(row[1])
    con.close()
    per: dict[str, dict[str, list[float]]] = {
        s: {k: [] for k in ("connect", *m.REPORTS)} for s, m in suites.items()
    }
    total: dict[str, list[float]] = {s: [] for s in suites}
    for _ in range(repeats):
        for suite, mod in suites.items():
            t_all = time.perf_counter()
            con = mod.connect(big)
            per[suite]["connect"].append(time.perf_counter() - t_all)
            for name, (_, sql) in mod.REPORTS.items():
                t1 = time.perf_counter()
                mod.run_sql(big, sql, con)
                per[suite][name].append(time.perf_counter() - t1)
            total[suite].append(time.perf_counter() - t_all)
            con.close()
    for suite in suites:
        xs = total[suite]
        print(
            f"fleet report, {suite} (connect + all {len(fleet.REPORTS)} reports) over {n} "
            f"inference rows in {files} files: median {med(xs):.2f} s (min {min(xs):.2f}, "
            f"max {max(xs):.2f}, {repeats} runs)"
        )
    print(f"  {'median s':>22}" + "".join(f"{s:>10}" for s in suites))
    for name in per["this"]:
        print(f"  {name:22}" + "".join(f"{med(per[s][name]):10.3f}" for s in suites))
    if baseline:
        print(f"  this / baseline, all: {med(total['this']) / med(total['baseline']):.2f}")


_INCREMENTAL = """
import sys, time
import vigil.fleet._parquet as P
from vigil import fleet
assert P.__file__.startswith(sys.argv[3]), P.__file__
spent, update = [], P.update
def timed(*args):
    t0 = time.perf_counter()
    update(*args)
    spent.append(time.perf_counter() - t0)
P.update = timed
t0 = time.perf_counter()
fleet.export([sys.argv[1]], sys.argv[2], device_from="dir")
print(time.perf_counter() - t0, sum(spent))
"""


def incremental(logs: list[str], targets: dict[str, tuple[str, str]]) -> None:
    """Export each of ``logs`` (a new log each time) into each target's dataset, then again
    (nothing new), in a subprocess with the target's source tree, alternating which goes
    first: the export's in-process time and its summaries' share (``_summary.update``).

    ``targets``: name -> (source tree for PYTHONPATH, dataset)."""
    med = statistics.median
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for i, log in enumerate(logs):
        names = list(targets)
        for name in names if i % 2 == 0 else names[::-1]:
            src, ds = targets[name]
            env = {**os.environ, "PYTHONPATH": src}
            for kind in ("new log", "again"):
                out = subprocess.run(  # in SRC: ``-c`` puts the working directory first
                    [sys.executable, "-c", _INCREMENTAL, os.path.abspath(log), ds, src],
                    cwd=src,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                total, summaries = float(out[-2]), float(out[-1])
                got.setdefault((name, kind), []).append((total, summaries))
                print(f"  {name:10} {kind:8} export {total:6.2f} s, summaries {summaries:6.2f} s")
    print(f"  {'median s':28} {'export':>8} {'summaries':>10}")
    for (name, kind), xs in got.items():
        t, u = med(x[0] for x in xs), med(x[1] for x in xs)
        print(f"  {name:10} {kind:16} {t:8.2f} {u:10.2f}   ({len(xs)} runs)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small logs, 200 k report rows")
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--logs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir")
    ap.add_argument("--reports-only", action="store_true", help="skip dump/export timing")
    ap.add_argument("--keep", metavar="DIR", help="keep (or reuse) the synthesized dataset")
    ap.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE each report once")
    ap.add_argument(
        "--no-reports", action="store_true", help="only export against dump: no 10 M dataset"
    )
    ap.add_argument(
        "--baseline", metavar="FILE", help="a vigil/fleet/_report.py of another commit: alternate"
    )
    ap.add_argument(
        "--incremental",
        nargs="+",
        metavar="LOG",
        help="export each LOG into the --keep dataset (new, then again) and stop",
    )
    ap.add_argument(
        "--baseline-src",
        nargs=2,
        metavar=("SRC", "DIR"),
        help="with --incremental: alternate with another commit's tree SRC on its dataset DIR",
    )
    a = ap.parse_args()
    if a.incremental:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        targets = {"this": (here, os.path.abspath(a.keep))}
        if a.baseline_src:
            src, ds = map(os.path.abspath, a.baseline_src)
            targets["baseline"] = (src, ds)
        incremental(a.incremental, targets)
        return 0
    if a.quick:
        a.calls, a.devices, a.rows, a.logs, a.repeats = 400, 2, 200_000, 20, 2
    root = tempfile.mkdtemp(prefix="vigil-bench-export-", dir=a.dir)
    try:
        big = a.keep or os.path.join(root, "big")
        if a.keep and os.path.isfile(os.path.join(big, "_vigil_export.json")):
            print(f"reusing the dataset in {big}")
            if not summarized(big):
                summarize(big)
        else:
            logs = make_logs_timed(root, a)
            if not a.reports_only:
                export_vs_dump(root, logs, a.repeats)
                if a.no_reports:
                    return 0
            else:
                vigil = [sys.executable, "-m", "vigil"]
                ds0 = os.path.join(root, "ds0")
                run([*vigil, "export", *logs, "--to", ds0, "--device-from", "dir"])
            t0 = time.perf_counter()
            n, n_logs, n_devices = synthesize(os.path.join(root, "ds0"), big, a.rows, a.logs)
            print(
                f"\nsynthesized {n} inference rows, {n_logs} logs of {n_devices} devices, in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        time_reports(big, a.repeats, a.explain, a.baseline)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
