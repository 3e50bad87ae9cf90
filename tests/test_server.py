"""The service socket with real sockets, threads and processes: good clients are answered,
bad clients are refused and recorded, and none of them hurts the service."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import LogReader, RingConfig
from vigil.errors import (
    InvalidInput,
    ProtocolError,
    ServiceBusy,
    ServiceConfigError,
    ServiceUnreachable,
    Unavailable,
)
from vigil.schemas import Outcome, RecordType, ServedBy, State
from vigil.service import _protocol as P
from vigil.service._client import Client
from vigil.service._server import SocketServer
from vigil.service._server_io import Violations
from vigil.supervisor import Constant, Supervisor

REPO = Path(__file__).resolve().parent.parent
RING = RingConfig(size=4096 + 32 * 32768, segment_size=32768)  # ~3000 records, no wrap
X = torch.ones(1, 4)


def double(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: v * 2 for k, v in x.items()}
    return x * 2


class NonNegative:
    def check(self, x: Any, field: str = "input") -> None:
        if isinstance(x, torch.Tensor) and bool((x < 0).any()):
            raise InvalidInput(f"{field} negative", diagnostic=D.OUT_OF_RANGE, field=field)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Socket paths must stay under ~108 bytes: pytest's tmp_path may be longer."""
    d = Path(tempfile.mkdtemp(prefix="vgs-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Service:
    """A supervisor and its server, built per test; ``close`` returns the flight log path."""

    def __init__(self, tmp: Path, sock: Path, model: Callable[[Any], Any], **kw: Any) -> None:
        self.log = str(tmp / "f.vlog")
        sup_kw = {k: kw.pop(k) for k in ("fallback", "input_contract", "deadline_ns") if k in kw}
        sup_kw.setdefault("deadline_ns", 5_000_000_000)
        self.sup = Supervisor(model, log=self.log, isolation="inline", ring=RING, **sup_kw)
        kw.setdefault("read_timeout_s", 5.0)
        self.server = SocketServer(self.sup, sock, **kw)
        self.server.start()
        self.path = str(sock)
        self.closed = False

    def client(self, **kw: Any) -> Client:
        return Client(self.path, timeout_s=kw.pop("timeout_s", 10.0), **kw)

    def assert_serves(self) -> None:
        with self.client() as c:
            r = c.infer(X)
        assert torch.equal(r.output, X * 2) and r.served_by is ServedBy.PRIMARY

    def close(self) -> list[Any]:
        if not self.closed:
            self.server.stop(5.0)
            self.sup.close()
            self.closed = True
        with LogReader(self.log) as r:
            assert r.verify().intact
            return list(r.records())


@pytest.fixture
def service(tmp_path: Path, short_dir: Path) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(model: Callable[[Any], Any] = double, **kw: Any) -> Service:
        s = Service(tmp_path, short_dir / f"s{len(made)}.sock", model, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5.0)
    s.connect(path)
    return s


def read_frame(s: socket.socket) -> P.Frame | None:
    """One frame from the server, or None at EOF."""
    data = b""
    while len(data) < P.HEADER_SIZE:
        try:
            chunk = s.recv(P.HEADER_SIZE - len(data))
        except ConnectionResetError:  # closed with our unread bytes in its queue: closed too
            chunk = b""
        if not chunk:
            assert not data, "EOF inside a header"
            return None
        data += chunk
    (length,) = struct.unpack_from("<I", data, 24)
    while len(data) < P.HEADER_SIZE + length:
        chunk = s.recv(P.HEADER_SIZE + length - len(data))
        assert chunk, "EOF inside a body"
        data += chunk
    return P.decode_frame(data, expect=P.RESPONSES)


def slow_body_error(s: socket.socket, rid: bytes) -> str:
    """Read the answer of a connection closed for its slow or stalled body (DIA-7121, class
    BUSY, closing) to request ``rid``; return its message."""
    answer = read_frame(s)
    assert answer is not None and answer.request_id == rid
    info = P.decode_error(answer.body)
    assert (info.error_class, info.code, info.closing) == (
        P.ErrorClass.BUSY,
        D.SLOW_BODY.code,
        True,
    )
    return info.message


def infer_frame(x: Any = X, rid: bytes = b"\x01" * 16) -> bytes:
    return b"".join(bytes(b) for b in P.encode_frame(P.FrameType.INFER, rid, P.encode_tensors(x)))


def with_crc(head: bytes, body: bytes = b"") -> bytes:
    from vigil.auditlog._crc import crc32c_portable

    return head[:28] + struct.pack("<I", crc32c_portable(head[:28] + body)) + body


def annotations(records: list[Any]) -> list[dict[str, Any]]:
    return [
        json.loads(r.body["text"])
        for r in records
        if r.type is RecordType.ANNOTATION and r.body["key"] == "vigil.protocol"
    ]


def inferences(records: list[Any]) -> list[Any]:
    return [r for r in records if r.type is RecordType.INFERENCE]


# --- good clients ----------------------------------------------------------------------


def test_a_call_round_trips_with_its_result_and_request_id(
    service: Callable[..., Service],
) -> None:
    svc = service()
    calls: list[tuple[Any, Any, float]] = []
    svc.server._on_call = lambda r, e, s, *_: calls.append((r, e, s))
    with svc.client() as c:
        r = c.infer(torch.arange(6.0).reshape(2, 3), request_id=b"R" * 16)
        named = c.infer({"a": torch.ones(2), "b": torch.zeros(1, dtype=torch.float64)})
        auto = c.infer(X)
        c.ping()
        health = c.health()
    assert torch.equal(r.output, torch.arange(6.0).reshape(2, 3) * 2)
    assert (r.state, r.served_by, r.outcome, r.code, r.request_id) == (
        State.NORMAL,
        ServedBy.PRIMARY,
        Outcome.OK,
        None,
        b"R" * 16,
    )
    assert r.latency_ns > 0 and r.seq > 0
    assert set(named.output) == {"a", "b"} and named.output["b"].dtype is torch.float64
    assert auto.request_id != bytes(16)  # assigned by the supervisor, told to the client
    assert health["ready"] and health["state"] == "NORMAL"
    assert health["detail"]["calls"] == 3 and health["detail"]["server"]["requests"] == 3
    assert [e for _, e, _ in calls] == [None] * 3 and all(s > 0 for *_, s in calls)
    by_seq = {x.seq: x for x in inferences(svc.close())}
    assert by_seq[r.seq].body["request_id"] == b"R" * 16
    assert by_seq[auto.seq].body["request_id"] == auto.request_id


def test_refusals_and_unavailable_answers_keep_the_connection(
    service: Callable[..., Service],
) -> None:
    broken = {"on": False}

    def model(x: Any) -> Any:
        if broken["on"]:
            raise RuntimeError("boom")
        return x.to(torch.complex64) if x.shape == (2,) else x * 2

    svc = service(model, input_contract=NonNegative())
    errors: list[Any] = []
    svc.server._on_call = lambda r, e, s, *_: errors.append(e) or 1 / 0  # a broken metrics hook
    with svc.client() as c:
        with pytest.raises(InvalidInput) as bad:
            c.infer(-X)
        assert (bad.value.code, bad.value.field) == (D.OUT_OF_RANGE.code, "input")
        with pytest.raises(ProtocolError) as enc:
            c.infer(torch.ones(2))  # served, recorded, but complex64 is not sendable
        assert enc.value.code == D.OUTPUT_NOT_ENCODABLE.code
        broken["on"] = True
        with pytest.raises(Unavailable) as gone:
            c.infer(X)
        assert "boom" in gone.value.reason and gone.value.state is State.NORMAL
        broken["on"] = False
        assert torch.equal(c.infer(X).output, X * 2)  # the same connection, still serving
    assert [type(e).__name__ for e in errors] == [
        "InvalidInput",
        "NoneType",
        "Unavailable",
        "NoneType",
    ]


# --- bad clients -----------------------------------------------------------------------

_GOOD = infer_frame()


def _corrupt_crc() -> bytes:
    bad = bytearray(_GOOD)
    bad[-1] ^= 0xFF
    return bytes(bad)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(8), D.BAD_MAGIC),
        (_corrupt_crc(), D.FRAME_CRC),
        (with_crc(P.HEADER.pack(P.MAGIC, 1, 99, 0, bytes(16), 0, 0)), D.FRAME_TYPE),
        (
            with_crc(P.HEADER.pack(P.MAGIC, 1, int(P.FrameType.RESULT), 0, bytes(16), 0, 0)),
            D.FRAME_TYPE,
        ),
        (with_crc(P.HEADER.pack(P.MAGIC, 9, 1, 0, bytes(16), 0, 0)), D.PROTOCOL_VERSION),
        # oversize: only the header is sent; the answer comes before any body byte
        (P.HEADER.pack(P.MAGIC, 1, 1, 0, bytes(16), 4096 + 1, 0), D.FRAME_TOO_LARGE),
        # PING and HEALTH have an empty body: one was once read (all of it) and ignored
        (with_crc(P.HEADER.pack(P.MAGIC, 1, 6, 0, bytes(16), 8, 0), bytes(8)), D.BODY_MALFORMED),
        (P.HEADER.pack(P.MAGIC, 1, 4, 0, bytes(16), 4000, 0), D.BODY_MALFORMED),  # header only
    ],
    ids=[
        "magic",
        "crc",
        "type",
        "response-type",
        "version",
        "oversize",
        "ping-body",
        "health-body",
    ],
)
def test_a_broken_frame_gets_an_error_frame_then_close(
    service: Callable[..., Service], data: bytes, code: D.Diagnostic
) -> None:
    svc = service(max_request_bytes=4096)
    s = raw(svc.path)
    s.sendall(data)
    frame = read_frame(s)
    assert frame is not None and frame.type is P.FrameType.ERROR
    info = P.decode_error(frame.body)
    assert (info.error_class, info.code, info.closing) == (P.ErrorClass.PROTOCOL, code.code, True)
    if code is D.PROTOCOL_VERSION:
        assert "version 9" in info.message and "version 1" in info.message
        assert (info.detail["theirs"], info.detail["ours"]) == (9, 1)
    assert read_frame(s) is None  # closed: the stream cannot be resynchronised
    s.close()
    svc.assert_serves()
    assert svc.server.wait_open(0, 5.0)
    notes = annotations(svc.close())
    assert [n["code"] for n in notes] == [code.code]
    assert notes[0]["peer_pid"] == os.getpid()


