"""The metrics/health HTTP endpoint against bad TCP clients: idle ones are closed after the
socket timeout, threads stay bounded, and a client reset is one counted line, no traceback."""

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


class _Metrics:
    def generate(self) -> bytes:
        return b"# nothing\n"


def _health() -> Health:
    raise RuntimeError("no verdict in this test")  # 503, fail closed: enough to answer


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[HealthServer] = []

    def build(**kw: Any) -> HealthServer:
        srv = HealthServer("127.0.0.1", 0, _Metrics(), _health, **kw)  # type: ignore[arg-type]
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
    assert _closed_within(s, 5.0)  # was: held open (and its thread) for ever
    s.close()
    half = _connect(srv)
    half.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the end of the headers
    assert _closed_within(half, 5.0)
    half.close()
    assert srv._server.wait_for(lambda st: st["active"] == 0, 5.0)
    assert _get(srv, "/healthz") == 503


def test_connections_over_the_thread_cap_get_503_and_threads_stay_bounded(make: Any) -> None:
    srv = make(timeout_s=30.0, max_threads=4)
    before = set(threading.enumerate())
    baseline = len(before)
    idle = [_connect(srv) for _ in range(4)]
    assert srv._server.wait_for(lambda st: st["active"] == 4, 5.0)
    extra = [_connect(srv) for _ in range(96)]  # 100 idle TCP connections in all
    for s in extra:
        s.settimeout(5.0)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ")
        s.close()
    stats = srv._server.statistics()
    assert (stats["active"], stats["refused"]) == (4, 96)
    assert threading.active_count() <= baseline + 4
    for s in idle:
        s.close()
    assert srv._server.wait_for(lambda st: st["active"] == 0, 5.0)
    assert _get(srv, "/healthz") == 503 and _get(srv, "/nope") == 404
    assert srv._server.wait_for(lambda st: st["active"] == 0, 5.0)
    for t in set(threading.enumerate()) - before:  # a handler's thread leaves after its slot
        t.join(5.0)
    assert threading.active_count() <= baseline  # every handler thread is gone


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
        assert srv._server.wait_for(lambda st: st["handled"] == 3, 5.0)
    err = capfd.readouterr().err
    assert "Traceback" not in err
    stats = srv._server.statistics()
    assert (stats["client_errors"], stats["errors"]) == (3, 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "vigil.http"]
    assert len(lines) == 1  # three resets within a second: one line
    assert "client connection error" in lines[0] and "ConnectionResetError" in lines[0]
    assert "\n" not in lines[0]
    assert _get(srv, "/healthz") == 503  # serves on
