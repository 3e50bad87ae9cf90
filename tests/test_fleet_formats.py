"""vigil.fleet's one-file-per-log formats, read back with their own readers: MCAP (the mcap
package, as Foxglove reads it) against ``vigil dump``, and ASAM MDF4 (asammdf)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from vigil import fleet
from vigil.auditlog import FlightRecorder, LogReader, RingConfig
from vigil.cli import main
from vigil.schemas import Outcome, ServedBy, State

from conftest import FakeClock

RING = RingConfig(size=4096 + 8 * (64 << 10), segment_size=64 << 10)
MS = 1_000_000


def make_log(path: Path, n: int = 30) -> Path:
    """``n`` calls, every third a TIMEOUT served by the fallback, and two transitions."""
    with FlightRecorder.create(path, RING, clock=FakeClock(step_ns=MS)) as w:
        for i in range(n):
            fb = i % 3 == 2
            w.record_inference(
                request_id=i.to_bytes(16, "big"),
                model_digest=hashlib.sha256(b"m").digest(),
                input_digest=bytes(32),
                output_digest=bytes(32),
                state=State.DEGRADED if i >= n // 2 else State.NORMAL,
                served_by=ServedBy.FALLBACK if fb else ServedBy.PRIMARY,
                outcome=Outcome.TIMEOUT if fb else Outcome.OK,
                code=4002 if fb else 0,
                latency_ns=(i + 1) * MS // 2,
                deadline_ns=50 * MS,
            )
            if i == n // 2 - 1:
                w.record_transition(State.NORMAL, State.DEGRADED, code=4101, cause_seq=i + 2)
        w.record_transition(State.DEGRADED, State.SAFE_STOP, code=4109, reason="stop")
    return path


def dump(path: Path) -> list[dict[str, object]]:
    with LogReader(path) as r:
        return [json.loads(json.dumps(rec.to_json(), sort_keys=True)) for rec in r.records()]


def test_mcap_holds_what_dump_shows_on_the_logs_timeline(tmp_path: Path) -> None:
    reader_mod = pytest.importorskip("mcap.reader")
    log = make_log(tmp_path / "a.vigil")
    assert main(["export", str(log), "--to", str(tmp_path / "out"), "--format", "mcap"]) == 0
    (path,) = (tmp_path / "out").glob("*.mcap")
    with open(path, "rb") as f:
        reader = reader_mod.make_reader(f)
        messages = [(s, c, m) for s, c, m in reader.iter_messages(log_time_order=False)]
        meta = {r.name: r.metadata for r in reader.iter_metadata()}
    expected = dump(log)
    assert len(messages) == len(expected)
    topics: set[str] = set()
    for (schema, channel, message), rec in zip(messages, expected, strict=True):
        body = json.loads(message.data)
        assert body.pop("status") == "chain_valid"
        plot = body.pop("plot", None)
        assert body == rec  # exactly dump's record
        assert message.log_time == message.publish_time == rec["real_ns"]
        assert message.sequence == rec["seq"]
        assert channel.topic == f"/vigil/{str(rec['type']).lower()}"
        assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
        props = json.loads(schema.data)["properties"]
        assert set(props) >= set(rec)
        topics.add(channel.topic)
        if rec["type"] == "INFERENCE":
            assert plot == {
                "state": State[str(rec["state"])].value,
                "served_by": ServedBy[str(rec["served_by"])].value,
                "outcome": Outcome[str(rec["outcome"])].value,
                "latency_ms": int(rec["latency_ns"]) / 1e6,  # type: ignore[call-overload]
            }
            assert props["plot"]["type"] == "object"
    assert topics == {"/vigil/inference", "/vigil/transition", "/vigil/lifecycle"}
    summary = meta["vigil.log"]
    assert summary["verdict"] == "INTACT" and summary["log_id"] == path.stem
    assert summary["retained"] == f"1..{expected[-1]['seq']}"


def test_mdf4_channels_carry_latency_state_served_by_and_outcome(tmp_path: Path) -> None:
    asammdf = pytest.importorskip("asammdf")
    np = pytest.importorskip("numpy")
    log = make_log(tmp_path / "a.vigil")
    summary = fleet.export([str(log)], str(tmp_path / "out"), format="mdf")
    assert summary.exit_code == 0
    (path,) = (tmp_path / "out").glob("*.mf4")
    calls = [r for r in dump(log) if r["type"] == "INFERENCE"]
    t0 = int(calls[0]["real_ns"])  # type: ignore[call-overload]
    mdf = asammdf.MDF(path)
    try:
        latency = mdf.get("latency")
        assert latency.unit == "ms"
        assert np.allclose(latency.samples, [int(r["latency_ns"]) / 1e6 for r in calls])  # type: ignore[call-overload]
        times = [(int(r["real_ns"]) - t0) / 1e9 for r in calls]  # type: ignore[call-overload]
        assert np.allclose(latency.timestamps, times)
        for channel in ("state", "served_by", "outcome"):
            named = [s.decode() for s in mdf.get(channel).samples]
            assert named == [r[channel] for r in calls], channel
        raw = mdf.get("served_by", raw=True).samples
        assert list(raw) == [ServedBy[str(r["served_by"])].value for r in calls]
        assert list(mdf.get("code").samples) == [r["code"] for r in calls]
        assert {s.decode() for s in mdf.get("status").samples} == {"chain_valid"}
        to_state = [s.decode() for s in mdf.get("to_state").samples]
        assert to_state == ["DEGRADED", "SAFE_STOP"]
        assert mdf.header.start_time.timestamp() == pytest.approx(t0 / 1e9, abs=1e-6)
        comment = ElementTree.fromstring(mdf.header.comment).findtext("TX")  # MDF4's XML
        assert json.loads(str(comment))["verdict"] == "INTACT"
    finally:
        mdf.close()


def test_missing_extra_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    log = make_log(tmp_path / "a.vigil", 3)
    monkeypatch.setitem(sys.modules, "mcap.writer", None)  # as if not installed
    assert main(["export", str(log), "--to", str(tmp_path / "out"), "--format", "mcap"]) == 2
    err = capsys.readouterr().err
    assert "DIA-8001" in err and "vigil[mcap]" in err
