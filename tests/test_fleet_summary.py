"""The export's summaries (vigil.fleet._summary): the reports over them answer what the raw
tables answer, and an incremental export keeps them what a rebuild from every part file gives.

The fleet here has several logs and days, a damaged log exported with its rows after the
damage, a sealed log whose unsealed tail is re-exported, and a second, incremental export.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_fleet import MODEL_A, MODEL_B, MS, ORACLES, RING, ROOT, _damage, later, write_calls

from vigil import keys as _keys
from vigil.auditlog import FlightRecorder, Sealer
from vigil.cli import main
from vigil.errors import ExportDestinationError, ExtraMissing
from vigil.schemas import Outcome, ServedBy, State

from conftest import FakeClock

pytest.importorskip("pyarrow")
pytest.importorskip("duckdb")

from vigil import fleet
from vigil.fleet import _summary
from vigil.fleet._report import summarized

DAY = 86_400 * 10**9


def _stop(w: FlightRecorder, clock: FakeClock, code: int) -> None:
    """A fault, a SAFE_STOP after it, and a recovery 2 s later."""
    w.record_inference(
        request_id=bytes(16),
        model_digest=MODEL_A,
        input_digest=bytes(32),
        output_digest=bytes(32),
        state=State.NORMAL,
        served_by=ServedBy.CONSTANT,
        outcome=Outcome.WORKER_LOST,
        code=4005,
        latency_ns=7 * MS,
        deadline_ns=50 * MS,
    )
    w.record_transition(State.NORMAL, State.SAFE_STOP, code=code, reason="worker lost")
    clock.advance(2_000 * MS)
    w.record_transition(State.SAFE_STOP, State.NORMAL, code=4110, reason="operator")


def _fleet(tmp_path: Path) -> tuple[list[str], fleet.Keys, Path]:
    """Four devices: d1 over two days and two models, d2 stops, d3 is damaged after a stop,
    d4 is sealed and crashed (an unsealed tail)."""
    logs = []
    for name in ("d1", "d2", "d3", "d4"):
        (tmp_path / name).mkdir()
        logs.append(str(tmp_path / name / "flight.vigil"))
    with FlightRecorder.create(logs[0], RING, clock=FakeClock(step_ns=MS)) as w:
        write_calls(w, 30, model=MODEL_A, fallback_every=7)
    with FlightRecorder.open(logs[0], clock=later(1_700_000_000 * 10**9 + DAY)) as w:
        write_calls(w, 30, model=MODEL_B, fallback_every=3, start=30)
    clock = FakeClock(step_ns=MS)
    with FlightRecorder.create(logs[1], RING, clock=clock) as w:
        write_calls(w, 15)
        _stop(w, clock, 4109)
        write_calls(w, 5, start=15)
    clock = FakeClock(step_ns=MS)
    with FlightRecorder.create(logs[2], RING, clock=clock) as w:
        write_calls(w, 20, fallback_every=5)
        _stop(w, clock, 4109)
        write_calls(w, 30, start=20, fallback_every=2)
        _stop(w, clock, 4111)  # after the damage below: never counted
    _damage(Path(logs[2]), 30)
    key = _keys.generate()
    w = FlightRecorder.create(
        logs[3], RING, sealer=Sealer(key, every_records=10, every_ms=0), clock=FakeClock(step_ns=MS)
    )
    write_calls(w, 25, model=MODEL_B, fallback_every=4)
    w._drop()  # a crash: the newest records are under no checkpoint yet
    return logs, fleet.Keys(public_keys=(key.public,)), tmp_path / "ds"


def _rows(dest: Path, sql: str, *, summaries: bool) -> list[str]:
    con = fleet.connect(dest, summaries=summaries)
    con.execute("SET TimeZone = 'UTC'")
    got = fleet.run_sql(dest, sql, con)
    return [repr(got["columns"]), *sorted(map(repr, got["rows"]))]


def _assert_reports_equal_raw(dest: Path, *, every: bool = True) -> None:
    assert summarized(dest)
    for name, (_, sql) in fleet.REPORTS.items():
        got = _rows(dest, sql, summaries=True)
        assert got == _rows(dest, sql, summaries=False), name
        assert len(got) > 1 or not every, name  # the fleet gives every report something
        if name in ORACLES:
            assert got == _rows(dest, ORACLES[name], summaries=False), name
    # fleet.report (what the CLI runs) reads the summaries and says the same
    for name, r in fleet.report(dest).items():
        want = fleet.run_sql(dest, fleet.REPORTS[name][1], fleet.connect(dest, summaries=False))
        assert sorted(map(repr, r["rows"])) == sorted(map(repr, want["rows"])), name


def _summary_rows(dest: Path) -> dict[str, list[str]]:
    """Every summary's rows, each with the name of its file (relative to ``_summary/``)."""
    con = fleet.connect(dest)
    out: dict[str, list[str]] = {}
    for name in _summary.FILES:
        out[name] = []
        for path in _summary.summary_files(dest, name):
            rel = str(path.relative_to(dest / _summary.SUMMARY_DIR))
            rows = con.execute("SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
            out[name].extend(repr((rel, *r)) for r in rows)
        out[name].sort()
    return out


def _rebuilt(dest: Path, tmp: Path) -> dict[str, list[str]]:
    """The summaries a rebuild from every part file gives (on a copy of the dataset)."""
    copy = tmp / "rebuilt"
    shutil.copytree(dest, copy)
    shutil.rmtree(copy / _summary.SUMMARY_DIR)
    _summary.update(copy, None, 1)
    return _summary_rows(copy)


def test_summaries_answer_what_the_raw_rows_answer_across_incremental_exports(
    tmp_path: Path,
) -> None:
    logs, keys, ds = _fleet(tmp_path)
    first = fleet.export(logs, str(ds), keys=keys, keep_damaged=True, device_from="dir")
    assert first.exit_code == 1  # d3 is damaged, exported up to it and marked after it
    _assert_reports_equal_raw(ds)
    # rows after the damage are in the files but in no summary
    con = fleet.connect(ds)
    (damaged,) = con.execute(
        "SELECT count(*) FROM inferences_all WHERE status = 'after_damage'"
    ).fetchone()
    assert damaged > 0
    calls = fleet.run_sql(ds, "SELECT sum(calls) FROM call_groups", con)["rows"][0][0]
    assert calls == con.execute("SELECT count(*) FROM inferences").fetchone()[0]
    stops = fleet.run_sql(ds, fleet.REPORTS["safe_stop"][1], con)["rows"]
    assert [s[0] for s in stops] == ["d2", "d3"]  # d3's second stop is after the damage
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path / "r1")

    # exporting again with nothing new changes no summary row
    before = _summary_rows(ds)
    again = fleet.export(logs, str(ds), keys=keys, keep_damaged=True, device_from="dir")
    assert sum(o.rows for o in again.logs if o.device != "d4") == 0
    assert _summary_rows(ds) == before and summarized(ds)

    # an incremental export: d1 grows by a day, d4's tail is sealed and it grows
    with FlightRecorder.open(logs[0], clock=later(1_700_000_000 * 10**9 + 2 * DAY)) as w:
        write_calls(w, 12, model=MODEL_B, fallback_every=2, start=60)
    third = fleet.export(logs, str(ds), keys=keys, keep_damaged=True, device_from="dir")
    by_device = {o.device: o.rows for o in third.logs}
    assert by_device["d1"] == 14  # OPENED, 12 calls, CLOSED: only the new records
    _assert_reports_equal_raw(ds)
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path / "r2")
    assert _summary_rows(ds) != before
    days = fleet.run_sql(ds, "SELECT count(DISTINCT utc_day) FROM call_groups")["rows"]
    assert days == [[3]]


