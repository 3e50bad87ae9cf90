"""The metrics/health HTTP endpoint against bad TCP clients: idle ones are closed after the
socket timeout, ones that never finish a request make room for a newcomer, threads stay
bounded, and a client reset is one counted line, no traceback."""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from vigil.service._metrics import Health, HealthServer

WAIT_S = 30.0  # an upper bound on waits that end as soon as their condition holds (loaded CI)
KEEP_ALIVE_GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


class _Metrics:
    def generate(self) -> bytes:
        return b"# nothing\n"


def _health() -> Health:
    raise RuntimeError("no verdict in this test")  # 503, fail closed: enough to answer


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[HealthServer] = []

    def build(health_fn: Any = _health, **kw: Any) -> HealthServer:
        srv = HealthServer("127.0.0.1", 0, _Metrics(), health_fn, **kw)  # type: ignore[arg-type]
        made.append(srv)
        return srv

    yield build
    for srv in made:
        srv.close()


def _connect(srv: HealthServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=5.0)


def _closed_within(s: socket.socket, seconds: float) -> bool:
    readable, _, _ = select.select([s], [], [], seconds)
    return bool(readable) and s.recv(4096) == b""


def _get(srv: HealthServer, path: str) -> int:
    try:
        with urllib.request.urlopen(srv.url + path, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code)


def test_an_idle_connection_is_closed_after_the_socket_timeout(make: Any) -> None:
    srv = make(timeout_s=0.2)
    s = _connect(srv)
    assert _closed_within(s, WAIT_S)  # was: held open (and its thread) for ever
    s.close()
    half = _connect(srv)
    half.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the end of the headers
    assert _closed_within(half, WAIT_S)
    half.close()
    assert srv._server.wait_for(lambda st: st["active"] == 0, WAIT_S)
    assert _get(srv, "/healthz") == 503


def _read_all(s: socket.socket) -> bytes:
    s.settimeout(5.0)
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    return answer


def _read_response(s: socket.socket) -> bytes:
    """One HTTP response with a Content-Length, the connection left open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, "EOF inside the headers"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        chunk = s.recv(4096)
        assert chunk, "EOF inside the body"
        body += chunk
    return head


def test_connections_over_the_thread_cap_get_503_and_threads_stay_bounded(make: Any) -> None:
    """Every slot is working on a request (the health check blocks): a newcomer gets 503."""
    entered, gate = threading.Semaphore(0), threading.Event()

    def blocked() -> Health:
        entered.release()
        assert gate.wait(10.0)
        return _health()

    srv = make(health_fn=blocked, timeout_s=30.0, max_threads=4)
    before = set(threading.enumerate())
    baseline = len(before)
    working = [_connect(srv) for _ in range(4)]
    for s in working:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    for _ in working:
        assert entered.acquire(timeout=5.0)
    extra = [_connect(srv) for _ in range(96)]  # 100 TCP connections in all
    for s in extra:
        assert _read_all(s).startswith(b"HTTP/1.1 503 ")
        s.close()
    stats = srv._server.statistics()
    assert (stats["active"], stats["refused"], stats["evicted"]) == (4, 96, 0)
    assert threading.active_count() <= baseline + 4
    gate.set()
    for s in working:  # each answered (503: this health check fails closed), then closed
        assert _read_all(s).startswith(b"HTTP/1.1 503 Service Unavailable")
        s.close()
    assert srv._server.wait_for(lambda st: st["active"] == 0, WAIT_S)
    assert _get(srv, "/healthz") == 503 and _get(srv, "/nope") == 404
    assert srv._server.wait_for(lambda st: st["active"] == 0, WAIT_S)
    for t in set(threading.enumerate()) - before:  # a handler's thread leaves after its slot
        t.join(5.0)
    assert threading.active_count() <= baseline  # every handler thread is gone


def test_a_connection_waiting_for_its_request_makes_room_for_a_newcomer(make: Any) -> None:
    """Slowloris: clients that trickle a request line (each byte restarts the socket timeout)
    once held every slot, and every probe got 503 for as long as they trickled. Now a
    newcomer evicts the connection waiting the longest for its request: a trickler, or an
    idle kept-alive connection."""
    srv = make(timeout_s=30.0, max_threads=2)
    trickler = _connect(srv)
    trickler.sendall(b"GET /metr")
    assert srv._server.wait_for(lambda st: st["waiting"] == 1, WAIT_S)
    kept = _connect(srv)
    kept.sendall(KEEP_ALIVE_GET)
    assert _read_response(kept).startswith(b"HTTP/1.1 200 ")
    assert srv._server.wait_for(lambda st: st["waiting"] == 2, WAIT_S)  # kept-alive, waiting
    assert _get(srv, "/metrics") == 200  # was: 503, too many connections
    assert _closed_within(trickler, WAIT_S)  # waiting since it connected: the longest
    trickler.close()
    assert srv._server.wait_for(lambda st: st["active"] == 1, WAIT_S)  # it and urllib's are gone
    trickler = _connect(srv)
    trickler.sendall(b"GET /metr")
    assert srv._server.wait_for(lambda st: st["waiting"] == 2, WAIT_S)
    assert _get(srv, "/metrics") == 200
    assert _closed_within(kept, WAIT_S)  # waiting since its answer: longer than the new trickler
    stats = srv._server.statistics()
    assert (stats["evicted"], stats["refused"]) == (2, 0)
    trickler.sendall(b"ics HTTP/1.1\r\nHost: x\r\n\r\n")  # the survivor is served
    assert _read_response(trickler).startswith(b"HTTP/1.1 200 ")
    trickler.close()
    kept.close()
    assert srv._server.wait_for(lambda st: st["active"] == 0, WAIT_S)


def test_evictions_keep_the_handler_threads_bounded(make: Any) -> None:
    srv = make(timeout_s=30.0, max_threads=4)
    before = set(threading.enumerate())
    peak = [0]

    def settled(st: dict[str, int]) -> bool:
        peak[0] = max(peak[0], st["active"])
        return (st["accepted"], st["evicted"], st["active"]) == (40, 36, 4)

    silent = [_connect(srv) for _ in range(40)]  # each evicts the oldest once 4 are in
    assert srv._server.wait_for(settled, WAIT_S)
    assert peak[0] <= 8  # an evicted handler counts until it has left: 2 x max_threads
    assert all(_closed_within(s, WAIT_S) for s in silent[:36])
    assert _get(srv, "/metrics") == 200
    for s in silent:
        s.close()
    assert srv._server.wait_for(lambda st: st["active"] == 0, WAIT_S)
    assert srv._server.statistics()["refused"] == 0
    for t in set(threading.enumerate()) - before:  # every handler thread leaves
        t.join(5.0)
        assert not t.is_alive()


def test_a_client_reset_is_counted_in_one_line_without_a_traceback(
    make: Any, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    srv = make(timeout_s=5.0)
    with caplog.at_level(logging.WARNING, logger="vigil.http"):
        for _ in range(3):
            s = _connect(srv)
            s.sendall(b"GET /metr")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST: the handler's read fails with ECONNRESET
        assert srv._server.wait_for(lambda st: st["handled"] == 3, WAIT_S)
    err = capfd.readouterr().err
    assert "Traceback" not in err
    stats = srv._server.statistics()
    assert (stats["client_errors"], stats["errors"]) == (3, 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "vigil.http"]
    assert len(lines) == 1  # three resets within a second: one line
    assert "client connection error" in lines[0] and "ConnectionResetError" in lines[0]
    assert "\n" not in lines[0]
    assert _get(srv, "/healthz") == 503  # serves on
