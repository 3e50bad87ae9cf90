"""vigil.fleet: verified export to Parquet, DuckDB reports, and bad input per log.

Logs are written here with known content (an injected clock, chosen outcomes), exported, read
back with pyarrow and DuckDB, and compared with what ``LogReader.records()`` (``vigil dump``)
says. Damage is real: bytes of the file are changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vigil import keys as _keys
from vigil.auditlog import FlightRecorder, LogReader, RingConfig, Sealer
from vigil.cli import main
from vigil.schemas import Outcome, ServedBy, State

from conftest import FakeClock

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("duckdb")

from vigil import fleet  # noqa: E402 - after the extras are known to be there
from vigil.fleet._verified import open_verified  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RING = RingConfig(size=4096 + 8 * (64 << 10), segment_size=64 << 10)
MODEL_A = hashlib.sha256(b"model a").digest()
MODEL_B = hashlib.sha256(b"model b").digest()
MS = 1_000_000


def write_calls(
    w: FlightRecorder,
    n: int,
    *,
    model: bytes = MODEL_A,
    fallback_every: int = 0,
    start: int = 0,
) -> None:
    """``n`` INFERENCE records; every ``fallback_every``-th a TIMEOUT served by the fallback."""
    for i in range(start, start + n):
        fb = bool(fallback_every) and i % fallback_every == fallback_every - 1
        w.record_inference(
            request_id=i.to_bytes(16, "big"),
            model_digest=model,
            input_digest=hashlib.sha256(b"in%d" % i).digest(),
            output_digest=bytes(32),
            state=State.NORMAL,
            served_by=ServedBy.FALLBACK if fb else ServedBy.PRIMARY,
            outcome=Outcome.TIMEOUT if fb else Outcome.OK,
            code=4002 if fb else 0,
            latency_ns=(i % 10 + 1) * MS,
            deadline_ns=50 * MS,
        )


def later(start_ns: int) -> FakeClock:
    """A clock for a later session: another boot, so monotonic time starts afresh."""
    return FakeClock(
        start_ns=start_ns, step_ns=MS, boot=b"%08d-session" % (start_ns // 10**9 % 10**8)
    )


def make_log(path: Path, n: int = 40, *, sealer: Sealer | None = None, **calls: object) -> Path:
    with FlightRecorder.create(path, RING, sealer=sealer, clock=FakeClock(step_ns=MS)) as w:
        write_calls(w, n, **calls)  # type: ignore[arg-type]
    return path


def table(dest: Path, name: str) -> list[dict[str, object]]:
    files = sorted((dest / name).glob("log=*/**/*.parquet"))
    if not files:
        return []
    rows: list[dict[str, object]] = []
    for f in files:
        rows += pq.read_table(f).to_pylist()
    return sorted(rows, key=lambda r: (r["log_id"], r.get("seq", 0)))


def dumped(path: Path) -> list[dict[str, object]]:
    with LogReader(path) as r:
        return [rec.to_json() for rec in r.records()]


# --- 1. the Parquet export ------------------------------------------------------------------


def test_export_holds_every_record_as_dump_shows_it(tmp_path: Path) -> None:
    log = make_log(tmp_path / "a.vigil", 30, fallback_every=3)
    with FlightRecorder.open(log, clock=later(1_800_000_000_000_000_000)) as w:
        w.record_transition(State.NORMAL, State.DEGRADED, code=4101, cause_seq=3, reason="x")
        w.annotate("operator", "hello")
    summary = fleet.export([str(log)], str(tmp_path / "ds"))
    assert summary.exit_code == 0 and summary.logs[0].verdict == "INTACT"
    ds = tmp_path / "ds"
    by_type = {t: [d for d in dumped(log) if d["type"] == t] for t in ("INFERENCE",)}
    rows = table(ds, "inferences")
    assert len(rows) == len(by_type["INFERENCE"]) == 30
    for row, rec in zip(rows, by_type["INFERENCE"], strict=True):
        assert row["seq"] == rec["seq"]
        assert row["state"] == rec["state"] and row["served_by"] == rec["served_by"]
        assert row["outcome"] == rec["outcome"] and row["code"] == rec["code"]
        assert row["latency_ns"] == rec["latency_ns"]
        assert row["model_digest"] == rec["model_digest"]
        assert row["real_ns"] == rec["real_ns"]
        assert row["time"].timestamp() * 1e9 == pytest.approx(rec["real_ns"], abs=1e3)
        assert row["status"] == "chain_valid"
    (tr,) = table(ds, "transitions")
    assert (tr["from_state"], tr["to_state"], tr["code"], tr["cause_seq"], tr["reason"]) == (
        "NORMAL",
        "DEGRADED",
        4101,
        3,
        "x",
    )
    (note,) = table(ds, "annotations")
    assert (note["key"], note["text"]) == ("operator", "hello")
    events = [r["event"] for r in table(ds, "lifecycle")]
    assert events == ["OPENED", "CLOSED", "OPENED", "CLOSED"]
    # partitioned by log and by date: two days here (the second session is in 2027)
    days = {p.parent.name for p in (ds / "lifecycle").glob("log=*/date=*/*.parquet")}
    assert days == {"date=2023-11-14", "date=2027-01-15"}
    (logrow,) = table(ds, "logs")
    assert logrow["verdict"] == "INTACT" and logrow["retained_last"] == dumped(log)[-1]["seq"]
    assert logrow["exported_through"] == logrow["retained_last"]
    schema = pq.read_schema(next((ds / "inferences").glob("**/*.parquet")))
    assert schema.field("latency_ns").type == pa.int64()
    assert str(schema.field("time").type) == "timestamp[us, tz=UTC]"  # Spark reads no ns
    assert schema.metadata[b"vigil_export_schema"] == b"2"


def test_sealed_log_rows_say_what_authenticates_them(tmp_path: Path) -> None:
    key = _keys.generate()
    log = tmp_path / "sealed.vigil"
    w = FlightRecorder.create(
        log, RING, sealer=Sealer(key, every_records=10, every_ms=0), clock=FakeClock(step_ns=MS)
    )
    write_calls(w, 25)
    w._drop()  # a crash: the newest records are under no checkpoint yet
    pub = tmp_path / "dev.pub"
    key.public.save(pub)
    keys = fleet.Keys(public_keys=(key.public,))
    assert fleet.export([str(log)], str(tmp_path / "nokey")).exit_code == 0
    assert {r["status"] for r in table(tmp_path / "nokey", "inferences")} == {
        "chain_valid",
        "unsealed_tail",
    }
    ds = tmp_path / "ds"
    assert fleet.export([str(log)], str(ds), keys=keys).exit_code == 0
    rows = table(ds, "inferences")
    (logrow,) = table(ds, "logs")
    tail = logrow["unsealed_from"]
    assert tail is not None and logrow["authenticated_last"] == tail - 1
    assert all(
        r["status"] == ("unsealed_tail" if r["seq"] >= tail else "authenticated") for r in rows
    )
    assert any(r["status"] == "unsealed_tail" for r in rows)
    # the next writer seals the tail; exporting again upgrades those rows, duplicating none
    FlightRecorder.open(log, sealer=Sealer(key, every_records=10, every_ms=0)).close()
    assert fleet.export([str(log)], str(ds), keys=keys).exit_code == 0
    again = table(ds, "inferences")
    assert [r["seq"] for r in again] == [r["seq"] for r in rows]
    assert {r["status"] for r in again} == {"authenticated"}
    assert len(table(ds, "checkpoints")) >= 3


def test_export_is_incremental_and_idempotent(tmp_path: Path) -> None:
    log = make_log(tmp_path / "a.vigil", 20)
    ds = tmp_path / "ds"
    first = fleet.export([str(log)], str(ds))
    parts = sorted(p.name for p in ds.glob("*/log=*/date=*/*.parquet"))
    assert first.logs[0].rows == 22  # 20 calls, OPENED, CLOSED
    again = fleet.export([str(log)], str(ds))
    assert again.logs[0].rows == 0 and again.logs[0].files == []
    assert sorted(p.name for p in ds.glob("*/log=*/date=*/*.parquet")) == parts
    with FlightRecorder.open(log, clock=later(1_700_000_100_000_000_000)) as w:
        write_calls(w, 5, start=20)
    third = fleet.export([str(log)], str(ds))
    assert third.logs[0].rows == 7  # OPENED, 5 calls, CLOSED: only the new records
    seqs = [r["seq"] for r in table(ds, "inferences")]
    assert len(seqs) == len(set(seqs)) == 25
    state = json.loads((ds / "_vigil_export.json").read_text())
    (entry,) = state["logs"].values()
    assert entry["watermark"] == entry["settled"] == dumped(log)[-1]["seq"]


def test_a_forked_log_is_refused_never_spliced(tmp_path: Path) -> None:
    """Two copies of one log (a cloned device image) that went on apart, exported into one
    dataset: the second copy's records were spliced after the first's as one verified log,
    INTACT, exit 0 (outside audit). A later copy of the same log still exports its news."""
    import shutil

    log = make_log(tmp_path / "a.vigil", 20)
    clone = tmp_path / "b.vigil"
    shutil.copy(log, clone)
    copy_of_a = tmp_path / "a-later.vigil"
    ds = tmp_path / "ds"
    assert fleet.export([str(log)], str(ds)).exit_code == 0
    for path, model, n in ((log, MODEL_A, 3), (clone, MODEL_B, 6)):
        with FlightRecorder.open(path, clock=later(1_700_000_100_000_000_000)) as w:
            write_calls(w, n, start=20, model=model)
    shutil.copy(log, copy_of_a)
    run = fleet.export([str(log), str(clone), str(copy_of_a)], str(ds))
    assert [o.error_code for o in run.logs] == [None, "DIA-8011", None]
    assert run.exit_code == 3 and "fork of the log" in (run.logs[1].error or "")
    rows = table(ds, "inferences")
    assert sorted(r["seq"] for r in rows) == sorted({r["seq"] for r in rows})  # no splice
    assert {r["model_digest"] for r in rows} == {MODEL_A.hex()}  # none of the clone's calls
    alone = fleet.export([str(clone)], str(tmp_path / "ds-b"))  # apart, it is a log like any
    assert alone.exit_code == 0 and alone.logs[0].rows == 6 + 22 + 2


def test_records_evicted_between_exports_are_a_gap_finding(tmp_path: Path) -> None:
    log = make_log(tmp_path / "a.vigil", 10)
    ds = tmp_path / "ds"
    fleet.export([str(log)], str(ds))
    with FlightRecorder.open(log, clock=later(1_700_000_100_000_000_000)) as w:
        write_calls(w, 6000, start=10)  # wraps the 512 KiB ring
    assert fleet.export([str(log)], str(ds)).exit_code == 0
    (logrow,) = table(ds, "logs")
    findings = json.loads(str(logrow["findings"]))
    gap = next(f for f in findings if f["kind"] == "EXPORT_GAP")
    assert gap["code"] == "DIA-8005" and gap["seq"] == 13 and gap["last_seq"] >= 14
    assert gap["last_seq"] + 1 == logrow["retained_first"]


def _damage(log: Path, seq: int) -> None:
    with LogReader(log) as r:
        offset = next(rec.offset for rec in r.records() if rec.seq == seq)
    with open(log, "r+b") as f:
        f.seek(offset + 100)  # inside the body
        byte = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_damaged_log_exports_up_to_the_damage_never_silently(tmp_path: Path) -> None:
    log = make_log(tmp_path / "a.vigil", 40)
    _damage(log, 20)
    ds = tmp_path / "ds"
    summary = fleet.export([str(log)], str(ds))
    assert summary.exit_code == 1 and summary.logs[0].verdict == "NOT_INTACT"
    seqs = [r["seq"] for r in table(ds, "inferences")]
    assert seqs == list(range(2, 20))
    (logrow,) = table(ds, "logs")
    assert logrow["damage_seq"] == 20 and logrow["verdict"] == "NOT_INTACT"
    kinds = {f["kind"]: f["code"] for f in json.loads(str(logrow["findings"]))}
    assert kinds["EXPORT_AFTER_DAMAGE"] == "DIA-8006" and "MEDIA_CORRUPTION" in kinds
    # asked for, the rest is exported marked after_damage, and the reports leave it out
    kept = tmp_path / "kept"
    fleet.export([str(log)], str(kept), keep_damaged=True)
    rows = table(kept, "inferences")
    assert {r["status"] for r in rows if r["seq"] > 20} == {"after_damage"}
    assert {r["status"] for r in rows if r["seq"] < 20} == {"chain_valid"}
    counted = fleet.run_sql(kept, "SELECT count(*), max(seq) FROM inferences")["rows"]
    assert counted == [[18, 19]]


def test_findings_past_the_limit_are_said_dropped_and_damage_is_the_first(tmp_path: Path) -> None:
    log = make_log(tmp_path / "a.vigil", 40)
    _damage(log, 30)
    _damage(log, 12)
    vlog = open_verified(str(log), max_findings=1)
    assert vlog.report.findings_dropped >= 1
    kinds = [f["kind"] for f in vlog.findings]
    assert "FINDINGS_DROPPED" in kinds and kinds[-1] == "EXPORT_AFTER_DAMAGE"
    assert vlog.damage_seq == 12
    assert vlog.findings[-1]["seq"] == 12
    assert vlog.authenticated == [] and vlog.tail_from is None  # unsigned: no seals expected


# --- 2. DuckDB reports ----------------------------------------------------------------------


@pytest.fixture
def fleet_ds(tmp_path: Path) -> Path:
    """Two devices: d1 moves from model A to B and falls back more often on B; d2 stops."""
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    make_log(d1 / "flight.vigil", 20, model=MODEL_A, fallback_every=10)
    with FlightRecorder.open(d1 / "flight.vigil", clock=later(1_700_086_400 * 10**9)) as w:
        write_calls(w, 20, model=MODEL_B, fallback_every=4, start=20)
    clock = FakeClock(step_ns=MS)
    with FlightRecorder.create(d2 / "flight.vigil", RING, clock=clock) as w:
        write_calls(w, 10)
        w.record_inference(
            request_id=bytes(16),
            model_digest=MODEL_A,
            input_digest=bytes(32),
            output_digest=bytes(32),
            state=State.NORMAL,
            served_by=ServedBy.CONSTANT,
            outcome=Outcome.WORKER_LOST,
            code=4005,
            latency_ns=5 * MS,
            deadline_ns=50 * MS,
        )
        w.record_transition(State.NORMAL, State.SAFE_STOP, code=4109, reason="worker lost")
        clock.advance(2_000 * MS)
        w.record_transition(State.SAFE_STOP, State.NORMAL, code=4110, reason="operator")
    ds = tmp_path / "ds"
    logs = [str(d1 / "flight.vigil"), str(d2 / "flight.vigil")]
    assert fleet.export(logs, str(ds), device_from="dir").exit_code == 0
    return ds


def test_report_answers_the_fleet_questions(fleet_ds: Path) -> None:
    r = fleet.report(fleet_ds)

    def rows(name: str) -> list[dict[str, object]]:
        return [dict(zip(r[name]["columns"], row, strict=True)) for row in r[name]["rows"]]

    fallback = {(x["device"], x["model"]): x for x in rows("fallback")}
    assert fallback["d1", MODEL_A.hex()[:12]]["fallback_rate"] == pytest.approx(0.1)
    assert fallback["d1", MODEL_B.hex()[:12]]["fallback_rate"] == pytest.approx(0.25)
    assert str(fallback["d1", MODEL_B.hex()[:12]]["day"]) == "2023-11-15"
    (stop,) = rows("safe_stop")
    assert stop["device"] == "d2" and stop["code"] == "DIA-4109"
    assert stop["preceding_faults"] == "WORKER_LOST DIA-4005"
    states = {(x["device"], x["state"]): x["seconds"] for x in rows("states")}
    assert states["d2", "SAFE_STOP"] == pytest.approx(2.0, abs=0.01)
    lat = {x["device"]: x for x in rows("latency")}
    assert lat["d2"]["p50_ms"] == pytest.approx(5.5) and lat["d2"]["calls"] == 10
    models = [(x["device"], x["model_digest"]) for x in rows("models")]
    assert models == [("d1", MODEL_A.hex()), ("d1", MODEL_B.hex()), ("d2", MODEL_A.hex())]
    trans = {(x["device"], x["to_state"], x["code"]): x["n"] for x in rows("transitions")}
    assert trans == {("d2", "SAFE_STOP", "DIA-4109"): 1, ("d2", "NORMAL", "DIA-4110"): 1}
    assert [x["verdict"] for x in rows("logs")] == ["INTACT", "INTACT"]


# The reports as first written: one plain query each, straight over the views. The built-in
# reports share passes (a per-connection summary of the calls, the transitions read once) to
# be fast at scale; they must answer exactly what these answer.
ORACLES = {
    "states": """
        WITH bounds AS (
            SELECT log_id, arg_max(device, real_ns) AS device, min(real_ns) AS t0,
                   max(real_ns) AS t1
            FROM (SELECT log_id, device, real_ns FROM inferences
                  UNION ALL SELECT log_id, device, real_ns FROM transitions)
            GROUP BY log_id),
        first_transition AS (
            SELECT log_id, arg_min(from_state, seq) AS state, min(real_ns) AS t
            FROM transitions GROUP BY log_id),
        first_call AS (SELECT log_id, arg_min(state, seq) AS state FROM inferences GROUP BY log_id),
        steps AS (
            SELECT t.log_id, t.to_state AS state, t.real_ns AS t_start,
                   coalesce(lead(t.real_ns) OVER (PARTITION BY t.log_id ORDER BY t.seq), b.t1)
                       AS t_end
            FROM transitions t JOIN bounds b USING (log_id)
            UNION ALL
            SELECT b.log_id, coalesce(f.state, c.state), b.t0, coalesce(f.t, b.t1)
            FROM bounds b LEFT JOIN first_transition f USING (log_id)
                          LEFT JOIN first_call c USING (log_id))
        SELECT b.device, s.state, round(sum(s.t_end - s.t_start) / 1e9, 3) AS seconds,
               count(*) AS stretches
        FROM steps s JOIN bounds b USING (log_id)
        WHERE s.state IS NOT NULL
        GROUP BY ALL ORDER BY b.device, s.state""",
    "transitions": """
        SELECT device, from_state, to_state,
               CASE WHEN code = 0 THEN NULL ELSE printf('DIA-%04d', code) END AS code,
               reason, count(*) AS n, min(time) AS first, max(time) AS last
        FROM transitions GROUP BY ALL""",
    "fallback": """
        SELECT device, left(model_digest, 12) AS model, CAST(time AS DATE) AS day,
               count(*) AS calls, count(*) FILTER (served_by <> 'PRIMARY') AS not_primary,
               round(count(*) FILTER (served_by <> 'PRIMARY') / count(*), 4) AS fallback_rate
        FROM inferences WHERE NOT known_answer GROUP BY ALL""",
    "safe_stop": """
        SELECT t.device, t.log_id, t.seq, t.time, t.from_state, t.reason,
               CASE WHEN t.code = 0 THEN NULL ELSE printf('DIA-%04d', t.code) END AS code,
               (SELECT string_agg(f.outcome || coalesce(' DIA-' || lpad(CAST(f.code AS
                       VARCHAR), 4, '0'), ''), ', ' ORDER BY f.seq)
                FROM (SELECT i.outcome, nullif(i.code, 0) AS code, i.seq FROM inferences i
                      WHERE i.log_id = t.log_id AND i.seq < t.seq AND i.outcome <> 'OK'
                        AND i.time >= t.time - INTERVAL 60 SECOND
                      ORDER BY i.seq DESC LIMIT 20) f) AS preceding_faults
        FROM transitions t WHERE t.to_state = 'SAFE_STOP'""",
    "models": """
        SELECT device, model_digest, min(time) AS first_seen, max(time) AS last_seen,
               count(*) AS calls,
               round(count(*) FILTER (WHERE served_by <> 'PRIMARY') / count(*), 4)
                   AS fallback_rate
        FROM inferences WHERE model_digest <> repeat('0', 64) GROUP BY ALL""",
}


def test_the_shared_passes_answer_what_the_plain_queries_answer(fleet_ds: Path) -> None:
    con = fleet.connect(fleet_ds)
    con.execute("SET TimeZone = 'UTC'")  # the oracle's days are the session's, the report's UTC
    for name, oracle in ORACLES.items():
        got = fleet.run_sql(fleet_ds, fleet.REPORTS[name][1], con)
        want = fleet.run_sql(fleet_ds, oracle, con)
        assert got["columns"] == want["columns"], name
        assert sorted(map(repr, got["rows"])) == sorted(map(repr, want["rows"])), name
        assert got["rows"], name  # the fixture gives every report something to say
    # the summary is built once per connection and says what the calls say
    (n,) = fleet.run_sql(fleet_ds, "SELECT sum(calls) FROM call_groups", con)["rows"][0]
    assert n == fleet.run_sql(fleet_ds, "SELECT count(*) FROM inferences", con)["rows"][0][0]


def test_report_cli_sql_json_and_errors(fleet_ds: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT device, count(*) AS n FROM inferences GROUP BY device ORDER BY device"
    assert main(["fleet", "report", str(fleet_ds), "--sql", sql, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sql"]["rows"] == [{"device": "d1", "n": 40}, {"device": "d2", "n": 11}]
    png = fleet_ds.parent / "fallback.png"
    assert main(["fleet", "report", str(fleet_ds), "--report", "safe_stop", "--png", str(png)]) == 0
    assert "worker lost" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["fleet", "report", str(fleet_ds), "--sql", "SELECT nope FROM inferences"]) == 2
    assert "DIA-8007" in capsys.readouterr().err
    # an empty query ran every report; --png DIR wrote DIR.png; an unwritable picture was
    # the export's DIA-8004 (outside audit)
    assert main(["fleet", "report", str(fleet_ds), "--sql", ""]) == 2
    assert "the query is empty" in capsys.readouterr().err
    assert main(["fleet", "report", str(fleet_ds), "--png", str(fleet_ds.parent)]) == 2
    assert "ending in .png" in capsys.readouterr().err
    assert not fleet_ds.parent.with_suffix(".png").exists()
    nowhere = str(fleet_ds.parent / "no" / "such" / "dir.png")
    assert main(["fleet", "report", str(fleet_ds), "--report", "fallback", "--png", nowhere]) == 2
    assert "DIA-8009" in capsys.readouterr().err
    assert main(["fleet", "report", str(fleet_ds.parent)]) == 2
    assert "DIA-8008" in capsys.readouterr().err
    # a dataset whose files lack a column of the schema: a coded error, not a traceback
    for part in (fleet_ds / "inferences").glob("**/*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["real_ns"]), part)
    assert main(["fleet", "report", str(fleet_ds), "--sql", "SELECT count(*) FROM logs"]) == 2
    assert "DIA-8007" in capsys.readouterr().err


# --- 5. bad input: one error per log, with a code; the others exported ----------------------


def test_bad_inputs_fail_one_by_one_and_the_rest_is_exported(tmp_path: Path) -> None:
    good = make_log(tmp_path / "good.vigil", 5)
    key, other = _keys.generate(), _keys.generate()
    sealed = make_log(tmp_path / "sealed.vigil", 5, sealer=Sealer(key, every_records=10))
    other.public.save(tmp_path / "other.pub")
    junk = tmp_path / "junk.vigil"
    junk.write_bytes(os.urandom(8192))
    fifo = tmp_path / "fifo.vigil"
    os.mkfifo(fifo)
    missing = tmp_path / "missing.vigil"
    cmd = [sys.executable, "-m", "vigil", "export", str(good), str(junk), str(fifo)]
    cmd += [str(missing), str(sealed), "--to", str(tmp_path / "ds"), "--pubkey"]
    cmd += [str(tmp_path / "other.pub"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 3, done.stderr
    out = json.loads(done.stdout)
    codes = {Path(o["path"]).name: o["error_code"] for o in out["logs"]}
    assert codes == {
        "good.vigil": None,
        "junk.vigil": "DIA-3003",
        "fifo.vigil": "DIA-8002",
        "missing.vigil": "DIA-3001",
        "sealed.vigil": "DIA-8003",
    }
    assert "Traceback" not in done.stderr
    assert done.stderr.count("vigil: export: DIA-") == 4
    assert [r["seq"] for r in table(tmp_path / "ds", "inferences")] == list(range(2, 7))


def test_destination_that_cannot_be_used_stops_the_run(tmp_path: Path, capsys) -> None:
    good = make_log(tmp_path / "good.vigil", 5)
    (tmp_path / "file").write_text("x")
    assert main(["export", str(good), "--to", str(tmp_path / "file" / "ds")]) == 2
    assert "DIA-8004" in capsys.readouterr().err
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "_vigil_export.json").write_text('{"schema_version": 99, "logs": {}}')
    assert main(["export", str(good), "--to", str(ds)]) == 2
    assert "schema 99" in capsys.readouterr().err


def test_import_vigil_fleet_stays_cheap() -> None:
    code = (
        "import sys, vigil.fleet; print(','.join(sorted(m for m in sys.modules if m in "
        "{'pyarrow','duckdb','mcap','asammdf','pyspark','pandas','torch'})))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == ""


def test_any_corrupted_byte_gives_an_outcome_never_a_traceback(tmp_path: Path) -> None:
    """Single-byte corruption anywhere in the records (seeded): every run ends with a summary;
    what is exported is verified (nothing at or after the damage it reports)."""
    import random

    good = make_log(tmp_path / "good.vigil", 60, fallback_every=4)
    image = good.read_bytes()
    with LogReader(good) as r:
        last = max(rec.offset for rec in r.records()) + 256
    rng = random.Random(17)
    for i in range(25):
        bad = bytearray(image)
        at = rng.randrange(0, last)
        bad[at] ^= 1 << rng.randrange(8)
        path = tmp_path / f"bad{i}.vigil"
        path.write_bytes(bad)
        dest = tmp_path / f"ds{i}"
        summary = fleet.export([str(path)], str(dest))
        (out,) = summary.logs
        assert summary.exit_code in (0, 1, 3), (at, out)
        if out.failed:
            assert out.error_code and out.error_code.startswith("DIA-"), (at, out)
            continue
        (logrow,) = table(dest, "logs")
        damage = logrow["damage_seq"]
        rows = table(dest, "inferences")
        assert all(r["status"] == "chain_valid" for r in rows), at
        if damage is not None:
            assert all(int(r["seq"]) < int(damage) for r in rows), at  # type: ignore[call-overload]


def test_device_is_the_recorded_host_even_when_the_session_is_long(tmp_path: Path) -> None:
    log = make_log(tmp_path / "long.vigil", 1200)  # the OPENED record is 4 segments back
    with LogReader(log) as r:
        segments = {rec.segment for rec in r.records()}
    assert len(segments) > 3
    (out,) = fleet.export([str(log)], str(tmp_path / "ds")).logs
    assert out.device == os.uname().nodename
    (by_dir,) = fleet.export([str(log)], str(tmp_path / "ds2"), device_from="dir").logs
    assert by_dir.device == tmp_path.name