def test_a_sealed_tail_reexported_replaces_its_summary_rows(tmp_path: Path) -> None:
    key = _keys.generate()
    log = tmp_path / "sealed.vigil"
    w = FlightRecorder.create(
        log, RING, sealer=Sealer(key, every_records=10, every_ms=0), clock=FakeClock(step_ns=MS)
    )
    write_calls(w, 25, fallback_every=3)
    w._drop()
    keys = fleet.Keys(public_keys=(key.public,))
    ds = tmp_path / "ds"
    fleet.export([str(log)], str(ds), keys=keys)
    statuses = fleet.run_sql(ds, "SELECT DISTINCT status FROM inferences")["rows"]
    assert ["unsealed_tail"] in statuses
    with FlightRecorder.open(log, sealer=Sealer(key, every_records=10, every_ms=0)) as w:
        write_calls(w, 9, start=25, model=MODEL_B)
    fleet.export([str(log)], str(ds), keys=keys)
    _assert_reports_equal_raw(ds, every=False)  # no transitions, no stop
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path)
    (n,) = fleet.run_sql(ds, "SELECT sum(calls) FROM call_groups")["rows"][0]
    assert n == 34  # the tail's calls once, not twice


def test_an_interrupted_export_leaves_the_reports_on_the_raw_rows_until_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs, keys, ds = _fleet(tmp_path)
    fleet.export(logs, str(ds), keys=keys, device_from="dir")
    with FlightRecorder.open(logs[0], clock=later(1_700_000_000 * 10**9 + 2 * DAY)) as w:
        write_calls(w, 12, model=MODEL_B, fallback_every=2, start=60)

    def fail(*args: object) -> None:
        raise ExportDestinationError("disk full", path=str(ds))

    monkeypatch.setattr("vigil.fleet._parquet.update", fail)
    with pytest.raises(ExportDestinationError):
        fleet.export(logs, str(ds), keys=keys, device_from="dir")
    # the new part files are there, the summaries are not: the reports read the raw rows
    assert not summarized(ds)
    (n,) = fleet.run_sql(ds, "SELECT sum(calls) FROM call_groups")["rows"][0]
    assert n == fleet.run_sql(ds, "SELECT count(*) FROM inferences")["rows"][0][0]
    assert (
        fleet.report(ds, ["fallback"])["fallback"]["rows"]
        == fleet.run_sql(ds, fleet.REPORTS["fallback"][1], fleet.connect(ds, summaries=False))[
            "rows"
        ]
    )
    monkeypatch.undo()
    fleet.export(logs, str(ds), keys=keys, device_from="dir")  # rebuilds every summary
    _assert_reports_equal_raw(ds)
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path / "r")


