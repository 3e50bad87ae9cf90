"""The writer's hot paths (INFERENCE with and without payload, trace context or DIGEST_FOLLOWS;
REJECTED; OUTPUT_DIGEST) write exactly the bytes of the general path: each body encoded by its
construct-derived layout and written by ``_commit``, as the 1.2 records were before."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.auditlog import FlightRecorder, LogReader, PowerCutDisk, format_image
from vigil.errors import InvalidArgument, RecordTooLarge
from vigil.schemas import CallFlags, RecordType
from vigil.schemas import _records as R

from conftest import SMALL, FakeClock

LOG_ID = bytes(range(16))
FOLLOWS = int(CallFlags.DIGEST_FOLLOWS)


class GeneralPath(FlightRecorder):
    """The reference: every record through the general path (``Layout.pack`` of the body,
    then ``_commit``), as the writer did for the 1.2 records before they were packed hot."""

    def record_inference(self, **values: Any) -> int:
        trace_id, span_id = values.pop("trace_id", None), values.pop("span_id", bytes(8))
        values = {"code": 0, "answer_age_ns": 0, "flags": 0, "payload": b"", **values}
        if trace_id is None:
            body = R.BODIES[RecordType.INFERENCE].pack(values)
            v12 = bool(values["flags"] & FOLLOWS)
            return self._commit(int(RecordType.INFERENCE), body, v12=v12)
        layout = R.TRACED_BODIES[RecordType.INFERENCE]
        body = layout.pack({**values, "trace_id": trace_id, "span_id": span_id})
        return self._commit(int(RecordType.INFERENCE), body, version=2, v12=True)

    def record_rejected(self, **values: Any) -> int:
        trace_id, span_id = values.pop("trace_id", None), values.pop("span_id", bytes(8))
        if trace_id is None:
            return self._commit(
                int(RecordType.REJECTED), R.BODIES[RecordType.REJECTED].pack(values)
            )
        layout = R.TRACED_BODIES[RecordType.REJECTED]
        body = layout.pack({**values, "trace_id": trace_id, "span_id": span_id})
        return self._commit(int(RecordType.REJECTED), body, version=2, v12=True)

    def record_output_digest(
        self, inference_seq: int, output_digest: bytes, *, output_bytes: int, lag_ns: int
    ) -> int:
        body = R.BODIES[RecordType.OUTPUT_DIGEST].fixed.pack(
            inference_seq, output_bytes, lag_ns, output_digest
        )
        return self._commit(int(RecordType.OUTPUT_DIGEST), body, v12=True)


def d(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def write(kind: type[FlightRecorder], calls: list[tuple[str, dict[str, Any]]], mode: str) -> bytes:
    """The image ``calls`` leave in a fresh log (same clock, same log id, same geometry)."""
    disk = PowerCutDisk(format_image(SMALL, created_ns=1_700_000_000_000_000_000, log_id=LOG_ID))
    w = kind(disk, durability=mode, clock=FakeClock(), start_flusher=False)
    last = 0
    for method, values in calls:
        seq = values.get("inference_seq")  # -1: the digest of the INFERENCE record before
        last = getattr(w, method)(**(values | {"inference_seq": last} if seq == -1 else values))
    w.close()
    return bytes(disk.buf)


def mixed_calls(n: int) -> list[tuple[str, dict[str, Any]]]:
    """Every hot 1.2 record kind, payloads of every length modulo 8, across segment switches."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        traced = i % 3 != 0
        follows = i % 4 == 1
        values: dict[str, Any] = {
            "request_id": i.to_bytes(16, "little"),
            "model_digest": d("m"),
            "input_digest": d("in", i),
            "output_digest": bytes(32) if follows else d("out", i),
            "state": 1 + i % 2,
            "served_by": 1,
            "outcome": i % 3,
            "latency_ns": 2_500_000 + i,
            "deadline_ns": 20_000_000,
            "code": 2000 + i if i % 5 == 0 else 0,
            "answer_age_ns": i,
            "flags": (FOLLOWS if follows else 0) | (i % 2) * 8,
            "payload": bytes([i % 251]) * (i % 11),
        }
        if traced:
            values["trace_id"] = bytes([i % 255 + 1]) * 16
            values["span_id"] = bytes([i % 7]) * 8
        calls.append(("record_inference", values))
        if follows:
            calls.append(
                (
                    "record_output_digest",
                    {"inference_seq": -1, "output_digest": d("late", i)}
                    | {"output_bytes": 1 << 20, "lag_ns": 1000 + i},
                )
            )
        if i % 6 == 2:
            rejected: dict[str, Any] = {
                "request_id": bytes([i]) * 16,
                "input_digest": d("bad", i),
                "code": 2012,
                "reason": "forme incorrecte ✗ " * (i % 4),
            }
            if i % 12 == 2:
                rejected |= {"trace_id": b"\x07" * 16, "span_id": bytes(range(8))}
            calls.append(("record_rejected", rejected))
    return calls


