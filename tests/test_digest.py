"""Format 1.2: output digests off the caller's path (issue 16) and trace contexts in records
(issue 18): the writer, the supervisor's digester in every isolation mode, ``verify`` (with a
real SIGKILL), ``dump`` and ``replay``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import FlightRecorder, LogReader, RingConfig
from vigil.auditlog._crc import crc32c
from vigil.cli import main as cli_main
from vigil.errors import InvalidArgument, InvalidInput, Unavailable
from vigil.schemas import CallFlags, Outcome, RecordType, ServedBy
from vigil.schemas import _records as R
from vigil.supervisor import Supervisor
from vigil.supervisor import _tensors as T
from vigil.supervisor._replay import replay

ROOT = Path(__file__).resolve().parent.parent
BIG = torch.arange(32 * 1024, dtype=torch.float32).reshape(8, 4096)  # 128 KiB > 64 KiB
SMALL = torch.ones(4)
TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))
# 8 segments of 64 KiB: every test's few records fit without a wrap, and creating the log costs
# nothing next to the default 64 MiB (the geometry plays no part in what these tests check)
RING = RingConfig(size=4096 + 8 * 65536, segment_size=65536)
_INF = {
    "request_id": bytes(16),
    "model_digest": bytes(32),
    "input_digest": bytes(32),
    "state": 1,
    "served_by": 1,
    "outcome": 0,
    "latency_ns": 1,
    "deadline_ns": 2,
}


def _records(path: Path) -> list[Any]:
    with LogReader(path) as reader:
        return list(reader.records())


def _verify(path: Path) -> Any:
    with LogReader(path) as reader:
        return reader.verify()


def _gate(sup: Supervisor) -> threading.Event:
    """Hold the supervisor's digester before it hashes, until the event is set."""
    gate = threading.Event()
    assert sup._digester is not None
    inner = sup._digester._digest

    def held(value: Any) -> bytes:
        assert gate.wait(60)
        return inner(value)

    sup._digester._digest = held
    return gate


# --- the writer -------------------------------------------------------------------------------