def test_an_export_without_duckdb_writes_its_parts_and_leaves_the_summaries_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow alone exports (the summaries need duckdb): the run succeeds with every part
    file, the summaries are marked stale, and the next export with duckdb rebuilds them."""
    logs, keys, ds = _fleet(tmp_path)
    fleet.export(logs, str(ds), keys=keys, device_from="dir")
    with FlightRecorder.open(logs[0], clock=later(1_700_000_000 * 10**9 + 2 * DAY)) as w:
        write_calls(w, 12, model=MODEL_B, fallback_every=2, start=60)

    def no_duckdb(module: str) -> object:
        raise ExtraMissing("duckdb is not installed", package="duckdb", extra="fleet")

    monkeypatch.setattr("vigil.fleet._summary.need", no_duckdb)
    fleet.export(logs, str(ds), keys=keys, device_from="dir")  # no error
    monkeypatch.undo()
    assert not summarized(ds)
    (n,) = fleet.run_sql(ds, "SELECT count(*) FROM inferences")["rows"][0]
    assert n == fleet.run_sql(ds, "SELECT sum(calls) FROM call_groups")["rows"][0][0]
    fleet.export(logs, str(ds), keys=keys, device_from="dir")  # with duckdb: rebuilt
    _assert_reports_equal_raw(ds)
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path / "r")


def test_schema_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs, keys, ds = _fleet(tmp_path)
    fleet.export(logs, str(ds), keys=keys, device_from="dir")
    want = fleet.report(ds)
    state_file = ds / "_vigil_export.json"
    state = json.loads(state_file.read_text())
    # a schema 1 dataset (no summaries, the same record tables) is still read, from its rows
    state["schema_version"] = 1
    state_file.write_text(json.dumps(state))
    assert not summarized(ds)
    got = fleet.report(ds)
    assert {k: sorted(map(repr, v["rows"])) for k, v in got.items()} == {
        k: sorted(map(repr, v["rows"])) for k, v in want.items()
    }
    # ... but not exported into: that is a new directory
    with pytest.raises(ExportDestinationError) as exc:
        fleet.export(logs, str(ds), keys=keys, device_from="dir")
    assert exc.value.code == "DIA-8004"
    # a schema this vigil does not know: a coded error that says to export again
    state["schema_version"] = 99
    state_file.write_text(json.dumps(state))
    assert main(["fleet", "report", str(ds)]) == 2
    err = capsys.readouterr().err
    assert "DIA-8010" in err and "export the logs again" in err


_KILLED_EXPORT = """
import sys
import vigil.fleet._parquet as P
import vigil.fleet._summary as S
from vigil import fleet