def read(path: Path, image: bytes) -> set[tuple[str, bool]]:
    """Verify ``image`` (intact) and say which record kinds it holds (name, traced)."""
    path.write_bytes(image)
    with LogReader(path) as r:
        report = r.verify()
        kinds = {(x.type_name, "trace_id" in x.body) for x in r.records()}
    assert report.intact, report.findings
    return kinds


@pytest.mark.parametrize("mode", ["none", "batch", "always"])
def test_the_hot_path_writes_the_general_paths_bytes(tmp_path: Path, mode: str) -> None:
    calls = mixed_calls(120)  # ~40 KB: several segment switches, and the ring wraps
    hot = write(FlightRecorder, calls, mode)
    assert hot == write(GeneralPath, calls, mode)
    kinds = read(tmp_path / "hot.vigil", hot)
    assert {("INFERENCE", True), ("INFERENCE", False), ("REJECTED", True)} <= kinds
    assert {("REJECTED", False), ("OUTPUT_DIGEST", False)} <= kinds


@settings(max_examples=40, deadline=None)
@given(
    payload=st.binary(max_size=600),
    reason=st.text(max_size=300),
    trace=st.binary(min_size=16, max_size=16).filter(any),
    span=st.binary(min_size=8, max_size=8),
    numbers=st.tuples(*(st.integers(0, 2**63) for _ in range(3))),
)
def test_any_traced_record_is_byte_identical(
    payload: bytes, reason: str, trace: bytes, span: bytes, numbers: tuple[int, int, int]
) -> None:
    lat, dl, age = numbers
    inference = {
        "request_id": trace,
        "model_digest": d("m"),
        "input_digest": d("i"),
        "output_digest": d("o"),
        "state": 1,
        "served_by": 2,
        "outcome": 1,
        "latency_ns": lat,
        "deadline_ns": dl,
        "answer_age_ns": age,
        "payload": payload,
        "trace_id": trace,
        "span_id": span,
    }
    rejected = {"request_id": span * 2, "input_digest": d("r"), "code": 7, "reason": reason}
    calls = [
        ("record_inference", inference),
        ("record_rejected", rejected | {"trace_id": trace, "span_id": span}),
        ("record_rejected", rejected),
    ]
    assert write(FlightRecorder, calls, "none") == write(GeneralPath, calls, "none")


def test_a_field_out_of_range_appends_nothing_and_the_log_goes_on(tmp_path: Path) -> None:
    disk = PowerCutDisk(format_image(SMALL, created_ns=1_700_000_000_000_000_000, log_id=LOG_ID))
    w = FlightRecorder(disk, durability="none", clock=FakeClock(), start_flusher=False)
    good = mixed_calls(3)[3][1]  # a traced INFERENCE
    first = w.record_inference(**good)
    with pytest.raises(InvalidArgument, match="INFERENCE field out of range"):
        w.record_inference(**(good | {"latency_ns": -1}))
    with pytest.raises(InvalidArgument, match="OUTPUT_DIGEST field out of range"):
        w.record_output_digest(first, d("x"), output_bytes=-5, lag_ns=0)
    with pytest.raises(InvalidArgument, match="reason must be str"):
        w.record_rejected(request_id=bytes(16), input_digest=d("r"), code=1, reason=b"x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="limit 65535"):
        w.record_rejected(request_id=bytes(16), input_digest=d("r"), code=1, reason="é" * 40000)
    with pytest.raises(RecordTooLarge):
        w.record_inference(**(good | {"payload": bytes(9000)}))  # over an 8 KiB segment
    assert w.head_seq == first
    assert w.record_inference(**good) == first + 1
    w.close()
    assert ("INFERENCE", True) in read(tmp_path / "after.vigil", bytes(disk.buf))


def test_a_batch_writes_the_bytes_of_single_appends() -> None:
    """``record_inferences`` packs the header's constant parts once per batch: the records
    are still byte for byte those of N ``record_inference`` calls (one clock reading)."""
    rows = [
        (i.to_bytes(16, "little"), d("m"), d("in", i), d("out", i), 1, 1 + i % 2, i % 3,
         1000 + i, 10**7, i % 5, i, i % 2 * 4, bytes([i % 251]) * (i % 11))
        for i in range(200)
    ]  # fmt: skip  # ~50 KB: segment switches, no wrap (the batch zeroes ahead of its head)
    names = ("request_id", "model_digest", "input_digest", "output_digest", "state",
             "served_by", "outcome", "latency_ns", "deadline_ns", "code", "answer_age_ns",
             "flags", "payload")  # fmt: skip
    images = []
    for batched in (False, True):
        disk = PowerCutDisk(
            format_image(SMALL, created_ns=1_700_000_000_000_000_000, log_id=LOG_ID)
        )
        w = FlightRecorder(disk, durability="none", clock=FakeClock(step_ns=0), start_flusher=False)
        if batched:
            w.record_inferences(rows[:70])
            w.record_inferences(rows[70:])
        else:
            for row in rows:
                w.record_inference(**dict(zip(names, row, strict=True)))
        assert w.statistics().segment_switches >= 5
        w.close()
        images.append(bytes(disk.buf))
    assert images[0] == images[1]
