"""The service socket's per-connection I/O helpers: sending frames, receiving into a buffer
by a deadline, the peer's credentials, the rate-limited record of protocol violations, and the
ERROR frame for an exception (used by :mod:`._server`)."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from vigil import _diagnostics as D
from vigil.errors import InvalidInput, Unavailable, VigilError
from vigil.service import _protocol as P
from vigil.supervisor._tensors import describe

_SMALL_SEND = 64 << 10  # below this a frame is joined and sent in one syscall


class Violations:
    """Records protocol violations in the flight log, at most ``per_s`` a second."""

    def __init__(self, log: Any, per_s: int, clock: Callable[[], float]) -> None:
        self._log = log
        self._per_s = per_s
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1.0
        self._in_window = 0
        self.suppressed = 0
        self.total = 0

    def note(self, peer: dict[str, int | None], code: str, reason: str) -> bool:
        """Record one violation; False when it was only counted (rate limit)."""
        with self._lock:
            self.total += 1
            now = self._clock()
            if now - self._window >= 1.0:
                self._window, self._in_window = now, 0
            if self._in_window >= self._per_s:
                self.suppressed += 1
                return False
            self._in_window += 1
            suppressed, self.suppressed = self.suppressed, 0
        text = json.dumps(
            {**peer, "code": code, "reason": reason[:500], "suppressed": suppressed},
            sort_keys=True,
            separators=(",", ":"),
        )
        with contextlib.suppress(Exception):  # a closed or full log must not stop the service
            self._log.annotate("vigil.protocol", text)
        return True


def peer_of(conn: socket.socket) -> dict[str, int | None]:
    """The peer's pid and uid from SO_PEERCRED (Linux), else None."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid, uid, _ = struct.unpack("3i", raw)
    except (AttributeError, OSError, struct.error):
        return {"peer_pid": None, "peer_uid": None}
    return {"peer_pid": pid, "peer_uid": uid}


def send(conn: socket.socket, buffers: list[P.Buffer]) -> None:
    total = sum(memoryview(b).nbytes for b in buffers)
    if total <= _SMALL_SEND:
        conn.sendall(b"".join(buffers))
    else:
        for b in buffers:
            conn.sendall(b)


def recv_into(conn: socket.socket, view: memoryview, deadline: float) -> int:
    """Fill ``view`` by ``deadline`` (monotonic seconds: a client trickling a byte at a time
    gets no more time than a silent one); returns how many bytes arrived before EOF
    (``len(view)`` if all). Raises TimeoutError."""
    got = 0
    while got < len(view):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        n = conn.recv_into(view[got:])
        if n == 0:
            return got
        got += n
    return got


def error_frame(exc: Exception, rid: bytes) -> list[P.Buffer]:
    """The ERROR frame for an exception ``infer`` raised."""
    if isinstance(exc, InvalidInput):
        cls = P.ErrorClass.INVALID_INPUT
        detail = {"field": exc.context.get("field"), "rule": exc.context.get("rule")}
    elif isinstance(exc, Unavailable):
        cls = P.ErrorClass.UNAVAILABLE
        state = exc.context.get("state")
        detail = {"reason": exc.context.get("reason"), "state": getattr(state, "name", state)}
    else:
        cls, detail = P.ErrorClass.SERVER, {"type": type(exc).__name__}
    if isinstance(exc, VigilError):
        code, message = exc.code, exc.message
    else:
        code, message = D.SERVER_FAULT.code, describe(exc, 1000)
    return P.encode_frame(P.FrameType.ERROR, rid, P.encode_error(cls, code, message, detail=detail))
