"""Regenerate the golden files: python tests/data/make_golden.py (from the repository root).

The files are committed; a test decodes them and compares with the committed expectations, so
a change that alters how existing logs read fails. Regenerate only for a deliberate format
revision, and say so in docs/FORMAT.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from vigil.auditlog import (  # noqa: E402
    FlightRecorder,
    LogReader,
    PowerCutDisk,
    RingConfig,
    format_image,
)
from vigil.errors import SimulatedPowerCut  # noqa: E402
from vigil.schemas import CallFlags, Outcome, RecordType, ServedBy, State  # noqa: E402
from vigil.schemas import _records as R  # noqa: E402

from conftest import FakeClock  # noqa: E402

CONFIG = RingConfig(size=4096 + 8 * 8192, segment_size=8192, frozen_quota=2)
LOG_ID = bytes(range(16))


def h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def session(w: FlightRecorder, start: int, calls: int) -> None:
    """Inference calls with a degraded stretch, and every other record type, each session
    (the first session's are evicted by the wrap-around; the last session's stay)."""
    for i in range(start, start + calls):
        failing = start + 10 <= i < start + 18
        w.record_inference(
            request_id=i.to_bytes(16, "big"),
            model_digest=h("model", 1),
            input_digest=h("in", i),
            output_digest=h("out", i),
            state=State.DEGRADED if failing else State.NORMAL,
            served_by=ServedBy.FALLBACK if failing else ServedBy.PRIMARY,
            outcome=Outcome.INVALID_OUTPUT if failing else Outcome.OK,
            latency_ns=2_500_000 + i,
            deadline_ns=20_000_000,
            code=0,
            answer_age_ns=1_000_000 if failing else 0,
            flags=0,
            payload=bytes([i % 256]) * (i % 7),
        )
        if i == start + 10:
            w.record_transition(State.NORMAL, State.DEGRADED, cause_seq=w.head_seq, reason="NaN")
        if i == start + 18:
            w.record_transition(State.DEGRADED, State.NORMAL, cause_seq=w.head_seq, reason="ok")
        if i == start + 25:
            w.record_rejected(
                request_id=b"\x01" * 16,
                input_digest=h("bad"),
                code=2047,
                reason="shape [1, 17] != [1, 16]",
            )
            w.annotate("operator", "müller: brake test")
            w.append(
                RecordType.CHECKPOINT,
                R.BODIES[RecordType.CHECKPOINT].pack({"opaque": b"\x00sig"}),
            )


def intact_log() -> bytes:
    disk = PowerCutDisk(format_image(CONFIG, created_ns=1_700_000_000_000_000_000, log_id=LOG_ID))
    w = FlightRecorder(disk, durability="always", clock=FakeClock(), start_flusher=False)
    session(w, 0, 100)
    w.freeze(1, 20)
    session(w, 100, 220)  # wraps: stale bytes of the first lap remain
    w.close()
    w = FlightRecorder(
        PowerCutDisk(bytes(disk.buf)),
        durability="batch",
        clock=FakeClock(boot=b"second-boot-0001"),
        start_flusher=False,
    )
    session(w, 1000, 30)
    w.close()
    return bytes(w._storage.buf)


def torn_log() -> bytes:
    disk = PowerCutDisk(
        format_image(CONFIG, created_ns=1_700_000_000_000_000_000, log_id=LOG_ID),
        seed=5,
        cut_at_sync=21,
        schedule="random",
    )
    try:
        w = FlightRecorder(disk, durability="batch", clock=FakeClock(), start_flusher=False)
        for i in range(200):
            w.annotate("k", f"record {i} " + "x" * (i * 37 % 300))
            if i % 9 == 0:
                w.flush()
    except SimulatedPowerCut:
        pass
    return bytes(disk.disk)


def v12_log() -> bytes:
    """Format 1.2: a session that defers output digests and records trace contexts, cut off
    (a crash) with two digests pending, then a second session that closes cleanly."""
    disk = PowerCutDisk(format_image(CONFIG, created_ns=1_700_000_000_000_000_000, log_id=LOG_ID))
    w = FlightRecorder(disk, durability="always", clock=FakeClock(), start_flusher=False)
    w.annotate("vigil.digester", '{"max_pending": 4, "threshold": 65536}')
    follows = CallFlags.DIGEST_FOLLOWS | CallFlags.COUNTED
    calls = []
    for i in range(6):
        calls.append(
            w.record_inference(
                request_id=i.to_bytes(16, "big"),
                model_digest=h("model", 1),
                input_digest=h("in", i),
                output_digest=bytes(32) if i % 3 else h("out", i),
                state=State.NORMAL,
                served_by=ServedBy.PRIMARY,
                outcome=Outcome.OK,
                latency_ns=2_500_000 + i,
                deadline_ns=20_000_000,
                flags=follows if i % 3 else CallFlags.COUNTED,
                trace_id=bytes([i + 1]) * 16 if i % 2 else None,
                span_id=bytes([i + 1]) * 8 if i % 2 else bytes(8),
            )
        )
        if i in (1, 2):
            w.record_output_digest(
                calls[i], h("out", i), output_bytes=1_048_576, lag_ns=1_000_000 + i
            )
    w.record_rejected(
        request_id=b"\x01" * 16,
        input_digest=h("bad"),
        code=2012,
        reason="trace_id: must be 16 bytes, not all zero",
        trace_id=b"\x07" * 16,
        span_id=b"\x08" * 8,
    )
    # a crash: calls 4 and 5 never get their digests
    w = FlightRecorder(
        PowerCutDisk(bytes(disk.buf)),
        durability="batch",
        clock=FakeClock(boot=b"second-boot-0001"),
        start_flusher=False,
    )
    w.annotate("vigil.digester", '{"max_pending": 4, "threshold": 65536}')
    seq = w.record_inference(
        request_id=bytes(16),
        model_digest=h("model", 1),
        input_digest=h("in", 9),
        output_digest=bytes(32),
        state=State.NORMAL,
        served_by=ServedBy.PRIMARY,
        outcome=Outcome.OK,
        latency_ns=2_500_009,
        deadline_ns=20_000_000,
        flags=follows,
    )
    w.record_output_digest(seq, h("out", 9), output_bytes=2_097_152, lag_ns=1_500_000)
    w.close()
    return bytes(w._storage.buf)


def write(name: str, image: bytes) -> None:
    path = HERE / f"{name}.vigil"
    path.write_bytes(image)
    with LogReader(str(path)) as r:
        rows = [rec.to_json() for rec in r.records()]
        report = r.verify()
    with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
    summary = {
        "intact": report.intact,
        "records": report.records,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "counts": report.counts,
        "findings": [
            {k: v for k, v in f.to_json().items() if k != "message"} for f in report.findings
        ],
    }
    (HERE / f"{name}.verify.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"{path.name}: {len(rows)} records, {summary['counts']}")


MAKERS = {"golden-v1": intact_log, "golden-v1-torn": torn_log, "golden-v1.2": v12_log}

if __name__ == "__main__":  # python tests/data/make_golden.py [NAME ...]: all by default
    for name in sys.argv[1:] or MAKERS:
        write(name, MAKERS[name]())