def test_a_bad_tensor_spec_is_refused_and_the_connection_stays_usable(
    service: Callable[..., Service],
) -> None:
    svc = service()
    counted: list[Any] = []
    svc.server._on_call = lambda r, e, s, *_: counted.append(e)  # ServiceMetrics.observe_call
    body = bytearray(b"".join(bytes(b) for b in P.encode_tensors(X)))
    body[5] = 200  # the dtype code
    head = P.HEADER.pack(P.MAGIC, 1, 1, 0, b"\x02" * 16, len(body), 0)
    context = b"\x00\x01\xff" + bytes(5)  # a class of one byte that is not UTF-8
    tensors = b"".join(bytes(b) for b in P.encode_tensors(X))
    bad_context = P.HEADER.pack(P.MAGIC, 1, 1, P.FLAG_CONTEXT, b"\x04" * 16, 8 + len(tensors), 0)
    s = raw(svc.path)
    for payload in (
        with_crc(head, bytes(body)),
        with_crc(bad_context, context + tensors),
        infer_frame(rid=b"\x03" * 16),
    ):
        s.sendall(payload)
    bad, bad_ctx, good = read_frame(s), read_frame(s), read_frame(s)
    assert bad is not None and bad_ctx is not None and good is not None
    info = P.decode_error(bad.body)
    assert (info.code, info.closing, bad.request_id) == (D.TENSOR_SPEC.code, False, b"\x02" * 16)
    assert "unknown dtype code 200" in info.message
    info = P.decode_error(bad_ctx.body)
    assert (info.code, info.closing) == (D.FRAME_CONTEXT_INVALID.code, False)
    assert good.type is P.FrameType.RESULT and good.request_id == b"\x03" * 16
    s.close()
    # both refusals are counted in the per-request metrics (outcome protocol_error); they
    # once were not counted at all
    assert [(type(e).__name__, getattr(e, "code", None)) for e in counted] == [
        ("ProtocolError", D.TENSOR_SPEC.code),
        ("ProtocolError", D.FRAME_CONTEXT_INVALID.code),
        ("NoneType", None),
    ]


