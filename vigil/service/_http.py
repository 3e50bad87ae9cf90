"""A small HTTP server for the metrics and health endpoints that bad clients cannot exhaust.

Theory of operation
-------------------
``http.server.ThreadingHTTPServer`` starts one thread per connection, without limit, and its
sockets have no timeout: a hundred idle TCP connections hold a hundred threads for ever, and a
client that resets its connection early makes ``socketserver`` print a traceback. Here:

* every connection's socket has a timeout (``timeout_s``): a client silent that long, in its
  request or on a kept-alive connection, is closed;
* at most ``max_threads`` connections are handled at once; one more is answered ``503`` at
  once (a few bytes, never blocking the accept loop) and closed, and counted;
* a connection error (reset, broken pipe, timeout) is counted and written as one line, at most
  one a second (the line says how many more there were); any other failure of a handler is one
  line too, never a traceback.

:meth:`BoundedHTTPServer.statistics` returns the counters; :meth:`wait_for` lets a test wait on
them without sleeping.
"""

from __future__ import annotations

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


class BoundedHTTPServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` with socket timeouts, a thread cap and quiet errors.

    Args:
        address: (host, port) to bind; port 0 picks a free one.
        handler: the request handler class (its ``timeout`` is set to ``timeout_s``).
        timeout_s: the longest a connection may stay silent, or stall a response.
        max_threads: connections handled at once; more are answered 503 and closed.

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
            handler.__name__, (handler,), {"timeout": timeout_s}
        )
        super().__init__(address, timed)
        self.max_threads = max_threads
        self._clock = clock
        self._cond = threading.Condition()
        self._counts = {"accepted": 0, "handled": 0, "refused": 0, "client_errors": 0, "errors": 0}
        self._active = 0
        self._logged_at = -1.0e9
        self._unlogged = 0

    def statistics(self) -> dict[str, int]:
        """Connections accepted, handled (finished), refused (over ``max_threads``), client
        errors (resets, broken pipes, timeouts), other errors, and those active now."""
        with self._cond:
            return {**self._counts, "active": self._active}

    def wait_for(self, predicate: Callable[[dict[str, int]], bool], timeout: float) -> bool:
        """Block until ``predicate(statistics())`` holds; False when ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: predicate({**self._counts, "active": self._active}), timeout
            )

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._cond:
            admitted = self._active < self.max_threads
            self._counts["accepted" if admitted else "refused"] += 1
            if admitted:
                self._active += 1
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
            self._finished()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._cond:
            self._active -= 1
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
