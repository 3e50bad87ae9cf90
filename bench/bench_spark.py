"""Spark local[2] against the single-process export of the same logs, and where Spark's time goes.

``--logs`` logs of ``--records`` INFERENCE records each (plus a transition) are written with
the FlightRecorder (synthetic calls, a quarter of them answered by the fallback). Then, each
``--repeats`` times, on the same logs with the page cache warm:

* ``single``: ``vigil export LOGS --to DIR`` as a subprocess (imports, verify, Parquet);
* ``spark``: a subprocess (this script with ``--spark-child``) that builds a ``local[N]``
  SparkSession (the JVM start), runs a 2-task no-op job (the Python workers' start), then
  ``vigil.fleet.spark.export_spark`` of the logs (one task per log), then the same export into
  a second directory with every task timing itself (``_task`` wrapped: per-task time inside
  the Python worker, and which worker ran it). It reports each phase's wall time.

The ratio to read is ``spark / single`` of the whole subprocess: the point is that the same
code scales out, not that two local cores beat one process. Needs pyspark and a JDK: without
them the script says so and exits 0.

    python bench/bench_spark.py [--quick] [--logs 20] [--records 5000] [--repeats 2]
                                [--master local[2]] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vigil.auditlog import FlightRecorder, RingConfig
from vigil.schemas import ClockSource, Outcome, ServedBy, State


class _Clock:
    """Realtime and monotonic clocks that move 1 ms per reading (a day's worth of calls)."""

    def __init__(self, start_ns: int) -> None:
        self.real, self.mono = start_ns, 1_000_000
        self.source = ClockSource.INJECTED
        self.boot_uuid = b"bench-spark-0000"

    def realtime_ns(self) -> int:
        self.real += 1_000_000
        return self.real

    def monotonic_ns(self) -> int:
        self.mono += 1_000_000
        return self.mono


def make_logs(root: str, logs: int, records: int) -> list[str]:
    ring = RingConfig(size=4096 + 16 * (1 << 20), segment_size=1 << 20)
    paths = []
    for k in range(logs):
        path = os.path.join(root, f"device-{k:02d}", "flight.vigil")
        os.makedirs(os.path.dirname(path))
        clock = _Clock(1_700_000_000_000_000_000 + k * 10**12)
        digest = hashlib.sha256(b"model %d" % (k % 3)).digest()
        with FlightRecorder.create(path, ring, clock=clock) as w:
            for i in range(records):
                fb = (i + k) % 4 == 0
                w.record_inference(
                    request_id=i.to_bytes(16, "big"),
                    model_digest=digest,
                    input_digest=bytes(32),
                    output_digest=bytes(32),
                    state=State.NORMAL,
                    served_by=ServedBy.FALLBACK if fb else ServedBy.PRIMARY,
                    outcome=Outcome.TIMEOUT if fb else Outcome.OK,
                    latency_ns=(i % 97 + 1) * 10_000,
                    deadline_ns=10**7,
                )
            w.record_transition(State.NORMAL, State.DEGRADED, code=4101, reason="bench")
        paths.append(path)
    return paths


def spark_child(paths: list[str], root: str, master: str) -> None:
    """In a fresh process: time each phase of a Spark export; print them as one JSON line."""
    from vigil.fleet import spark as vspark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    t0 = time.perf_counter()
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(master)
        .appName("vigil-bench-spark")
        .config("spark.ui.enabled", "false")
        .config("spark.executorEnv.PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    t_session = time.perf_counter()
    session.sparkContext.parallelize(range(2), 2).map(lambda x: os.getpid()).collect()
    t_workers = time.perf_counter()
    summary = vspark.export_spark(paths, os.path.join(root, "spark"), spark=session)
    t_export = time.perf_counter()
    assert summary.exit_code == 0, summary.to_json()
    job = vspark._Job(
        dest=os.path.join(root, "spark-timed"),
        state={"schema_version": 1, "logs": {}},
        public_keys=(),
        fss_seeds=(),
        anchors=(),
        keep_damaged=False,
        device_from="host",
    )
    os.makedirs(job.dest)

    def timed(p: str) -> tuple[float, int]:
        t = time.perf_counter()
        vspark._task(p, job)
        return time.perf_counter() - t, os.getpid()

    tasks = session.sparkContext.parallelize(paths, len(paths)).map(timed).collect()
    t_timed = time.perf_counter()
    session.stop()
    t_stop = time.perf_counter()
    print(
        json.dumps(
            {
                "session": t_session - t0,
                "first_job": t_workers - t_session,
                "export": t_export - t_workers,
                "timed_job": t_timed - t_export,
                "stop": t_stop - t_timed,
                "task_s": [s for s, _ in tasks],
                "workers": len({pid for _, pid in tasks}),
                "rows": sum(o.rows for o in summary.logs),
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 logs of 200 records, 1 repeat")
    ap.add_argument("--logs", type=int, default=20)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--dir")
    ap.add_argument(
        "--spark-child", nargs=2, metavar=("PATHS_JSON", "ROOT"), help=argparse.SUPPRESS
    )
    a = ap.parse_args()
    if a.spark_child:
        spark_child(json.loads(Path(a.spark_child[0]).read_text()), a.spark_child[1], a.master)
        return 0
    if importlib.util.find_spec("pyspark") is None:
        print("bench_spark: skipped, pyspark is not installed (pip install 'vigil[spark]')")
        return 0
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        print("bench_spark: skipped, no JDK (java on PATH or JAVA_HOME)")
        return 0
    if a.quick:
        a.records, a.repeats = 200, 1
    root = tempfile.mkdtemp(prefix="vigil-bench-spark-", dir=a.dir)
    try:
        t0 = time.perf_counter()
        paths = make_logs(root, a.logs, a.records)
        print(f"{a.logs} logs of {a.records} records in {time.perf_counter() - t0:.1f} s")
        listing = os.path.join(root, "paths.json")
        Path(listing).write_text(json.dumps(paths))
        single, whole, phases = [], [], []
        for r in range(a.repeats):
            ds = os.path.join(root, f"single{r}")
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "vigil", "export", *paths, "--to", ds],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            single.append(time.perf_counter() - t)
            sub = os.path.join(root, f"spark{r}")
            os.makedirs(sub)
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--master", a.master, "--spark-child", listing, sub],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            whole.append(time.perf_counter() - t)
            phases.append(json.loads(out.strip().splitlines()[-1]))
        med = statistics.median
        rows = phases[0]["rows"]
        print(f"{rows} rows exported per run; medians of {a.repeats} runs, master {a.master}")
        print(f"  single process (vigil export, subprocess)   {med(single):7.2f} s")
        one = [w - p["timed_job"] for w, p in zip(whole, phases, strict=True)]
        print(f"  Spark (subprocess: start, one export, stop) {med(one):7.2f} s")
        print(f"  spark / single = {med(one) / med(single):.2f}")
        print("  where Spark's time goes (medians):")
        for key, what in (
            ("session", "SparkSession: JVM start, context"),
            ("first_job", "first job: Python workers start"),
            ("export", f"export_spark, {a.logs} tasks"),
            ("timed_job", "the same, each task timed"),
            ("stop", "session stop"),
        ):
            print(f"    {what:36} {med(p[key] for p in phases):7.2f} s")
        tasks = [s for p in phases for s in p["task_s"]]
        print(
            f"    per task (inside the Python worker): median {med(tasks):.3f} s, "
            f"max {max(tasks):.3f} s, sum {sum(tasks) / len(phases):.2f} s per run, "
            f"{phases[0]['workers']} worker processes"
        )
        phase_keys = ("session", "first_job", "export", "timed_job", "stop")
        rest = [w - sum(p[k] for k in phase_keys) for w, p in zip(whole, phases, strict=True)]
        # (the timed job is not part of the ratio: it runs the export a second time)
        print(f"    interpreter start + imports (the rest)   {med(rest):7.2f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