def test_a_shape_torch_cannot_lay_out_is_refused_and_the_connection_stays_usable(
    service: Callable[..., Service],
) -> None:
    """A zero dimension beside three of 2^32-1 (no bytes needed) once reached torch.empty and
    died there ("Stride calculation overflowed"): a traceback, no answer."""
    svc = service()
    shape = (0, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    meta = bytes([0, 0, 1, 0, 0, 1, len(shape)]) + struct.pack("<4QQ", *shape, 0)
    body = meta + bytes(-len(meta) % 8)
    head = P.HEADER.pack(P.MAGIC, 1, 1, 0, b"\x02" * 16, len(body), 0)
    s = raw(svc.path)
    s.sendall(with_crc(head, body) + infer_frame(rid=b"\x03" * 16))
    bad, good = read_frame(s), read_frame(s)
    assert bad is not None and good is not None
    info = P.decode_error(bad.body)
    assert (info.code, info.closing) == (D.TENSOR_SPEC.code, False)
    assert "spans" in info.message
    assert good.type is P.FrameType.RESULT and good.request_id == b"\x03" * 16
    s.close()


def test_a_client_gone_mid_frame_is_dropped_quietly(service: Callable[..., Service]) -> None:
    svc = service()
    s = raw(svc.path)
    s.sendall(_GOOD[: len(_GOOD) // 2])
    s.close()
    assert svc.server.wait_open(0, 5.0)
    svc.assert_serves()
    records = svc.close()
    assert [n["code"] for n in annotations(records)] == [D.FRAME_TRUNCATED.code]
    assert len(inferences(records)) == 1  # only the good client's


def test_a_client_gone_mid_call_still_has_its_call_recorded(
    service: Callable[..., Service],
) -> None:
    entered, gate = threading.Event(), threading.Event()

    def slow(x: Any) -> Any:
        entered.set()
        assert gate.wait(10.0)
        return x * 2

    svc = service(slow)
    s = raw(svc.path)
    s.sendall(infer_frame(rid=b"\x07" * 16))
    assert entered.wait(5.0)
    assert svc.server.in_flight == 1
    s.close()  # gone before the answer
    gate.set()
    assert svc.server.wait_idle(5.0)
    assert svc.server.wait_open(0, 5.0)
    entered.clear()
    svc.assert_serves()
    ids = [r.body["request_id"] for r in inferences(svc.close())]
    assert ids[0] == b"\x07" * 16 and len(ids) == 2


def test_a_silent_client_is_dropped_after_the_read_timeout(
    service: Callable[..., Service],
) -> None:
    svc = service(read_timeout_s=0.3)
    s = raw(svc.path)
    t0 = time.monotonic()
    readable, _, _ = select.select([s], [], [], 5.0)
    assert readable and s.recv(1) == b""  # closed, no frame: nobody asked anything
    assert time.monotonic() - t0 >= 0.25
    s.close()
    svc.assert_serves()
    assert svc.server.wait_open(0, 5.0)
    assert [n["code"] for n in annotations(svc.close())] == [D.READ_TIMEOUT.code]


def test_a_trickling_client_gets_no_more_time_than_a_silent_one(
    service: Callable[..., Service],
) -> None:
    svc = service(read_timeout_s=0.3)
    s = raw(svc.path)
    t0 = time.monotonic()
    closed = False
    for byte in _GOOD:  # one byte per 0.05 s: each recv is quick, the frame is not
        try:
            s.sendall(bytes([byte]))
        except OSError:  # closed between two bytes
            closed = True
            break
        readable, _, _ = select.select([s], [], [], 0.05)
        if readable:
            closed = True
            break
    assert closed and time.monotonic() - t0 < 2.0
    s.close()
    assert svc.server.wait_open(0, 5.0)
    svc.assert_serves()
    assert [n["code"] for n in annotations(svc.close())] == [D.READ_TIMEOUT.code]


def test_an_idle_connection_closed_by_the_server_is_reopened(
    service: Callable[..., Service],
) -> None:
    svc = service(read_timeout_s=0.2)
    with svc.client() as c:
        c.ping()
        assert svc.server.wait_open(0, 5.0)  # the server closed it after 0.2 s idle
        assert torch.equal(c.infer(X).output, X * 2)
    assert annotations(svc.close()) == []  # an idle close is no violation


def test_clients_over_the_limit_are_told_busy(service: Callable[..., Service]) -> None:
    """Busy means every slot holds a request in progress: idle connections do not count."""
    entered, gate = threading.Event(), threading.Event()

    def slow(x: Any) -> Any:
        entered.set()
        assert gate.wait(10.0)
        return x * 2

    svc = service(slow, max_clients=1)
    first = raw(svc.path)
    first.sendall(infer_frame(rid=b"\x01" * 16))
    assert entered.wait(5.0)
    second = svc.client()
    with pytest.raises(ServiceBusy) as busy:
        second.ping()
    assert busy.value.code == D.SERVICE_BUSY.code
    assert isinstance(busy.value, ServiceUnreachable)
    gate.set()
    answer = read_frame(first)  # unharmed
    assert answer is not None and answer.type is P.FrameType.RESULT
    assert svc.server.wait_busy(0, 5.0)
    second.ping()  # reconnects: the first connection is idle now, and makes room
    assert read_frame(first) is None  # it was the one closed
    first.close()
    second.close()
    assert svc.server.statistics()["evicted"] == 1


def _closed(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets the server has closed (readable now, and at EOF)."""
    readable, _, _ = select.select(socks, [], [], 0)
    return [s for s in socks if s in readable and s.recv(1) == b""]


def test_idle_connections_never_lock_an_active_client_out(
    service: Callable[..., Service],
) -> None:
    """64 connections that never send a byte once held all 64 slots: every other client was
    told BUSY for read_timeout_s. Now a newcomer closes the connection idle the longest."""
    svc = service(read_timeout_s=30.0)
    squatters = [raw(svc.path) for _ in range(64)]
    assert svc.server.wait_open(64, 5.0)
    for _ in range(3):
        svc.assert_serves()
    stats = svc.server.statistics()
    assert stats["busy"] == 0 and 1 <= stats["evicted"] <= 3
    assert _closed(squatters) == squatters[: stats["evicted"]]  # the oldest first
    for s in squatters:
        s.close()
    assert svc.server.wait_open(0, 5.0)
    assert annotations(svc.close()) == []  # making room is no violation


def test_a_trickled_header_holds_no_slot(service: Callable[..., Service]) -> None:
    """Slowloris: connections that send a few header bytes, then nothing, are idle too."""
    svc = service(max_clients=2, read_timeout_s=30.0)
    trickling = [raw(svc.path) for _ in range(2)]
    for s in trickling:
        s.sendall(_GOOD[:5])
    assert svc.server.wait_open(2, 5.0)
    svc.assert_serves()
    assert _closed(trickling) == trickling[:1]
    assert svc.server.statistics()["evicted"] == 1
    for s in trickling:
        s.close()
    assert svc.server.wait_open(0, 5.0)
    notes = annotations(svc.close())  # the one left open was cut off mid-header by its client
    assert [(n["code"], n["reason"]) for n in notes] == [(D.FRAME_TRUNCATED.code, "header 5/32")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_trickled_body_makes_room_once_it_is_slow(service: Callable[..., Service]) -> None:
    """A whole header, then a body a few bytes at a time, once held its slot for the whole
    read timeout; now, the table full, a newcomer closes it (BUSY, DIA-7121)."""
    clock = FakeClock()
    refused: list[str] = []  # what vigil_refused_total{front="socket"} counts
    svc = service(max_clients=1, read_timeout_s=30.0, clock=clock, on_refused=refused.append)
    slow = raw(svc.path)
    head = P.HEADER.pack(P.MAGIC, 1, 1, 0, b"\x0e" * 16, 4096, 0)
    slow.sendall(head + bytes(10))
    assert svc.server.wait_busy(1, 5.0)
    with svc.client() as c, pytest.raises(ServiceBusy):  # in its grace: it keeps its slot
        c.ping()
    clock.now += 2.0  # 10 bytes in 2 s
    with svc.client() as c:
        c.ping()
    slow_body_error(slow, b"\x0e" * 16)
    slow.close()
    assert svc.server.wait_open(0, 5.0)
    stats = svc.server.statistics()
    assert (stats["evicted_slow"], stats["buffered_bytes"]) == (1, 0)
    codes = [n["code"] for n in annotations(svc.close())]
    assert codes == [D.SERVICE_BUSY.code, D.SLOW_BODY.code] == refused


# --- memory: what a client must send to make the server hold memory ---------------------

PROBE = str(Path(__file__).with_name("_buffer_probe.py"))


def test_a_header_alone_pins_no_body_buffer(short_dir: Path) -> None:
    """Four clients in turn announce 64 MiB and send 1 KiB: the server once allocated (and
    zeroed) each announced body at its header, so its peak RSS rose by 64 MiB; the buffer now
    grows with the bytes that arrive. Measured in a subprocess (VmHWM of the server's process,
    see tests/_buffer_probe.py), where nothing else allocates."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, PROBE, str(short_dir), "4", "64", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["after_kib"] - m["before_kib"] < 16 << 10, m  # was >= 64 MiB
    assert m["violations"] == 4 and m["buffered_bytes"] == 0  # all four read and dropped


def test_request_bytes_over_the_server_wide_budget_are_refused_busy(
    service: Callable[..., Service],
) -> None:
    """One request's body is held (its call is running); a second one grows its buffer past
    max_buffered_bytes and is refused BUSY (DIA-7120), the first is served, and the budget
    comes back once both are done."""
    entered, gate = threading.Event(), threading.Event()

    def slow(x: Any) -> Any:
        entered.set()
        assert gate.wait(10.0)
        return x[:1] * 2

    svc = service(slow, max_request_bytes=1 << 20, max_buffered_bytes=1 << 20)
    big = torch.ones(175_000)  # 700 000 bytes of body: held while its call runs
    a = raw(svc.path)
    a.sendall(infer_frame(big, rid=b"\x0a" * 16))
    assert entered.wait(5.0)
    held = svc.server.statistics()["buffered_bytes"]
    assert 700_000 <= held <= 700_100
    b = raw(svc.path)  # its buffer: 64 KiB, 128, 256, then 512 would pass the 1 MiB budget
    head = P.HEADER.pack(P.MAGIC, 1, 1, 0, b"\x0b" * 16, 700_000, 0)
    b.sendall(head + bytes(256 << 10))
    refused = read_frame(b)
    assert refused is not None and refused.request_id == b"\x0b" * 16
    info = P.decode_error(refused.body)
    assert (info.error_class, info.code, info.closing) == (
        P.ErrorClass.BUSY,
        D.BUFFER_BUDGET.code,
        True,
    )
    assert read_frame(b) is None
    b.close()
    gate.set()
    answer = read_frame(a)
    assert answer is not None and answer.type is P.FrameType.RESULT
    a.close()
    assert svc.server.wait_open(0, 5.0)
    stats = svc.server.statistics()
    assert (stats["buffered_bytes"], stats["over_budget"]) == (0, 1)
    svc.assert_serves()
    codes = [n["code"] for n in annotations(svc.close())]
    assert codes == [D.BUFFER_BUDGET.code]


def test_a_stalled_body_holding_the_budget_makes_room_for_a_request(
    service: Callable[..., Service],
) -> None:
    """A client sends half of a large body fast, then stalls: its buffer holds the whole
    budget. Every other request was refused BUSY (DIA-7120) until the read timeout, even with
    connections to spare; now, once the stalled body has had its grace, a request needing the
    bytes closes it (BUSY, DIA-7121) and is served."""
    clock = FakeClock()
    svc = service(
        max_request_bytes=4 << 20, max_buffered_bytes=4 << 20, read_timeout_s=30.0, clock=clock
    )
    stalled = raw(svc.path)
    head = P.HEADER.pack(P.MAGIC, 1, 1, 0, b"\x0e" * 16, 4 << 20, 0)
    stalled.sendall(head + bytes(2 << 20))  # 2 MiB in: its buffer doubles to 4 MiB, then waits
    assert svc.server.wait_buffered(4 << 20, 5.0)
    with svc.client() as c, pytest.raises(ServiceBusy) as busy:  # stalled 0 s: progressing
        c.infer(X)
    assert busy.value.code == D.BUFFER_BUDGET.code
    clock.now += 1.5  # 2 MiB in 1.5 s is over 1 MiB/s on average, but nothing for 1.5 s
    svc.assert_serves()
    assert "request memory was full" in slow_body_error(stalled, b"\x0e" * 16)
    stalled.close()
    assert svc.server.wait_open(0, 5.0)
    stats = svc.server.statistics()
    assert (stats["evicted_slow"], stats["over_budget"], stats["buffered_bytes"]) == (1, 1, 0)
    codes = [n["code"] for n in annotations(svc.close())]
    assert codes == [D.BUFFER_BUDGET.code, D.SLOW_BODY.code]


def test_violations_are_rate_limited_with_a_count_of_the_suppressed() -> None:
    class Log:
        def __init__(self) -> None:
            self.notes: list[dict[str, Any]] = []

        def annotate(self, key: str, text: str) -> None:
            assert key == "vigil.protocol"
            self.notes.append(json.loads(text))

    now = [100.0]
    log = Log()
    v = Violations(log, 3, lambda: now[0])
    peer = {"peer_pid": 1, "peer_uid": 0}
    results = [v.note(peer, "DIA-7103", f"r{i}") for i in range(10)]
    assert results == [True] * 3 + [False] * 7
    now[0] += 1.0
    assert v.note(peer, "DIA-7104", "later")
    assert [n["suppressed"] for n in log.notes] == [0, 0, 0, 7]
    assert (v.total, log.notes[-1]["code"], log.notes[0]["peer_pid"]) == (11, "DIA-7104", 1)


def test_a_flood_of_bad_frames_cannot_fill_the_log(service: Callable[..., Service]) -> None:
    svc = service(violations_per_s=5)
    for _ in range(40):
        s = raw(svc.path)
        s.sendall(b"junkjunkjunkjunkjunkjunkjunkjunk")
        assert read_frame(s) is not None
        s.close()
    assert svc.server.wait_open(0, 5.0)
    svc.assert_serves()
    notes = annotations(svc.close())
    assert 5 <= len(notes) <= 10 and svc.server.statistics()["violations"] == 40


# --- the socket file and shutdown ------------------------------------------------------


def test_the_socket_file_is_guarded(service: Callable[..., Service], short_dir: Path) -> None:
    svc = service()
    assert stat.S_IMODE(os.stat(svc.path).st_mode) == 0o660
    with pytest.raises(ServiceConfigError, match="another server"):
        SocketServer(svc.sup, svc.path).start()
    regular = short_dir / "file"
    regular.write_text("keep me")
    with pytest.raises(ServiceConfigError, match="not a socket"):
        SocketServer(svc.sup, regular).start()
    assert regular.read_text() == "keep me"
    stale = short_dir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()  # a socket file nobody listens on
    server = SocketServer(svc.sup, stale)
    server.start()
    with Client(stale) as c:
        assert torch.equal(c.infer(X).output, X * 2)
    assert server.stop(1.0) == 0
    assert not stale.exists()
    with pytest.raises(ServiceUnreachable):
        Client(stale)


def test_stop_lets_a_call_in_flight_finish(service: Callable[..., Service]) -> None:
    entered, stopping = threading.Event(), threading.Event()

    def slow(x: Any) -> Any:
        entered.set()
        assert stopping.wait(10.0)
        return x * 2

    svc = service(slow)
    got: list[Any] = []
    c = svc.client()
    t = threading.Thread(target=lambda: got.append(c.infer(X)))
    t.start()
    assert entered.wait(5.0)
    stopping.set()
    assert svc.server.stop(5.0) == 0
    t.join(5.0)
    assert len(got) == 1 and torch.equal(got[0].output, X * 2)
    assert not os.path.exists(svc.path)
    with pytest.raises(ServiceUnreachable):
        c.ping()


def test_stop_reports_calls_still_in_flight(service: Callable[..., Service]) -> None:
    entered, gate = threading.Event(), threading.Event()

    def hung(x: Any) -> Any:
        entered.set()
        assert gate.wait(10.0)
        return x * 2

    svc = service(hung)
    errors: list[BaseException] = []
    c = svc.client()

    def call() -> None:
        try:
            c.infer(X, request_id=b"\x09" * 16)
        except ServiceUnreachable as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert entered.wait(5.0)
    assert svc.server.stop(0.1) == 1
    gate.set()
    assert svc.server.wait_idle(5.0)
    t.join(5.0)
    assert len(errors) == 1
    assert [r.body["request_id"] for r in inferences(svc.close())] == [b"\x09" * 16]


# --- many client processes -------------------------------------------------------------

_CLIENT = """
import sys, torch
from vigil.service._client import Client
path, who, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Client(path, timeout_s=20) as c:
    for i in range(n):
        rid = bytes([who]) * 8 + i.to_bytes(8, "little")
        r = c.infer(torch.full((1, 4), float(i)), request_id=rid)
        assert r.request_id == rid and torch.equal(r.output, torch.full((1, 4), 2.0 * i))
print("ok", n)
"""

# An independent client written from docs/PROTOCOL.md alone: stdlib and crc32c, no torch, no
# vigil (and it starts in milliseconds, so four of them fit the default suite).
_STDLIB_CLIENT = """
import socket, struct, sys
from crc32c import crc32c
path, who, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
HEADER = struct.Struct("<4sBBH16sII")

def frame(ftype, rid, body):
    head = HEADER.pack(b"VGLP", 1, ftype, 0, rid, len(body), 0)[:28]
    return head + struct.pack("<I", crc32c(head + body)) + body

def exactly(s, k):
    data = b""
    while len(data) < k:
        chunk = s.recv(k - len(data))
        assert chunk, "closed"
        data += chunk
    return data

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(path)
for i in range(n):
    rid = bytes([who]) * 8 + i.to_bytes(8, "little")
    meta = struct.pack("<BBHB", 0, 0, 1, 0) + struct.pack("<BB", 1, 2)
    meta += struct.pack("<2Q", 1, 4) + struct.pack("<Q", 16)
    body = meta + bytes(-len(meta) % 8) + struct.pack("<4f", *[float(i)] * 4)
    s.sendall(frame(1, rid, body))
    head = exactly(s, 32)
    magic, version, ftype, flags, got_rid, length, crc = HEADER.unpack(head)
    body = exactly(s, length)
    assert (magic, version, ftype, got_rid) == (b"VGLP", 1, 2, rid), (ftype, body)
    assert crc32c(head[:28] + body) == crc
    served, state, outcome, code_n, seq, age, latency = struct.unpack_from("<BBBBQQQ", body)
    assert (served, state, outcome, code_n) == (1, 1, 0, 0) and seq > 0
    pos = 28 + code_n
    (reason_n,) = struct.unpack_from("<I", body, pos)
    pos += 4 + reason_n
    kind, _, count = struct.unpack_from("<BBH", body, pos)
    name_n = body[pos + 4]
    pos += 5 + name_n
    dtype, ndim = struct.unpack_from("<BB", body, pos)
    shape = struct.unpack_from(f"<{ndim}Q", body, pos + 2)
    pos += 2 + 8 * ndim
    (nbytes,) = struct.unpack_from("<Q", body, pos)
    pos += 8
    pos += -pos % 8
    values = struct.unpack_from("<4f", body, pos)
    assert (kind, count, dtype, shape, nbytes) == (0, 1, 1, (1, 4), 16)
    assert values == (2.0 * i,) * 4 and pos + nbytes == len(body)
s.close()
print("ok", n)
"""


def _run_clients(svc: Service, script: str, per_client: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, svc.path, str(who), str(per_client)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in range(1, 5)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == f"ok {per_client}"
    assert svc.server.statistics()["requests"] == 4 * per_client
    ids = [r.body["request_id"] for r in inferences(svc.close())]
    expected = {
        bytes([w]) * 8 + i.to_bytes(8, "little") for w in range(1, 5) for i in range(per_client)
    }
    assert len(ids) == 4 * per_client and set(ids) == expected


def test_four_independent_client_processes_each_answered_and_recorded_once(
    service: Callable[..., Service],
) -> None:
    _run_clients(service(), _STDLIB_CLIENT, 50)


@pytest.mark.slow
def test_four_vigil_client_processes_each_answered_and_recorded_once(
    service: Callable[..., Service],
) -> None:
    _run_clients(service(fallback=Constant(torch.zeros(1, 4))), _CLIENT, 50)


def test_four_client_threads_share_the_service(service: Callable[..., Service]) -> None:
    svc = service()
    failures: list[BaseException] = []

    def work(who: int) -> None:
        try:
            with svc.client() as c:
                for i in range(50):
                    r = c.infer(torch.full((1, 4), float(i)))
                    assert torch.equal(r.output, torch.full((1, 4), 2.0 * i))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30.0)
    assert failures == [] and svc.server.statistics()["requests"] == 200
    assert len(inferences(svc.close())) == 200
