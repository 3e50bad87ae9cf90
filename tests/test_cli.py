"""The `vigil` command: exit codes are an interface (0 intact, 1 integrity failure, 2 usage
or I/O), output formats are stable, bad arguments get a diagnostic code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vigil import keys as _keys
from vigil.auditlog import FlightRecorder, LogReader, RingConfig
from vigil.cli import main
from vigil.model import verify_model_dir
from vigil.schemas import RecordType, State

from conftest import SMALL, FakeClock, infer


@pytest.fixture
def demo_log(tmp_path: Path) -> str:
    """A deterministic log: OPENED, 300 calls, 3 transitions, 1 rejected, 2 notes, CLOSED."""
    path = str(tmp_path / "demo" / "flight.vigil")
    (tmp_path / "demo").mkdir()
    with FlightRecorder.create(
        path, RingConfig(size=4096 + 63 * 16384, segment_size=16384), clock=FakeClock()
    ) as w:
        w.annotate("vigil.demo", "cli test log")
        for i in range(300):
            infer(w, i)
            if i in (100, 120, 140):
                w.record_transition(
                    *[
                        (State.NORMAL, State.DEGRADED),
                        (State.DEGRADED, State.RECOVERING),
                        (State.RECOVERING, State.NORMAL),
                    ][(i - 100) // 20],
                    cause_seq=w.head_seq,
                    reason="test",
                )
        w.record_rejected(request_id=b"r" * 16, input_digest=bytes(32), code=2047, reason="x")
        w.annotate("vigil.demo", "done")
    return path


@pytest.mark.slow
def test_the_demo_runs_every_state_and_its_log_verifies_and_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--calls", "2000", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "verify: INTACT" in text and "replay: AGREES" in text
    assert (out / "timeline.png").stat().st_size > 10_000
    with LogReader(str(out / "flight.vigil")) as r:
        reached = {x.body["to_state"] for x in r.records(types=[RecordType.TRANSITION])}
        rejected = {x.body["code"] for x in r.records(types=[RecordType.REJECTED])}
    assert reached == {State.NORMAL, State.DEGRADED, State.RECOVERING, State.SAFE_STOP}
    assert rejected == {2104, 2102}  # token ids out of range (both ends), float "ids"


def test_a_short_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "short"
    assert main(["demo", "--out", str(out), "--calls", "300", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "verify: INTACT" in text and "replay: AGREES" in text and "300 calls" in text
    assert (out / "flight.vigil").exists() and (out / "timeline.png").exists()
    public = _keys.load_public(str(out / "model-signer.pub"))
    signed = verify_model_dir(out / "model", public).digest
    with LogReader(str(out / "flight.vigil")) as r:
        named = {x.body["model_digest"] for x in r.records(types=[RecordType.INFERENCE])}
    assert named == {signed}  # every call names the signed artifact, nothing else
    assert main(["demo", "--out", str(out), "--calls", "300", "--device", "cpu"]) == 0  # again
    assert verify_model_dir(out / "model", _keys.load_public(str(out / "model-signer.pub")))


def test_demo_then_verify_json(demo_log: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", demo_log, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["intact"] is True and report["first_seq"] == 1
    assert (
        report["records"] == 300 + 3 + 1 + 2 + 2
    )  # calls, transitions, rejected, notes, lifecycle
    assert report["findings"] == []


def test_verify_exit_codes(
    demo_log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", demo_log]) == 0
    assert "INTACT" in capsys.readouterr().out
    bad = tmp_path / "bad.vigil"
    data = bytearray(Path(demo_log).read_bytes())
    data[4096 + 1024 + 300] ^= 0x40  # inside record 2
    bad.write_bytes(data)
    assert main(["verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "NOT INTACT" in out and "DIA-3102 MEDIA_CORRUPTION FAILURE" in out
    assert main(["verify", str(tmp_path / "missing.vigil")]) == 2
    assert "DIA-3001" in capsys.readouterr().err
    (tmp_path / "text.txt").write_text("not a log\n" * 100)
    assert main(["verify", str(tmp_path / "text.txt")]) == 2
    assert "DIA-3003" in capsys.readouterr().err
    data = bytearray(Path(demo_log).read_bytes())
    data[20] ^= 1
    data[512 + 20] ^= 1
    bad.write_bytes(data)
    assert main(["verify", str(bad)]) == 1
    assert "DIA-3006" in capsys.readouterr().err
    Path(bad).write_bytes(Path(demo_log).read_bytes()[: 4096 + 5000])
    assert main(["verify", str(bad), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["counts"]["FILE_SIZE"] == 1


def test_usage_errors_exit_2_with_a_code(demo_log: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["frobnicate"],
        ["dump", demo_log, "--type", "nonsense"],
        ["dump", demo_log, "--since", "last tuesday"],
        ["dump", demo_log, "--format", "xml"],
        ["demo", "--calls", "0"],
        ["verify", demo_log, "--max-findings", "-1"],
    ):
        assert main(argv) == 2, argv
        assert "DIA-1002 USAGE" in capsys.readouterr().err, argv


def test_dump_formats_and_filters(demo_log: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", demo_log, "--type", "transition"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "TIME", "(UTC)"]
    assert [line.split()[2] for line in lines[1:]] == ["TRANSITION"] * 3
    assert "NORMAL -> DEGRADED" in lines[1] and "cause seq 103" in lines[1]
    assert main(["dump", demo_log, "--format", "jsonl", "--since", "10", "--until", "12"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == [10, 11, 12]
    assert len(rows[0]["input_digest"]) == 64 and rows[0]["state"] == "NORMAL"
    assert (
        main(["dump", demo_log, "--type", "rejected", "--type", "lifecycle", "--format", "jsonl"])
        == 0
    )
    types = [json.loads(x)["type"] for x in capsys.readouterr().out.splitlines()]
    assert types == ["LIFECYCLE", "REJECTED", "LIFECYCLE"]


def test_dump_by_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "t.vigil")
    clock = FakeClock(start_ns=1_800_000_000_000_000_000, step_ns=1_000_000_000)  # 1 s a reading
    with FlightRecorder.create(path, SMALL, clock=clock) as w:
        for i in range(10):
            infer(w, i)
    assert main(["dump", path, "--format", "jsonl"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    t5 = rows[5]["real_ns"]
    import datetime as dt

    iso = dt.datetime.fromtimestamp(t5 / 1e9, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")
    assert main(["dump", path, "--format", "jsonl", "--since", iso]) == 0
    got = [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()]
    assert got[0] == rows[5]["seq"] and got[-1] == rows[-1]["seq"]


def test_inspect(demo_log: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", demo_log, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["head"]["last_seq"] == 308 and info["first_seq"] == 1
    assert info["geometry"]["segment_count"] == 63 and not info["live"]
    assert info["segments"]["counts"] == {"empty": 58, "valid": 5}
    assert main(["inspect", demo_log]) == 0
    text = capsys.readouterr().out
    assert "head:" in text and "wear min/mean/max" in text and "frozen:   none" in text


def test_installed_console_script(demo_log: str) -> None:
    # pip puts console scripts beside the interpreter; the venv need not be activated
    exe = str(Path(sys.executable).with_name("vigil"))
    assert Path(exe).is_file(), f"the vigil console script is not installed at {exe}"
    ok = subprocess.run([exe, "verify", demo_log], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "INTACT" in ok.stdout
    head = subprocess.run(
        f"{exe} dump {demo_log} | head -2", shell=True, capture_output=True, text=True, check=False
    )
    assert head.returncode == 0 and len(head.stdout.splitlines()) == 2
    assert "Traceback" not in head.stderr


def test_a_demo_with_a_small_ring_shows_eviction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ring"
    argv = ["demo", "--out", str(out), "--calls", "400", "--device", "cpu"]
    assert main([*argv, "--segments", "4", "--segment-size", "16384"]) == 0
    text = capsys.readouterr().out
    assert "verify: INTACT" in text and "evicted by the ring" in text
    with LogReader(str(out / "flight.vigil")) as r:
        report = r.verify()
        assert r.geometry.segment_count == 4 and r.geometry.segment_size == 16384
    assert report.intact and report.counts.get("EVICTED") == 1 and report.first_seq > 1
    assert main([*argv, "--segments", "1"]) == 2
    assert main([*argv, "--segment-size", "10000"]) == 2
    assert "--segment-size 10000" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["verify", "dump", "inspect"])
def test_an_output_that_cannot_be_written_is_an_io_error_not_a_verdict(
    tmp_path: Path, command: str
) -> None:
    """`vigil verify LOG >/dev/full` on an intact log printed a traceback and exited 1, the
    code of an integrity failure; with stdout closed `dump` crashed and `verify` said nothing
    and exited 0 (outside audit)."""
    log = tmp_path / "log.vigil"
    with FlightRecorder.create(log, SMALL, clock=FakeClock()) as w:
        for i in range(3):
            infer(w, i)
    cmd = [sys.executable, "-m", "vigil", command, str(log)]
    with open("/dev/full", "w") as full:
        out = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, check=False)
    assert out.returncode == 2 and "I/O error" in out.stderr and "Traceback" not in out.stderr
    closed = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            check=False, preexec_fn=lambda: __import__("os").close(1))  # fmt: skip
    assert closed.returncode == 2 and "standard output is closed" in closed.stderr