def test_a_log_stays_format_1_0_byte_for_byte_until_its_first_1_2_record(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    with FlightRecorder.create(path, RING, durability="none") as w:
        before = bytes(Path(path).read_bytes()[:4096])
        w.record_inference(output_digest=b"o" * 32, **_INF)
        assert Path(path).read_bytes()[:4096] == before and w.geometry.minor == 0
        seq = w.record_inference(output_digest=bytes(32), flags=CallFlags.DIGEST_FOLLOWS, **_INF)
        assert w.geometry.minor == R.MINOR_DIGESTS and w.geometry.revision == 2
        w.record_output_digest(seq, b"d" * 32, output_bytes=10, lag_ns=5)
    with LogReader(path) as reader:
        assert reader.geometry.minor == 2 and reader.verify().intact
        got = {r.seq: r for r in reader.records()}
    assert got[seq + 1].type is RecordType.OUTPUT_DIGEST
    assert got[seq + 1].body == {
        "inference_seq": seq,
        "output_bytes": 10,
        "lag_ns": 5,
        "output_digest": b"d" * 32,
    }
    with FlightRecorder.open(path) as w:  # the 1.2 log reopens for writing
        assert w.geometry.minor == 2


def test_the_writer_refuses_a_digest_follows_record_with_a_digest_and_a_bad_trace(
    tmp_path: Path,
) -> None:
    with FlightRecorder.create(tmp_path / "a.vigil", RING, durability="none") as w:
        with pytest.raises(InvalidArgument):
            w.record_inference(output_digest=b"o" * 32, flags=CallFlags.DIGEST_FOLLOWS, **_INF)
        for trace, span in ((bytes(16), bytes(8)), (b"x" * 15, bytes(8)), (TRACE, b"s")):
            with pytest.raises(InvalidArgument):
                w.record_inference(output_digest=bytes(32), trace_id=trace, span_id=span, **_INF)
        assert w.geometry.minor == 0  # nothing 1.2 was written


def test_traced_bodies_are_version_2_and_old_bodies_decode_as_before(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    with FlightRecorder.create(path, RING, durability="none") as w:
        plain = w.record_inference(output_digest=b"o" * 32, payload=b"p", **_INF)
        traced = w.record_inference(
            output_digest=b"o" * 32, payload=b"p", trace_id=TRACE, span_id=SPAN, **_INF
        )
        rej = w.record_rejected(
            request_id=bytes(16), input_digest=bytes(32), code=2012, reason="r", trace_id=TRACE
        )
    got = {r.seq: r for r in _records(path)}
    assert "trace_id" not in got[plain].body
    assert got[traced].body["trace_id"] == TRACE and got[traced].body["span_id"] == SPAN
    assert got[traced].body["payload"] == b"p"
    assert {k: v for k, v in got[traced].body.items() if k not in ("trace_id", "span_id")} == (
        got[plain].body
    )
    assert got[rej].body["trace_id"] == TRACE and got[rej].body["span_id"] == bytes(8)
    assert got[traced].to_json()["trace_id"] == TRACE.hex()


# --- the supervisor ---------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["inline", "thread"])
def test_a_large_output_is_recorded_then_digested_off_path(tmp_path: Path, isolation: Any) -> None:
    path = tmp_path / "a.vigil"
    with Supervisor(
        lambda x: BIG if x.sum() > 0 else SMALL, log=path, ring=RING, isolation=isolation
    ) as sup:
        big = sup.infer(torch.ones(2))
        small = sup.infer(torch.zeros(2))
        assert sup.wait_digested(30)
        stats = sup.statistics().digester
        assert stats is not None and stats.deferred == 1 and stats.digested == 1
    recs = _records(path)
    inf = {r.seq: r.body for r in recs if r.type is RecordType.INFERENCE}
    digests = [r.body for r in recs if r.type is RecordType.OUTPUT_DIGEST]
    assert inf[big.seq]["flags"] & CallFlags.DIGEST_FOLLOWS
    assert inf[big.seq]["output_digest"] == bytes(32)
    assert not inf[small.seq]["flags"] & CallFlags.DIGEST_FOLLOWS
    assert inf[small.seq]["output_digest"] == T.digest(SMALL)
    assert len(digests) == 1 and digests[0]["inference_seq"] == big.seq
    assert digests[0]["output_digest"] == T.digest(BIG)
    assert digests[0]["output_bytes"] == BIG.nbytes
    assert big.output is BIG  # the caller gets the output itself, not the snapshot
    report = _verify(path)
    assert report.intact and report.findings == ()
    annotations = [r.body for r in recs if r.type is RecordType.ANNOTATION]
    assert {"key": "vigil.digester", "text": '{"max_pending": 64, "threshold": 65536}'} in (
        annotations
    )


def test_the_digest_is_of_the_output_as_served_even_if_the_caller_changes_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.vigil"
    out = BIG.clone()
    want = T.digest(out)
    with Supervisor(lambda x: out, log=path, ring=RING, isolation="inline") as sup:
        gate = _gate(sup)
        result = sup.infer(torch.ones(2))
        result.output.mul_(-1)  # the caller owns its answer: it changes it in place
        gate.set()
        assert sup.wait_digested(30)
    (digest,) = [r.body for r in _records(path) if r.type is RecordType.OUTPUT_DIGEST]
    assert digest["output_digest"] == want != T.digest(out)


def test_a_full_queue_makes_the_caller_hash_inline_and_nothing_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    with Supervisor(lambda x: BIG, log=path, ring=RING, isolation="inline", digest_queue=1) as sup:
        gate = _gate(sup)
        first = sup.infer(torch.ones(2))
        second = sup.infer(torch.ones(2))  # the queue holds the first: hashed inline
        stats = sup.statistics().digester
        assert stats is not None and stats.inline_when_full == 1 and stats.pending == 1
        gate.set()
    inf = {r.seq: r.body for r in _records(path) if r.type is RecordType.INFERENCE}
    assert inf[first.seq]["flags"] & CallFlags.DIGEST_FOLLOWS
    assert not inf[second.seq]["flags"] & CallFlags.DIGEST_FOLLOWS
    assert inf[second.seq]["output_digest"] == T.digest(BIG)
    assert _verify(path).findings == ()  # close drained the first digest


def test_threshold_zero_digests_every_output_inline(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    with Supervisor(
        lambda x: BIG, log=path, ring=RING, isolation="inline", digest_threshold=0
    ) as sup:
        sup.infer(torch.ones(2))
        assert sup.statistics().digester is None
    recs = _records(path)
    assert not any(r.type is RecordType.OUTPUT_DIGEST for r in recs)
    with LogReader(path) as reader:
        assert reader.geometry.minor == 0  # no 1.2 feature used: the log stays 1.0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"digest_threshold": -1}, "digest_threshold"),
        ({"digest_threshold": 1.5}, "digest_threshold"),
        ({"digest_queue": 0}, "digest_queue"),
        ({"digest_queue": 5000}, "digest_queue"),
    ],
)
def test_bad_digest_settings_are_refused(tmp_path: Path, kwargs: Any, needle: str) -> None:
    from vigil.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        Supervisor(lambda x: x, log=tmp_path / "a.vigil", **kwargs)
    assert not (tmp_path / "a.vigil").exists()


@pytest.mark.slow
def test_process_isolation_digests_what_it_read_from_shared_memory(tmp_path: Path) -> None:
    from vigil.workers import WorkerPool, WorkerSpec

    spec = WorkerSpec(
        factory="vigil.testing._models:triggered_model", warmup_input=torch.ones(1, 4), threads=1
    )
    path = tmp_path / "a.vigil"
    pool = WorkerPool(spec, standby=False)
    with Supervisor(pool, isolation="process", log=path, ring=RING, digest_threshold=1) as sup:
        result = sup.infer(torch.ones(1, 4))
        assert result.served_by is ServedBy.PRIMARY
        want = T.digest(result.output)
    recs = _records(path)
    (inf,) = [r for r in recs if r.type is RecordType.INFERENCE and r.seq == result.seq]
    (digest,) = [r.body for r in recs if r.type is RecordType.OUTPUT_DIGEST]
    assert inf.body["flags"] & CallFlags.DIGEST_FOLLOWS
    assert digest["inference_seq"] == result.seq and digest["output_digest"] == want
    assert _verify(path).intact


# --- trace contexts ---------------------------------------------------------------------------


def test_a_trace_context_reaches_the_inference_and_rejected_records(tmp_path: Path) -> None:
    class Shape2:
        def check(self, x: Any, field: str = "input") -> None:
            if tuple(x.shape) != (2,):
                raise InvalidInput("shape", diagnostic=D.SHAPE_MISMATCH, field=field)

    path = tmp_path / "a.vigil"
    with Supervisor(
        lambda x: SMALL, log=path, ring=RING, isolation="inline", input_contract=Shape2()
    ) as sup:
        ok = sup.infer(torch.ones(2), trace_id=TRACE, span_id=SPAN)
        with pytest.raises(InvalidInput):
            sup.infer(torch.ones(3), trace_id=TRACE)
    recs = {r.seq: r for r in _records(path)}
    assert recs[ok.seq].body["trace_id"] == TRACE and recs[ok.seq].body["span_id"] == SPAN
    (rejected,) = [r for r in recs.values() if r.type is RecordType.REJECTED]
    assert rejected.body["trace_id"] == TRACE and rejected.body["span_id"] == bytes(8)


@pytest.mark.parametrize(
    ("trace", "span"),
    [
        (bytes(16), None),  # all zero: invalid per W3C
        (b"x" * 15, None),
        ("0af7651916cd43dd8448eb211c80319c", None),  # text, not bytes
        (TRACE, bytes(8)),
        (TRACE, b"x" * 9),
        (None, SPAN),  # a span without a trace
    ],
)
def test_a_bad_trace_context_fails_closed(tmp_path: Path, trace: Any, span: Any) -> None:
    path = tmp_path / "a.vigil"
    ran: list[Any] = []
    with Supervisor(
        lambda x: ran.append(x) or SMALL, log=path, ring=RING, isolation="inline"
    ) as sup:
        with pytest.raises(InvalidInput) as info:
            sup.infer(torch.ones(2), trace_id=trace, span_id=span)
        assert info.value.diagnostic is D.TRACE_CONTEXT_INVALID and not ran
        assert sup.statistics().rejected == 1
    (rejected,) = [r for r in _records(path) if r.type is RecordType.REJECTED]
    assert rejected.body["code"] == 2012 and "trace_id" not in rejected.body


def test_dump_finds_a_traces_records_with_their_digests(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "a.vigil"
    other = bytes(range(2, 18))
    with Supervisor(lambda x: BIG, log=path, ring=RING, isolation="inline") as sup:
        mine = sup.infer(torch.ones(2), trace_id=TRACE)
        sup.infer(torch.ones(2), trace_id=other)
        sup.infer(torch.ones(2))
    capsys.readouterr()
    assert cli_main(["dump", str(path), "--format", "jsonl", "--trace", TRACE.hex()]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["type"], x["seq"]) for x in lines] == [
        ("INFERENCE", mine.seq),
        ("OUTPUT_DIGEST", lines[1]["seq"]),
    ]
    assert lines[1]["inference_seq"] == mine.seq
    assert lines[1]["output_digest"] == T.digest(BIG).hex()
    assert cli_main(["dump", str(path), "--trace", TRACE.hex()]) == 0
    table = capsys.readouterr().out
    assert "out=follows" in table and f"of seq {mine.seq}" in table and TRACE.hex() in table
    assert cli_main(["dump", str(path), "--trace", "abc"]) != 0


def test_replay_agrees_on_a_log_with_deferred_digests_and_traces(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    outputs = iter([BIG, torch.tensor([float("nan")] * 20000), BIG, BIG])
    with Supervisor(lambda x: next(outputs), log=path, ring=RING, isolation="inline") as sup:
        sup.infer(torch.ones(2), trace_id=TRACE)
        with pytest.raises(Unavailable):  # the NaN call has no fallback
            sup.infer(torch.ones(2), trace_id=TRACE)
        sup.infer(torch.ones(2), trace_id=TRACE)
        sup.infer(torch.ones(2))
    inf = [r.body for r in _records(path) if r.type is RecordType.INFERENCE]
    ok = Outcome.OK
    assert [b["outcome"] for b in inf] == [ok, Outcome.INVALID_OUTPUT, ok, ok]
    assert not inf[1]["flags"] & CallFlags.DIGEST_FOLLOWS  # a failed call serves nothing
    report = replay(path)
    assert report.verdict == "AGREES", report.findings


# --- verify -----------------------------------------------------------------------------------


def _log(path: Path, script: list[tuple[str, Any]]) -> dict[str, int]:
    """Write a log by hand: ("bound", n) declares a digester, ("call", name) a DIGEST_FOLLOWS
    INFERENCE, ("digest", name) its OUTPUT_DIGEST, ("raw", seq) an OUTPUT_DIGEST naming a seq,
    ("body", (bytes, version)) an OUTPUT_DIGEST of that body, ("reopen", None) a new writer
    session after a crash (the writer dropped unclosed)."""
    seqs: dict[str, int] = {}
    ring = RingConfig(size=4096 + 8 * 65536, segment_size=65536)
    w = FlightRecorder.create(path, ring, durability="none")
    for op, arg in script:
        if op == "bound":
            w.annotate("vigil.digester", json.dumps({"max_pending": arg, "threshold": 1}))
        elif op == "call":
            seqs[arg] = w.record_inference(
                output_digest=bytes(32), flags=CallFlags.DIGEST_FOLLOWS, **_INF
            )
        elif op == "digest":
            w.record_output_digest(seqs[arg], b"d" * 32, output_bytes=1, lag_ns=1)
        elif op == "raw":
            w.record_output_digest(arg, b"d" * 32, output_bytes=1, lag_ns=1)
        elif op == "body":  # (body, body_version): an OUTPUT_DIGEST sealed as any writer could
            body, version = arg
            w._commit(int(RecordType.OUTPUT_DIGEST), body, version=version, v12=True)
        elif op == "reopen":
            w.flush()
            w._drop()  # as a crash leaves it: no CLOSED record
            w = FlightRecorder.open(path, durability="none")
    w.close()
    return seqs


def _kinds(path: Path) -> list[tuple[str, int | None, int | None]]:
    report = _verify(path)
    return [(f.kind, f.seq, f.last_seq) for f in report.findings]


def test_verify_a_digest_missing_before_a_later_one_is_an_integrity_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.vigil"
    s = _log(path, [("bound", 8), ("call", "a"), ("call", "b"), ("digest", "b")])
    assert _kinds(path) == [("DIGEST_MISSING", s["a"], None)]
    report = _verify(path)
    assert not report.intact and report.findings[0].code == D.DIGEST_MISSING.code


def test_verify_orphan_and_duplicate_digests_are_integrity_failures(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    s = _log(path, [("bound", 8), ("call", "a"), ("digest", "a"), ("digest", "a"), ("raw", 2)])
    found = _kinds(path)
    assert [k for k, _, _ in found] == ["DIGEST_UNEXPECTED", "DIGEST_UNEXPECTED"]
    assert found[0][1] == s["a"] + 2  # the duplicate, then the one naming an ANNOTATION
    assert not _verify(path).intact


def test_verify_pending_digests_at_a_crash_are_expected_within_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    s = _log(
        path,
        [("bound", 2), ("call", "a"), ("digest", "a"), ("call", "b"), ("call", "c"), ("reopen", 0)],
    )
    assert _kinds(path) == [("DIGEST_PENDING", s["b"], s["c"])]
    assert _verify(path).intact
    path2 = tmp_path / "b.vigil"
    s = _log(path2, [("bound", 1), ("call", "a"), ("call", "b"), ("reopen", 0)])
    assert _kinds(path2) == [("DIGEST_MISSING", s["a"], None), ("DIGEST_PENDING", s["b"], None)]


def test_verify_a_closed_session_owes_every_digest(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    s = _log(path, [("bound", 8), ("call", "a")])  # closed cleanly, digest never written
    assert _kinds(path) == [("DIGEST_MISSING", s["a"], None)]


def _digest_body(seq: int) -> bytes:
    return seq.to_bytes(8, "little") + bytes(16) + b"d" * 32  # inference_seq, bytes, lag, digest


@pytest.mark.parametrize(
    ("body", "version"),
    [
        (_digest_body(3)[:8], 1),  # names the call (seq 3), holds no digest
        (_digest_body(3)[:40], 1),
        (_digest_body(3) + bytes(8), 1),  # trailing bytes: a body decodes exactly
        (_digest_body(3), 9),  # a body version no writer writes
        (b"", 1),
    ],
    ids=["8-bytes", "40-bytes", "64-bytes", "version-9", "empty"],
)
def test_verify_an_undecodable_digest_completes_nothing(
    tmp_path: Path, body: bytes, version: int
) -> None:
    path = tmp_path / "a.vigil"
    s = _log(path, [("bound", 8), ("call", "a"), ("body", (body, version))])
    assert s["a"] == 3  # after OPENED and the digester annotation
    found = _kinds(path)  # the call's digest is lost: one finding for the record, one for it
    assert found == [("DIGEST_UNEXPECTED", s["a"] + 1, None), ("DIGEST_MISSING", s["a"], None)]
    assert not _verify(path).intact


def test_verify_a_digest_naming_seq_0_is_unexpected(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    s = _log(path, [("bound", 8), ("call", "a"), ("digest", "a"), ("raw", 0)])
    assert _kinds(path) == [("DIGEST_UNEXPECTED", s["a"] + 2, None)]  # seqs start at 1


@pytest.mark.parametrize("minor", [0, 1])
def test_verify_a_superblock_rolled_back_to_an_older_minor_is_tampering(
    tmp_path: Path, minor: int
) -> None:
    path = tmp_path / "a.vigil"
    s = _log(path, [("bound", 8), ("call", "a"), ("call", "b"), ("digest", "b")])
    image = bytearray(path.read_bytes())
    for off in R.SUPERBLOCK_SLOTS:  # the superblock is outside the chain: anyone can
        assert int.from_bytes(image[off + 10 : off + 12], "little") == 2
        image[off + 10 : off + 12] = minor.to_bytes(2, "little")
        image[off + 252 : off + 256] = crc32c(bytes(image[off : off + 252])).to_bytes(4, "little")
    path.write_bytes(bytes(image))
    with LogReader(str(path)) as reader:
        assert reader.geometry.minor == minor
    # the first record only 1.2 writes names the rollback, and the 1.2 checks still run
    assert _kinds(path) == [("TAMPERING", s["a"], None), ("DIGEST_MISSING", s["a"], None)]


_KILLED = """
import sys, threading, torch
from vigil.supervisor import Supervisor
sup = Supervisor(lambda x: torch.full((32768,), float(x.sum())), log=sys.argv[1],
                 isolation="inline", digest_queue=4, durability="none")
inner, n = sup._digester._digest, [0]
def stuck(value):
    n[0] += 1
    if n[0] > int(sys.argv[2]):
        threading.Event().wait()  # the digester stops here: what it holds is lost at the kill
    return inner(value)
sup._digester._digest = stuck
for i in range(int(sys.argv[3])):
    sup.infer(torch.ones(2) * i)
    if i < int(sys.argv[2]):
        sup.wait_digested(60)  # the first ones are digested one by one: no race
sup.log.flush()
print("ready", flush=True)
threading.Event().wait()
"""


def test_a_sigkilled_writer_leaves_pending_digests_that_verify_explains(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(path), "5", "12"],
        stdout=subprocess.PIPE,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(60)
    # 12 calls: 5 digested, the 6th stuck in hashing, 3 more queued (bound 4), 3 hashed inline
    report = _verify(path)
    pending = [f for f in report.findings if f.kind == "DIGEST_PENDING"]
    assert report.intact and len(pending) == 1 and len(report.findings) == 1
    inf = [r for r in _records(path) if r.type is RecordType.INFERENCE]
    flagged = [r.seq for r in inf if r.body["flags"] & CallFlags.DIGEST_FOLLOWS]
    assert len(inf) == 12 and len(flagged) == 9
    assert (pending[0].seq, pending[0].last_seq) == (flagged[5], flagged[8])
    # the next session goes on; the crash's pending digests stay explained
    with Supervisor(lambda x: BIG, log=path, ring=RING, isolation="inline") as sup:
        sup.infer(torch.ones(2))
    again = _verify(path)
    assert again.intact and [f.kind for f in again.findings] == ["DIGEST_PENDING"]


# --- the service's configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "ok"),
    [
        ({}, (64, 64)),
        ({"digest_inline_max_kb": 0, "digest_queue": 1}, (0, 1)),
        ({"digest_inline_max_kb": -1}, None),
        ({"digest_queue": 0}, None),
        ({"digest_queue": 4097}, None),
        ({"digest_queue": 2.0}, None),
    ],
)
def test_the_service_config_takes_the_digest_keys(table: dict[str, Any], ok: Any) -> None:
    from vigil.errors import ServiceConfigError
    from vigil.service._config import ServeConfig

    data = {
        "service": {"socket": "run/vigil.sock"},
        "log": {"path": "flight.vigil"},
        "model": {"factory": "vigil.model:TinyReference"},
        "supervisor": {"deadline_ms": 50, **table},
    }
    if ok is None:
        with pytest.raises(ServiceConfigError) as info:
            ServeConfig.from_dict(data)
        assert info.value.diagnostic in (D.SERVICE_CONFIG_RANGE, D.SERVICE_CONFIG_TYPE)
        return
    sup = ServeConfig.from_dict(data).supervisor
    assert (sup.digest_inline_max_kb, sup.digest_queue) == ok


def test_a_record_that_cannot_be_written_gives_its_queue_room_back(tmp_path: Path) -> None:
    from vigil.errors import LogClosed, Unavailable

    log = FlightRecorder.create(tmp_path / "a.vigil", RING, durability="none")
    sup = Supervisor(lambda x: BIG, log=log, isolation="inline", digest_queue=1)
    try:
        log.close()  # the caller closed its log under the supervisor
        with pytest.raises(Unavailable) as info:  # unrecorded: not released (DIA-4012)
            sup.infer(torch.ones(2))
        assert isinstance(info.value.__cause__, LogClosed)
        stats = sup.statistics().digester
        assert stats is not None and stats.pending == 0 and stats.deferred == 0
    finally:
        sup.close()  # returns: nothing outstanding to drain


def test_snapshot_buffers_are_recycled_and_each_digest_is_its_own_outputs(tmp_path: Path) -> None:
    path = tmp_path / "a.vigil"
    outputs = [BIG * i for i in range(5)]
    feed = iter(outputs)
    with Supervisor(lambda x: next(feed), log=path, ring=RING, isolation="inline") as sup:
        assert sup._digester is not None
        first = sup._digester.snapshot(BIG)
        sup._digester._recycle(first)
        for _ in outputs:
            sup.infer(torch.ones(2))
            assert sup.wait_digested(30)
            (kept,) = sup._digester._free[(BIG.dtype, BIG.shape)]
            assert kept is first  # one buffer, reused by every call
    got = [r.body["output_digest"] for r in _records(path) if r.type is RecordType.OUTPUT_DIGEST]
    assert got == [T.digest(o) for o in outputs]


@pytest.mark.parametrize("isolation", ["inline", "thread"])
def test_many_callers_each_digest_is_of_their_own_answer(tmp_path: Path, isolation: Any) -> None:
    """16 threads call at once with outputs of a size above and below the threshold, each
    distinct, through a queue of 4 (so some callers hash inline): every call's record holds
    the digest of the answer that caller got -- in the INFERENCE record or in the one
    OUTPUT_DIGEST naming it --, no digest is missing or doubled, and the log verifies."""
    path = tmp_path / "a.vigil"

    def model(x: torch.Tensor) -> torch.Tensor:
        n = int(x[0])
        size = 4096 if n % 3 else 4  # 16 KiB (deferred above 1 KiB) or 16 bytes (inline)
        return torch.full((size,), float(n))

    got: dict[int, bytes] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def caller(k: int) -> None:
        try:
            start.wait(30)
            for i in range(40):
                r = sup.infer(torch.tensor([float(k * 1000 + i)]))
                got[r.seq] = T.digest(r.output)
        except BaseException as exc:  # reported below: a thread's failure fails the test
            errors.append(exc)

    with Supervisor(
        model,
        log=path,
        ring=RingConfig(size=4096 + 16 * 65536, segment_size=65536),
        isolation=isolation,
        digest_threshold=1024,
        digest_queue=4,
        deadline_ns=30_000_000_000,  # 16 threads on 2 vCPUs: no call is late, none trips
    ) as sup:
        _in_threads(caller, 16)
        assert not errors and len(got) == 16 * 40
        stats = sup.statistics().digester
        assert stats is not None and stats.deferred > 0
    _each_record_holds_its_callers_digest(path, got)


def _in_threads(caller: Any, n: int) -> None:
    """Run ``caller(k)`` for k in 0..n-1 on n threads at once, and wait for them all."""
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def _each_record_holds_its_callers_digest(path: Path, got: dict[int, bytes]) -> None:
    """Every call in ``got`` (seq -> digest of the answer its caller got) has that digest in
    its INFERENCE record or in the one OUTPUT_DIGEST naming it; no other digest; log intact."""
    recs = _records(path)
    inf = {r.seq: r.body for r in recs if r.type is RecordType.INFERENCE}
    later: dict[int, bytes] = {}
    for r in recs:
        if r.type is RecordType.OUTPUT_DIGEST:
            call = r.body["inference_seq"]
            assert call not in later and call < r.seq  # one each, after its call
            later[call] = r.body["output_digest"]
    for seq, want in got.items():
        body = inf[seq]
        if body["flags"] & CallFlags.DIGEST_FOLLOWS:
            assert body["output_digest"] == bytes(32) and later.pop(seq) == want
        else:
            assert body["output_digest"] == want
    assert later == {}  # no digest names a call that was not deferred
    report = _verify(path)
    assert report.intact and report.findings == ()


def test_many_callers_of_two_worker_processes_get_digests_of_their_own_answers(
    tmp_path: Path,
) -> None:
    """Process isolation with two active workers and 8 callers, every output deferred: each
    digest is of the answer read from that call's shared memory, taken before the worker's
    area is reused by its next call."""
    from vigil.workers import WorkerPool, WorkerSpec

    spec = WorkerSpec(
        factory="vigil.testing._models:triggered_model", warmup_input=torch.ones(1, 4), threads=1
    )
    path = tmp_path / "a.vigil"
    got: dict[int, bytes] = {}
    errors: list[BaseException] = []
    pool = WorkerPool(spec, active=2, standby=False)
    with Supervisor(
        pool, isolation="process", log=path, ring=RING, digest_threshold=1, digest_queue=4
    ) as sup:

        def caller(k: int) -> None:
            try:
                for i in range(25):
                    r = sup.infer(torch.full((1, 4), float(k * 100 + i)))
                    assert r.served_by is ServedBy.PRIMARY
                    assert torch.equal(r.output, torch.full((1, 4), 2.0 * (k * 100 + i)))
                    got[r.seq] = T.digest(r.output)
            except BaseException as exc:  # reported below
                errors.append(exc)

        _in_threads(caller, 8)
        assert not errors and len(got) == 8 * 25
    _each_record_holds_its_callers_digest(path, got)
