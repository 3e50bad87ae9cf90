"""A small HTTP server for the metrics and health endpoints that bad clients cannot exhaust.

Theory of operation
-------------------
``http.server.ThreadingHTTPServer`` starts one thread per connection, without limit, and its
sockets have no timeout: a hundred idle TCP connections hold a hundred threads for ever, and a
client that resets its connection early makes ``socketserver`` print a traceback. Here:

* every connection's socket has a timeout (``timeout_s``): a client silent that long, in its
  request or on a kept-alive connection, is closed;
* a connection is *waiting* until a whole request (request line and headers) has arrived --
  a new one, an idle kept-alive one, or one trickling its request a byte at a time (each byte
  restarts the socket timeout, so the timeout alone never closes it) -- and *working* from
  then until its answer is written;
* at most ``max_threads`` connections are handled at once. When all are taken, a new one
  evicts the connection that has been waiting the longest (its socket is shut down, so its
  handler's blocked read returns at once and its thread leaves; counted ``evicted``) and is
  admitted; only when every one is working is the newcomer answered ``503`` at once (a few
  bytes, never blocking the accept loop), closed and counted ``refused``. So clients that
  never finish a request cannot lock a probe out. Handler threads stay bounded: an evicted
  one is counted until it has left, and at most ``2 * max_threads`` exist at once;
* a connection error (reset, broken pipe, timeout) is counted and written as one line, at most
  one a second (the line says how many more there were); any other failure of a handler is one
  line too, never a traceback.

:meth:`BoundedHTTPServer.statistics` returns the counters; :meth:`wait_for` lets a test wait on
them without sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vigil.errors import InvalidArgument

_LOG = logging.getLogger("vigil.http")
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 25\r\n"
    b"Connection: close\r\n\r\ntoo many connections; retry\n"
)


class _Tracked(BaseHTTPRequestHandler):
    """Tells its server when the connection waits for a request and when it has one."""

    server: BoundedHTTPServer

    def handle_one_request(self) -> None:
        self.server._waiting(self.connection)
        super().handle_one_request()

    def parse_request(self) -> bool:
        try:
            return super().parse_request()  # reads the headers: the request is in
        finally:
            self.server._working(self.connection)


class BoundedHTTPServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` with socket timeouts, a thread cap and quiet errors.

    Args:
        address: (host, port) to bind; port 0 picks a free one.
        handler: the request handler class (its ``timeout`` is set to ``timeout_s``).
        timeout_s: the longest a connection may stay silent, or stall a response.
        max_threads: connections handled at once; one more evicts the connection waiting the
            longest for its request, or, when every one is working on a request, is answered
            503 and closed.

    Raises:
        OSError: the address cannot be bound.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's 5 drops SYNs (1 s retries) under a burst

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        timeout_s: float = 10.0,
        max_threads: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0 or max_threads < 1:
            raise InvalidArgument(
                f"timeout_s={timeout_s}, max_threads={max_threads}: both must be > 0"
            )
        timed: type[BaseHTTPRequestHandler] = type(
            handler.__name__, (_Tracked, handler), {"timeout": timeout_s}
        )
        super().__init__(address, timed)
        self.max_threads = max_threads
        self._clock = clock
        self._cond = threading.Condition()
        self._counts = {
            "accepted": 0,
            "handled": 0,
            "refused": 0,
            "evicted": 0,
            "client_errors": 0,
            "errors": 0,
        }
        self._active = 0  # handler threads, evicted ones included until they leave
        # admitted connections not evicted: since when each waits for a request (None: working)
        self._waits: dict[socket.socket, float | None] = {}
        self._logged_at = -1.0e9
        self._unlogged = 0

    def statistics(self) -> dict[str, int]:
        """Connections accepted, handled (finished), refused (503: every slot working),
        evicted (closed while waiting for a request, to admit a newcomer), client errors
        (resets, broken pipes, timeouts), other errors; and now: ``active`` handler threads,
        ``waiting`` connections (waiting for a request)."""
        with self._cond:
            return self._statistics()

    def _statistics(self) -> dict[str, int]:
        waiting = sum(since is not None for since in self._waits.values())
        return {**self._counts, "active": self._active, "waiting": waiting}

    def wait_for(self, predicate: Callable[[dict[str, int]], bool], timeout: float) -> bool:
        """Block until ``predicate(statistics())`` holds; False when ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._statistics()), timeout)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._cond:
            admitted = self._active < 2 * self.max_threads and self._make_room()
            self._counts["accepted" if admitted else "refused"] += 1
            if admitted:
                self._active += 1
                self._waits[request] = self._clock()
            self._cond.notify_all()
        if not admitted:
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: give its slot back
            self._finished(request)
            raise

    def _make_room(self) -> bool:
        """Under the lock: True when one more connection fits, after evicting the one waiting
        the longest for its request if ``max_threads`` are taken; False: all are working."""
        if len(self._waits) < self.max_threads:
            return True
        waiting = [
            (since, n, c) for n, (c, since) in enumerate(self._waits.items()) if since is not None
        ]
        if not waiting:
            return False
        victim = min(waiting)[2]
        del self._waits[victim]
        self._counts["evicted"] += 1
        with contextlib.suppress(OSError):  # its handler's read returns: its thread leaves
            victim.shutdown(socket.SHUT_RDWR)
        return True

    def _waiting(self, conn: socket.socket) -> None:
        """The handler waits for its connection's next request (from now, if it was working)."""
        with self._cond:
            if conn in self._waits and self._waits[conn] is None:
                self._waits[conn] = self._clock()
                self._cond.notify_all()

    def _working(self, conn: socket.socket) -> None:
        """A whole request arrived on ``conn``: never evicted until it is answered."""
        with self._cond:
            if conn in self._waits:
                self._waits[conn] = None
                self._cond.notify_all()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._finished(request)

    def _finished(self, request: Any) -> None:
        with self._cond:
            self._active -= 1
            self._waits.pop(request, None)
            self._counts["handled"] += 1
            self._cond.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, no traceback: a client that resets or stalls is routine on a network."""
        exc = sys.exc_info()[1]
        client = isinstance(exc, ConnectionError | TimeoutError | socket.timeout)
        with self._cond:
            self._counts["client_errors" if client else "errors"] += 1
            now = self._clock()
            if client and now - self._logged_at < 1.0:
                self._unlogged += 1
                return
            more, self._unlogged = self._unlogged, 0
            if client:
                self._logged_at = now
        peer = client_address[0] if isinstance(client_address, tuple) else client_address
        what = "client connection error" if client else "request handler failed"
        suffix = f" ({more} more client errors in the last second)" if more else ""
        _LOG.warning(
            "vigil http: %s from %s: %s: %s%s", what, peer, type(exc).__name__, exc, suffix
        )
