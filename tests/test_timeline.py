"""The demo's timeline picture, read from a log written record by record: what it takes from
the log (known-answer probes left out, the state before the first transition, rejected inputs,
transition codes), that a log without calls draws nothing, and that one with calls draws."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.auditlog import FlightRecorder, RingConfig
from vigil.cli import _timeline
from vigil.schemas import CallFlags, Outcome, ServedBy, State

from conftest import FakeClock

pytest.importorskip("matplotlib")

MS = 1_000_000
RING = RingConfig(size=4096 + 8 * 16384, segment_size=16384)


def call(w: FlightRecorder, state: State, served: ServedBy, outcome: Outcome, flags: int) -> None:
    w.record_inference(
        request_id=bytes(16),
        model_digest=bytes(32),
        input_digest=bytes(32),
        output_digest=bytes(32),
        state=state,
        served_by=served,
        outcome=outcome,
        latency_ns=2 * MS,
        deadline_ns=50 * MS,
        flags=flags,
    )


def written(path: Path, *, calls: bool) -> Path:
    clock = FakeClock()
    with FlightRecorder.create(path, RING, clock=clock) as w:
        if calls:
            call(w, State.NORMAL, ServedBy.PRIMARY, Outcome.OK, CallFlags.KNOWN_ANSWER)
            call(w, State.DEGRADED, ServedBy.FALLBACK, Outcome.ERROR, CallFlags.COUNTED)
            clock.advance(1000 * MS)
            w.record_transition(State.DEGRADED, State.RECOVERING, code=3005)
            call(w, State.RECOVERING, ServedBy.PRIMARY, Outcome.OK, CallFlags.COUNTED)
        w.record_rejected(request_id=b"r" * 16, input_digest=bytes(32), code=2104, reason="x")
    return path


def test_what_the_picture_reads_from_the_log(tmp_path: Path) -> None:
    tl = _timeline._read(written(tmp_path / "a.vigil", calls=True))
    assert tl.first_state is State.DEGRADED  # the known-answer probe before it is left out
    assert [(c.served_by, c.outcome) for c in tl.calls] == [
        (ServedBy.FALLBACK, Outcome.ERROR),
        (ServedBy.PRIMARY, Outcome.OK),
    ]
    assert [c.latency_ms for c in tl.calls] == [2.0, 2.0]
    ((t, to_state, code),) = tl.changes
    assert to_state is State.RECOVERING and code == "DIA-3005" and t >= 1.0
    assert len(tl.rejected) == 1 and tl.rejected[0] > t


def test_a_log_without_calls_draws_nothing(tmp_path: Path) -> None:
    png = tmp_path / "t.png"
    _timeline.render(written(tmp_path / "a.vigil", calls=False), png, "empty")
    assert not png.exists()


def test_a_log_with_calls_is_drawn(tmp_path: Path) -> None:
    png = tmp_path / "t.png"
    _timeline.render(written(tmp_path / "a.vigil", calls=True), png, "three calls")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
