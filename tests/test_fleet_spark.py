"""vigil.fleet.spark: the verify-and-export as a Spark job in local mode, one task per log,
writing the very dataset ``vigil export`` writes (slow: it starts a JVM)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from vigil.auditlog import FlightRecorder, RingConfig
from vigil.schemas import Outcome, ServedBy, State

from conftest import FakeClock

pytestmark = pytest.mark.slow
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyspark")

from vigil import fleet  # noqa: E402
from vigil.fleet._report import summarized  # noqa: E402
from vigil.fleet._summary import FILES, SUMMARY_DIR, summary_files  # noqa: E402
from vigil.fleet.spark import export_spark  # noqa: E402

RING = RingConfig(size=4096 + 8 * (64 << 10), segment_size=64 << 10)


def make_log(path: Path, n: int, seed: int) -> str:
    clock = FakeClock(start_ns=1_700_000_000_000_000_000 + seed * 10**12, step_ns=10**6)
    with FlightRecorder.create(path, RING, clock=clock) as w:
        for i in range(n):
            fb = (i + seed) % 4 == 0
            w.record_inference(
                request_id=i.to_bytes(16, "big"),
                model_digest=hashlib.sha256(b"m%d" % seed).digest(),
                input_digest=bytes(32),
                output_digest=bytes(32),
                state=State.NORMAL,
                served_by=ServedBy.FALLBACK if fb else ServedBy.PRIMARY,
                outcome=Outcome.TIMEOUT if fb else Outcome.OK,
                latency_ns=(i + 1) * 1000,
                deadline_ns=10**7,
            )
        w.record_transition(State.NORMAL, State.DEGRADED, code=4101, reason="spark")
    return str(path)


def rows(dest: Path, table: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for f in sorted((dest / table).glob("log=*/**/*.parquet")):
        out += pq.read_table(f).to_pylist()
    return sorted(out, key=lambda r: (str(r["log_id"]), int(r.get("seq", 0))))  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def spark():
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("no JDK")
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("vigil-test")
        .config("spark.ui.enabled", "false")
        .config("spark.executorEnv.PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        .getOrCreate()
    )
    yield session
    session.stop()


# py4j opens gateway connections on demand and keeps them in its pool until the session (shared
# by the module, stopped at its end) stops: a socket the leak check would name after the test.
@pytest.mark.leaks
def test_spark_job_writes_the_same_dataset_as_vigil_export(tmp_path: Path, spark) -> None:
    logs = [make_log(tmp_path / f"d{i}.vigil", 50 + 10 * i, i) for i in range(3)]
    junk = tmp_path / "junk.vigil"
    junk.write_bytes(b"not a log" * 1000)
    paths = [*logs, str(junk)]
    summary = export_spark(paths, str(tmp_path / "spark"), spark=spark)
    assert summary.exit_code == 3
    assert [o.error_code for o in summary.logs] == [None, None, None, "DIA-3003"]
    plain = fleet.export(paths, str(tmp_path / "plain"))
    assert [o.rows for o in summary.logs] == [o.rows for o in plain.logs]
    strip = ("exported_at", "path")
    for table in ("inferences", "transitions", "lifecycle", "logs"):
        got = [
            {k: v for k, v in r.items() if k not in strip} for r in rows(tmp_path / "spark", table)
        ]
        want = [
            {k: v for k, v in r.items() if k not in strip} for r in rows(tmp_path / "plain", table)
        ]
        assert got == want, table
    # the driver wrote the summaries of the tasks' part files: the same as the plain export's
    assert summarized(tmp_path / "spark")
    for name in FILES:
        got_s, want_s = (
            sorted(
                repr((str(f.relative_to(tmp_path / d / SUMMARY_DIR)), row))
                for f in summary_files(tmp_path / d, name)
                for row in pq.read_table(f).to_pylist()
            )
            for d in ("spark", "plain")
        )
        assert got_s == want_s, name
    # the driver merged every task's watermark: exporting again adds nothing
    # (a path given twice is one task: two tasks would write the same log's files)
    again = export_spark([*paths, logs[0]], str(tmp_path / "spark"), spark=spark)
    assert [o.rows for o in again.logs] == [0, 0, 0, 0]
    assert summarized(tmp_path / "spark")
    # and Spark reads the dataset back, partitions included
    df = spark.read.parquet(str(tmp_path / "spark" / "inferences"))
    assert df.count() == 50 + 60 + 70
    assert {r["log"] for r in df.select("log").distinct().collect()} == {
        o.log_id for o in summary.logs[:3]
    }
