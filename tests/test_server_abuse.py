"""A battery of bad sockets against the service: half-open connections, resets mid-frame,
byte-by-byte headers and a crowd mixing good and bad frames. Good clients are served
throughout, and once everyone has gone the server holds no thread, descriptor or buffer."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from test_server import (  # the fixtures and raw-socket helpers of the socket tests
    _GOOD,
    Service,
    annotations,
    infer_frame,
    raw,
    read_frame,
    service,
    short_dir,
    with_crc,
)

from vigil import _diagnostics as D
from vigil.errors import ProtocolError, ServiceUnreachable
from vigil.service import _protocol as P
from vigil.service._client import Client

__all__ = ["service", "short_dir"]  # fixtures, re-exported for pytest


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) rather than a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _settled(svc: Service, threads: int, fds: int) -> None:
    """Every connection is closed and the server is back where it started."""
    assert svc.server.wait_open(0, 10.0)
    assert svc.server.wait_busy(0, 10.0)
    stats = svc.server.statistics()
    assert (stats["in_flight"], stats["buffered_bytes"], stats["active"]) == (0, 0, 0)
    for t in threading.enumerate():  # a connection's thread leaves just after its slot
        if t.name == "vigil-conn":
            t.join(10.0)
    assert threading.active_count() == threads
    assert _fds() == fds


def test_half_open_connections_are_answered_then_closed(service: Callable[..., Service]) -> None:
    svc = service()
    threads, fds = threading.active_count(), _fds()
    whole = raw(svc.path)  # a whole request, then SHUT_WR: answered, then EOF
    whole.sendall(infer_frame(rid=b"\x05" * 16))
    whole.shutdown(socket.SHUT_WR)
    answer = read_frame(whole)
    assert answer is not None and answer.type is P.FrameType.RESULT
    assert read_frame(whole) is None
    half = raw(svc.path)  # a header only, then SHUT_WR: dropped, recorded truncated
    half.sendall(_GOOD[: P.HEADER_SIZE])
    half.shutdown(socket.SHUT_WR)
    assert read_frame(half) is None
    for s in (whole, half):
        s.close()
    svc.assert_serves()
    _settled(svc, threads, fds)
    codes = [n["code"] for n in annotations(svc.close())]
    assert codes == [D.FRAME_TRUNCATED.code]


@pytest.mark.parametrize("cut", [1, P.HEADER_SIZE - 1, P.HEADER_SIZE, len(_GOOD) - 1])
def test_a_reset_mid_frame_costs_nothing(service: Callable[..., Service], cut: int) -> None:
    svc = service()
    threads, fds = threading.active_count(), _fds()
    for _ in range(5):
        s = raw(svc.path)
        s.sendall(_GOOD[:cut])
        _reset(s)
    svc.assert_serves()
    _settled(svc, threads, fds)
    notes = annotations(svc.close())
    assert {n["code"] for n in notes} <= {D.FRAME_TRUNCATED.code}  # a reset may beat the read


def test_byte_by_byte_headers_do_not_starve_good_clients(service: Callable[..., Service]) -> None:
    svc = service(max_clients=8, read_timeout_s=30.0)
    threads, fds = threading.active_count(), _fds()
    slow = [raw(svc.path) for _ in range(8)]  # the whole table, each a byte into its header
    for i in range(P.HEADER_SIZE - 1):
        for s in slow:
            with contextlib.suppress(OSError):  # evicted to make room for a good client
                s.sendall(_GOOD[i : i + 1])
        if i % 8 == 0:
            svc.assert_serves()  # each good client evicts one trickler
    for s in slow:
        s.close()
    _settled(svc, threads, fds)
    assert svc.server.statistics()["busy"] == 0


def test_a_crowd_of_good_and_bad_clients(service: Callable[..., Service]) -> None:
    svc = service(max_clients=16, max_request_bytes=1 << 16)
    threads, fds = threading.active_count(), _fds()
    bad_frames = [
        b"GET / HTTP/1.1\r\n\r\n" + bytes(14),  # bad magic
        _GOOD[:-1] + bytes([_GOOD[-1] ^ 1]),  # bad CRC
        P.HEADER.pack(P.MAGIC, 1, 1, 0, bytes(16), 1 << 20, 0),  # over max_request_bytes
        with_crc(P.HEADER.pack(P.MAGIC, 1, 1, 0, bytes(16), 4, 0), b"\x00\x00\x05\x00"),
    ]
    errors: list[BaseException] = []
    served = [0]
    lock = threading.Lock()

    def good(n: int) -> None:
        try:
            with svc.client() as c:
                for i in range(10):
                    x = torch.full((1, 4), float(n * 100 + i))
                    r = c.infer(x)
                    assert torch.equal(r.output, x * 2)
                    with lock:
                        served[0] += 1
        except BaseException as exc:
            errors.append(exc)

    def bad(n: int) -> None:
        try:
            for i in range(10):
                s = raw(svc.path)
                kind = (n + i) % 6
                if kind < len(bad_frames):
                    s.sendall(bad_frames[kind])
                    frame = read_frame(s)  # an ERROR frame (or a closed connection)
                    assert frame is None or frame.type is P.FrameType.ERROR
                    s.close()
                elif kind == 4:
                    s.sendall(_GOOD[:40])
                    _reset(s)
                else:
                    s.close()  # connected, said nothing
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=good, args=(n,)) for n in range(4)]
    workers += [threading.Thread(target=bad, args=(n,)) for n in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60.0)
    assert not errors, errors
    assert served[0] == 40
    _settled(svc, threads, fds)
    records = svc.close()
    assert sum(1 for r in records if r.type.name == "INFERENCE") == 40


@contextlib.contextmanager
def rogue_server(
    short_dir: Path, answer: bytes, *, hold: bool = True
) -> Iterator[tuple[str, threading.Thread]]:
    """Something else on the socket path: it reads one PING, sends ``answer`` and, with
    ``hold``, waits for the client to hang up (else closes at once). Yields the path and its
    thread (joined on exit)."""
    path = str(short_dir / "rogue.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def rogue() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(P.HEADER_SIZE)  # the PING
            with contextlib.suppress(OSError):
                conn.sendall(answer)
                if hold:
                    conn.recv(1)  # until the client hangs up

    t = threading.Thread(target=rogue)
    t.start()
    try:
        yield path, t
    finally:
        t.join(10.0)
        listener.close()


def test_a_client_allocates_only_what_a_rogue_server_sends(short_dir: Path) -> None:
    """Something else on the socket path answers with a header announcing 256 MiB and sends
    1 KiB: the client once allocated (and zeroed) the whole announced body."""
    head = P.HEADER.pack(P.MAGIC, 1, int(P.FrameType.PONG), 0, bytes(16), 256 << 20, 0)
    with rogue_server(short_dir, head + bytes(1024), hold=False) as (path, _):
        tracemalloc.start()
        try:
            with Client(path, timeout_s=10.0) as c, pytest.raises(ServiceUnreachable) as lost:
                c.ping()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert "1024/268435456 bytes" in lost.value.message
    assert peak < 4 << 20, peak  # was 256 MiB


def test_a_client_refuses_a_pong_with_a_body(short_dir: Path) -> None:
    """PONG has no body (docs/PROTOCOL.md); a PING with one is refused by the service
    (DIA-7109), and the client once read and ignored a rogue PONG's 1 KiB."""
    pong = b"".join(P.encode_frame(P.FrameType.PONG, P.ZERO_ID, [bytes(1024)]))
    with rogue_server(short_dir, pong) as (path, t), Client(path, timeout_s=10.0) as c:
        with pytest.raises(ProtocolError) as bad:
            c.ping()
        assert bad.value.code == D.BODY_MALFORMED.code
        assert "1024 body bytes" in bad.value.message
    assert not t.is_alive()  # the client dropped the connection: the rogue saw EOF


def test_a_codec_failure_is_one_server_fault_answer(
    service: Callable[..., Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever escapes the payload decoder (a bug, a torch failure) costs one answer with a
    code, never the connection's thread."""
    svc = service()
    real = P.decode_tensors
    calls = [0]

    def flaky(body: P.Buffer, offset: int = 0) -> object:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("Stride calculation overflowed")
        return real(body, offset)

    monkeypatch.setattr(P, "decode_tensors", flaky)
    s = raw(svc.path)
    s.sendall(infer_frame(rid=b"\x0c" * 16) + infer_frame(rid=b"\x0d" * 16))
    fault, good = read_frame(s), read_frame(s)
    assert fault is not None and good is not None
    info = P.decode_error(fault.body)
    assert (info.error_class, info.code, info.closing) == (
        P.ErrorClass.SERVER,
        D.SERVER_FAULT.code,
        False,
    )
    assert "Stride calculation overflowed" in info.message
    assert good.type is P.FrameType.RESULT and good.request_id == b"\x0d" * 16
    s.close()