def stop(*args):
    print("parts written", flush=True)
    sys.stdin.read()  # blocks until the parent kills us

if sys.argv[1] == "before":
    P.update = stop
else:  # after the latency files were rewritten, before the digest and _covers.json
    S._update_digest = stop
fleet.export(sys.argv[2:-1], sys.argv[-1], device_from="dir")
"""


@pytest.mark.parametrize("where", ["before", "within"])
def test_an_export_killed_before_its_summaries_leaves_the_reports_right(
    tmp_path: Path, where: str
) -> None:
    """SIGKILLed before the summaries, or within them (some latency files rewritten)."""
    logs, _, ds = _fleet(tmp_path)
    del logs[3]  # the sealed log needs its key; the others are unsigned
    fleet.export(logs, str(ds), device_from="dir")
    (before,) = fleet.run_sql(ds, "SELECT count(*) FROM inferences")["rows"][0]
    with FlightRecorder.open(logs[0], clock=later(1_700_000_000 * 10**9 + 2 * DAY)) as w:
        write_calls(w, 12, model=MODEL_B, fallback_every=2, start=60)
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, where, *logs, str(ds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"parts written\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the new calls are in the part files, not in the summaries: the reports read the rows
    assert not summarized(ds)
    (n,) = fleet.run_sql(ds, "SELECT sum(calls) FROM call_groups")["rows"][0]
    assert n == fleet.run_sql(ds, "SELECT count(*) FROM inferences")["rows"][0][0] == before + 12
    fleet.export(logs, str(ds), device_from="dir")
    _assert_reports_equal_raw(ds)
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path / "r")


def _files_under(dest: Path) -> dict[str, tuple[int, int]]:
    """Every summary file (relative name) with its inode and mtime: a rewrite changes them."""
    root = dest / _summary.SUMMARY_DIR
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in root.rglob("*.parquet")
    }


def test_an_incremental_export_rewrites_only_the_summaries_of_the_logs_it_changed(
    tmp_path: Path,
) -> None:
    logs, _, ds = _fleet(tmp_path)
    del logs[3]  # unsigned logs only: the sealed one re-exports its unsealed tail each time
    fleet.export(logs, str(ds), device_from="dir")
    ids = {o.device: o.log_id for o in fleet.export(logs, str(ds), device_from="dir").logs}
    before = _files_under(ds)
    d2 = f"log={ids['d2']}.parquet"
    mine = {k for k in before if k.endswith(d2)}
    # the latencies: one file per device bucket and log (d2's in its device's bucket)
    assert len(mine) == 1 and len([k for k in before if k.startswith("latency/")]) == 3
    small = {f"{n}.parquet" for n in ("calls", "faults", "transitions", "latency_digest")}
    assert small < set(before)
    # exporting again with nothing new rewrites no summary file at all
    fleet.export(logs, str(ds), device_from="dir")
    assert _files_under(ds) == before and summarized(ds)

    with FlightRecorder.open(logs[1], clock=later(1_700_000_000 * 10**9 + 2 * DAY)) as w:
        write_calls(w, 12, model=MODEL_B, fallback_every=2, start=20)
    digest_before = _summary_rows(ds)["latency_digest"]
    fleet.export(logs, str(ds), device_from="dir")  # every log given, only d2 has new records
    after = _files_under(ds)
    assert set(after) == set(before)
    changed = {k for k in after if after[k] != before[k]}
    # d2's latencies and the small summaries (rewritten whole: at 10 M rows, 5-100 ms);
    # no other log's latencies
    assert changed == mine | small
    # the other devices' digest rows are kept as they were, d2's recomputed
    digest_after = _summary_rows(ds)["latency_digest"]
    assert {r for r in digest_after if "'d2'" not in r} == {
        r for r in digest_before if "'d2'" not in r
    }
    assert {r for r in digest_after if "'d2'" in r} != {r for r in digest_before if "'d2'" in r}
    _assert_reports_equal_raw(ds, every=False)
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path / "r")


def test_a_log_whose_device_name_changes_moves_between_latency_buckets(tmp_path: Path) -> None:
    """Rows of one log under two device names (``--device-from`` changed between exports):
    each name's bucket holds its rows, and both devices' digests are right."""
    logs, _, ds = _fleet(tmp_path)
    fleet.export(logs[:2], str(ds), device_from="dir")
    with FlightRecorder.open(logs[0], clock=later(1_700_000_000 * 10**9 + 2 * DAY)) as w:
        write_calls(w, 12, model=MODEL_B, fallback_every=2, start=60)
    fleet.export(logs[:2], str(ds))  # the host's name this time
    devices = fleet.run_sql(ds, "SELECT DISTINCT device FROM primary_latency")["rows"]
    assert len(devices) == 3
    assert len(list((ds / "_summary" / "latency").glob("dev=*"))) == 3
    (host,) = {d for (d,) in devices} - {"d1", "d2"}
    # the states report counts d1's log under its newest name, over summaries and raw rows
    # alike (any_value picked a name by scan order: the two disagreed now and then)
    for summaries in (True, False):
        states = _rows(ds, fleet.REPORTS["states"][1], summaries=summaries)[1:]
        assert {eval(row)[0] for row in states} == {host, "d2"}, states
    _assert_reports_equal_raw(ds, every=False)
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path / "r")


def test_summaries_of_another_layout_are_rebuilt_not_merged(tmp_path: Path) -> None:
    """``_covers.json`` without this layout's number (the first schema 2 exports wrote one
    file per summary): the reports read the raw rows and the next export rebuilds."""
    logs, _, ds = _fleet(tmp_path)
    fleet.export(logs[:3], str(ds), device_from="dir")
    covers = ds / "_summary" / "_covers.json"
    old = json.loads(covers.read_text())
    covers.write_text(json.dumps({"generation": old["generation"]}))
    assert not summarized(ds)
    fleet.export(logs[:3], str(ds), device_from="dir")
    _assert_reports_equal_raw(ds, every=False)
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path / "r")


def test_a_fleet_without_a_primary_answer_has_no_latency_files(tmp_path: Path) -> None:
    log = tmp_path / "fallback.vigil"
    with FlightRecorder.create(log, RING, clock=FakeClock(step_ns=MS)) as w:
        write_calls(w, 10, fallback_every=1)  # every call served by the fallback
    ds = tmp_path / "ds"
    fleet.export([str(log)], str(ds))
    assert summarized(ds) and _summary.summary_files(ds, "latency") == []
    assert fleet.report(ds, ["latency"])["latency"]["rows"] == []
    (n,) = fleet.run_sql(ds, "SELECT count(*) FROM primary_latency")["rows"][0]
    assert n == 0
    _assert_reports_equal_raw(ds, every=False)
    assert _summary_rows(ds) == _rebuilt(ds, tmp_path)
