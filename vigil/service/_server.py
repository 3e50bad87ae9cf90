"""The service socket: serves a supervisor to local clients over a Unix domain socket.

Theory of operation
-------------------
One accept thread hands each connection to its own thread, ``max_clients`` at most. A
connection carries requests one after the other: read a frame (header checked before the body
is read, see :mod:`._protocol`), answer it, read the next. It is *busy* from a whole header
until the answer is sent, *idle* otherwise (silent, between requests, or part of a header in).
When the table is full, a new connection evicts the one idle the longest (shut down: its thread
reads EOF and leaves quietly), else the slowest body past its first second that arrives under
1 MiB/s or has stalled a second (its read side shut down: its thread answers BUSY, DIA-7121),
and is refused "busy" only when no one qualifies (:mod:`._slots`); idle or trickling clients
can never lock active ones out, and threads stay bounded by ``max_clients``.

Memory follows the bytes that arrive, not the lengths announced: a body's buffer starts at
64 KiB and doubles as it fills, and what all connections hold (until each answer is sent) is
capped by ``max_buffered_bytes``. A body that needs more than is left evicts, by the same
rule, the slow or stalled bodies that hold the budget (DIA-7121; each frees its bytes before it
answers, and the newcomer waits for them, within its read deadline); it is refused "busy"
(DIA-7120) only when what holds the budget is being answered or still arriving fast.

Bad clients never hurt the service. A frame that loses the stream's framing (bad magic,
version, CRC, type, oversize length) is answered with an ERROR frame and the connection is
closed; a sound frame with a bad tensor payload is answered with an ERROR frame and the
connection goes on; a client that stalls (``read_timeout_s``) or vanishes mid-frame is dropped
quietly. Each violation is recorded as a ``vigil.protocol`` annotation in the flight log with
the peer's pid (SO_PEERCRED), code and reason, at most ``violations_per_s`` a second (the next
one that passes counts the suppressed ones). A call that reached the supervisor always
completes and is recorded by it, even when its client is gone before the answer is sent.

``stop`` closes the listening socket first, lets calls in flight finish (up to its timeout),
then shuts every connection and removes the socket file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from vigil import _diagnostics as D
from vigil.errors import ProtocolError, ServiceBusy, ServiceConfigError
from vigil.service import _protocol as P
from vigil.service._calls import Admission, Call
from vigil.service._server_io import Violations, error_frame, peer_of, recv_into, send
from vigil.service._slots import Evict, Slot, choose, slowest_body
from vigil.supervisor._tensors import describe

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
SLOW_BODY_GRACE_S = 1.0  # a body may take this long before its rate is judged
SLOW_BODY_RATE = 1 << 20  # bytes/s: a body slower than this may be closed to make room
_STATS_FIELDS = (
    "calls",
    "rejected",
    "unavailable",
    "served",
    "outcomes",
    "hung",
    "latency_p50_ns",
    "latency_p99_ns",
    "log_head_seq",
)

OnCall = Callable[..., None]  # (result, error, seconds, trace_id) -> None


class Servable(Protocol):
    """What the server needs of a :class:`~vigil.supervisor.Supervisor`."""

    log: Any

    def infer(
        self,
        x: Any,
        *,
        request_id: bytes | None = None,
        trace_id: bytes | None = None,
        span_id: bytes | None = None,
    ) -> Any: ...

    def statistics(self) -> Any: ...

    @property
    def state(self) -> Any: ...


class _Drop(Exception):
    """Internal: end this connection now (already recorded where it had to be)."""


class SocketServer:
    """Serves ``supervisor`` on the Unix socket ``path`` (protocol: docs/PROTOCOL.md).

    Args:
        supervisor: a :class:`~vigil.supervisor.Supervisor` (or anything with its ``infer``,
            ``statistics``, ``state`` and ``log``).
        path: the socket file. A stale socket there is replaced; a live one (a server answers)
            or any other file is refused.
        max_request_bytes: the largest request body accepted (checked before reading it).
        max_clients: connections open at once. One more evicts the connection idle the longest,
            or is told "busy" (DIA-7111) when every open one is in the middle of a request.
        max_buffered_bytes: request body bytes held at once, across connections (default
            4 x ``max_request_bytes``; at least ``max_request_bytes``). A body's buffer grows
            with the bytes that actually arrive, and is charged here until its answer is sent.
            A request that would go over first evicts slow or stalled bodies that hold the
            budget (DIA-7121, as for ``max_clients``); if none qualifies it is refused "busy"
            (DIA-7120) and its connection closed.
        read_timeout_s: the longest the server waits for a whole request frame, from when it
            starts waiting for it (the connection opened or the previous answer sent: an idle
            connection is closed after it), and for each answer's send to drain.
        on_call: called as ``on_call(result_or_None, exception_or_None, seconds, trace_id)``
            after each ``infer``, each rate-limited refusal and each INFER refused for its
            body (a ProtocolError: bad context block or tensor payload) (for metrics;
            ``trace_id`` is the call's 16 bytes or None); what it raises is ignored.
        on_refused: called as ``on_refused(code)`` for each refusal ``on_call`` does not
            see: a connection refused busy, a request over the memory budget, a slow body
            closed, a frame that loses the stream (for metrics); what it raises is ignored.
        violations_per_s: protocol violations recorded in the flight log per second at most.
        clock: monotonic seconds, for judging idle and slow connections (tests pass a fake).
        admission: trace context, rate limits and spans around each call (:mod:`._calls`);
            by default traceparents are honoured and nothing is limited or traced.

    Raises:
        ServiceConfigError: from :meth:`start`, when ``path`` cannot be used.
    """

    def __init__(
        self,
        supervisor: Servable,
        path: str | os.PathLike[str],
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_clients: int = 64,
        read_timeout_s: float = 30.0,
        on_call: OnCall | None = None,
        on_refused: Callable[[str], None] | None = None,
        violations_per_s: int = 20,
        max_buffered_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        admission: Admission | None = None,
    ) -> None:
        if not 0 < max_request_bytes <= P.MAX_FRAME_BODY:
            raise ServiceConfigError(f"max_request_bytes={max_request_bytes}: 1..2^32-1")
        if max_clients < 1 or read_timeout_s <= 0 or violations_per_s < 1:
            raise ServiceConfigError("max_clients, read_timeout_s and violations_per_s: > 0")
        budget = 4 * max_request_bytes if max_buffered_bytes is None else max_buffered_bytes
        if budget < max_request_bytes:
            raise ServiceConfigError(
                f"max_buffered_bytes={budget} is under max_request_bytes={max_request_bytes}: "
                "no request of the largest size could ever be read"
            )
        self._max_buffered = budget
        self._clock = clock
        self._buffered = 0
        self._sup = supervisor
        self.path = os.fspath(path)
        self._max_body = max_request_bytes
        self._max_clients = max_clients
        self._timeout = read_timeout_s
        self._on_call = on_call
        self._on_refused = on_refused
        self.admission = admission if admission is not None else Admission(supervisor)
        self._violations = Violations(supervisor.log, violations_per_s, time.monotonic)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._conns: dict[socket.socket, Slot] = {}
        self._stopping = False
        self._listener: socket.socket | None = None
        self._inode = 0
        self._acceptor: threading.Thread | None = None
        self._counts = {
            "connections": 0,
            "requests": 0,
            "busy": 0,
            "evicted": 0,
            "evicted_slow": 0,
            "over_budget": 0,
        }

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (mode 0660) and start accepting connections."""
        if self._listener is not None:
            raise ServiceConfigError("the server was already started")
        if len(os.fsencode(self.path)) > 107:  # sun_path: 108 bytes with its NUL
            raise ServiceConfigError(
                f"{self.path}: {len(os.fsencode(self.path))} bytes; a Unix socket path is at "
                "most 107 (clients could not connect to a longer one)",
                path=self.path,
            )
        self._remove_stale()
        name = f".vigil-{os.getpid()}-{id(self) & 0xFFFFFF:x}.sock~"
        tmp = os.path.join(os.path.dirname(self.path) or ".", name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:  # bound under a private name, given its mode, then renamed into place
            listener.bind(tmp)
            os.chmod(tmp, 0o660)
            os.rename(tmp, self.path)
            listener.listen(max(16, self._max_clients))
        except OSError as exc:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ServiceConfigError(f"{self.path}: cannot listen: {exc}", path=self.path) from exc
        self._inode = os.stat(self.path).st_ino
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, name="vigil-accept", daemon=True)
        self._acceptor.start()

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ServiceConfigError(
                f"{self.path} exists and is not a socket: refusing to replace it", path=self.path
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except OSError:  # nobody listens: a stale socket of a dead server
            os.unlink(self.path)
            return
        finally:
            probe.close()
        raise ServiceConfigError(f"{self.path}: another server is listening", path=self.path)

    def stop(self, drain_timeout_s: float = 5.0) -> int:
        """Stop accepting, let calls in flight finish (up to ``drain_timeout_s``), close every
        connection and remove the socket file.

        Returns:
            How many calls were still in flight at the timeout (their threads finish the call,
            which the supervisor records, but their answers are lost).
        """
        with self._lock:
            if self._stopping:
                return self._in_flight
            self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux)
            self._listener.close()
        if self._acceptor is not None:
            self._acceptor.join(drain_timeout_s)
        self.wait_idle(drain_timeout_s)
        with self._lock:
            left = self._in_flight
            conns = [(c, slot.thread) for c, slot in self._conns.items()]
        for conn, _ in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # readers see EOF; their threads close it
        deadline = time.monotonic() + (0.1 if left else 1.0)  # a hung call's thread stays
        for _, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        return left

    def __enter__(self) -> SocketServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def in_flight(self) -> int:
        """Calls decoded and not yet answered."""
        return self._in_flight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no call is in flight; False when ``timeout`` seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def wait_open(self, count: int, timeout: float | None = None) -> bool:
        """Block until exactly ``count`` connections are open (``wait_open(0, t)``: every
        connection handled and closed, its violations recorded); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: len(self._conns) == count, timeout)

    def wait_busy(self, count: int, timeout: float | None = None) -> bool:
        """Block until exactly ``count`` connections hold a request in progress (from its
        whole header until its answer was sent); False on timeout."""
        with self._idle:
            return self._idle.wait_for(
                lambda: sum(slot.busy for slot in self._conns.values()) == count, timeout
            )

    def wait_buffered(self, nbytes: int, timeout: float | None = None) -> bool:
        """Block until exactly ``nbytes`` of request bodies are held (charged to
        ``max_buffered_bytes``); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._buffered == nbytes, timeout)

    def statistics(self) -> dict[str, int]:
        """Counters: connections accepted, requests, busy refusals, violations (recorded or
        not), connections open, calls in flight."""
        with self._lock:
            return {
                **self._counts,
                "violations": self._violations.total,
                "open": len(self._conns),
                "active": sum(slot.busy for slot in self._conns.values()),
                "in_flight": self._in_flight,
                "buffered_bytes": self._buffered,
                **self.admission.statistics(),
            }

    # --- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._stopping:
                    return
                time.sleep(0.01)  # EMFILE and friends: let descriptors free up, no spin
                continue
            with self._lock:
                busy = self._stopping or not self._make_room()
                if not busy:
                    thread = threading.Thread(
                        target=self._serve, args=(conn,), name="vigil-conn", daemon=True
                    )
                    self._conns[conn] = Slot(thread, self._clock())
                    self._counts["connections"] += 1
                    self._idle.notify_all()
                else:
                    self._counts["busy"] += 1
            if busy:
                self._refuse_busy(conn)
            else:
                thread.start()

    def _make_room(self) -> bool:
        """Under the lock: True when a new connection fits, after closing one idle or slow
        connection if ``max_clients`` are open (see :mod:`._slots`); False: refuse it busy."""
        fits, victim, why = choose(
            self._conns.items(),
            self._max_clients,
            self._clock(),
            grace_s=SLOW_BODY_GRACE_S,
            min_rate=SLOW_BODY_RATE,
        )
        if victim is not None:
            assert isinstance(victim, socket.socket)
            assert why is not None
            self._evict(victim, why)
        return fits

    def _evict(self, victim: socket.socket, why: Evict, *, for_budget: bool = False) -> None:
        """Under the lock: close ``victim`` to make room (a connection, or request memory)."""
        slot = self._conns[victim]
        slot.evicted, slot.for_budget = True, for_budget
        self._counts["evicted" if why is Evict.IDLE else "evicted_slow"] += 1
        self._idle.notify_all()
        with contextlib.suppress(OSError):  # its thread reads EOF and leaves (see _read)
            victim.shutdown(socket.SHUT_RDWR if why is Evict.IDLE else socket.SHUT_RD)

    def _charge(self, conn: socket.socket, nbytes: int, deadline: float) -> bool:
        """Charge ``nbytes`` more of ``conn``'s body to the request-memory budget. When it is
        full, evict the slow or stalled bodies that hold it (the rule of :mod:`._slots`) and
        wait, up to ``deadline``, for their bytes to come back. False: refuse this request
        (counted): what holds the budget is being answered or still arriving fast."""
        with self._idle:
            while self._buffered + nbytes > self._max_buffered:
                if self._conns[conn].evicted:
                    return False
                freeing = sum(s.held for s in self._conns.values() if s.evicted)
                if self._buffered - freeing + nbytes > self._max_buffered:
                    holders = [(c, s) for c, s in self._conns.items() if c is not conn and s.held]
                    victim = slowest_body(
                        holders, self._clock(), grace_s=SLOW_BODY_GRACE_S, min_rate=SLOW_BODY_RATE
                    )
                    if victim is None:
                        self._counts["over_budget"] += 1
                        return False
                    assert isinstance(victim, socket.socket)
                    self._evict(victim, Evict.SLOW_BODY, for_budget=True)
                    continue
                left = deadline - time.monotonic()  # evicted bodies free their bytes at once
                if left <= 0:
                    self._counts["over_budget"] += 1
                    return False
                self._idle.wait(left)
            self._buffered += nbytes
            self._conns[conn].held += nbytes
            self._idle.notify_all()
            return True

    def _refuse_busy(self, conn: socket.socket) -> None:
        message = (
            f"the service is busy ({self._max_clients} requests in progress) or stopping; "
            "retry later"
        )
        self._violations.note(peer_of(conn), D.SERVICE_BUSY.code, message)
        self._refusal(D.SERVICE_BUSY.code)
        try:
            conn.settimeout(1.0)
            body = P.encode_error(P.ErrorClass.BUSY, D.SERVICE_BUSY.code, message, closing=True)
            send(conn, P.encode_frame(P.FrameType.ERROR, P.ZERO_ID, body))
        except OSError:
            pass
        finally:
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        peer = peer_of(conn)
        conn.settimeout(self._timeout)
        served = 0
        try:
            while not self._stopping:
                frame = self._read(conn, peer, served)
                if frame is None:
                    return
                served += 1
                try:
                    self._answer(conn, peer, frame)
                finally:
                    self._release(conn, len(frame.body))
                    self._mark(conn, busy=False)
        except (_Drop, OSError):
            pass
        finally:
            conn.close()
            with self._idle:
                del self._conns[conn]
                self._idle.notify_all()

    def _read(
        self, conn: socket.socket, peer: dict[str, int | None], served: int
    ) -> P.Frame | None:
        """The next frame; None at a clean end of stream. Raises _Drop."""
        head = bytearray(P.HEADER_SIZE)
        deadline = time.monotonic() + self._timeout  # for the whole frame
        try:
            got = recv_into(conn, memoryview(head), deadline)
        except TimeoutError:
            if served:  # an idle connection: closed, nothing to record
                return None
            self._violation(conn, peer, D.READ_TIMEOUT, "no request", answer=False)
        if got == 0:
            return None
        if not self._mark(conn, busy=got == P.HEADER_SIZE):
            raise _Drop  # evicted while idle: the connection was closed to make room
        if got < P.HEADER_SIZE:
            self._violation(conn, peer, D.FRAME_TRUNCATED, f"header {got}/32", answer=False)
        try:
            header = P.parse_header(head, max_body=self._max_body, expect=P.REQUESTS)
        except ProtocolError as exc:
            self._violation(conn, peer, exc.diagnostic, exc.message, detail=exc.context)
        body = bytearray()
        try:
            self._read_body(conn, peer, header, body, deadline)
            conn.settimeout(self._timeout)  # for sending the answer
            P.check_crc(head, body, header.crc)
        except ProtocolError as exc:
            self._release(conn, len(body))
            self._violation(conn, peer, exc.diagnostic, exc.message, rid=header.request_id)
        except BaseException:
            self._release(conn, len(body))
            raise
        return P.Frame(header.type, header.request_id, body, header.flags)

    def _read_body(
        self,
        conn: socket.socket,
        peer: dict[str, int | None],
        header: P.Header,
        body: bytearray,
        deadline: float,
    ) -> None:
        """Read the body into ``body``, growing it only as its bytes arrive (a header alone
        pins no memory), each growth charged to the server-wide budget. Raises _Drop (the
        caller releases what ``body`` holds)."""
        with self._lock:
            slot = self._conns[conn]
        got = 0
        while got < header.length:
            add = min(header.length, max(P.FIRST_CHUNK, 2 * len(body))) - len(body)
            if not self._charge(conn, add, deadline):
                self._end_body(conn, peer, header, slot, body)  # evicted while it waited?
                message = (
                    f"the service holds {self._max_buffered} bytes of requests at most "
                    f"(max_buffered_bytes) and is at that limit; body {got}/{header.length} "
                    "bytes read; retry later"
                )
                self._violation(
                    conn,
                    peer,
                    D.BUFFER_BUDGET,
                    message,
                    rid=header.request_id,
                    error_class=P.ErrorClass.BUSY,
                )
            body += bytes(add)  # calloc'd zeros: pages cost nothing until the data lands
            while got < len(body):  # at most 1 MiB a step: the slot's progress stays fresh
                step = min(len(body), got + (1 << 20))
                try:
                    n = recv_into(conn, memoryview(body)[got:step], deadline)
                except TimeoutError:
                    self._violation(conn, peer, D.READ_TIMEOUT, "body stalled", answer=False)
                got += n
                slot.arrived(got, self._clock())
                if got < step:
                    self._end_body(conn, peer, header, slot, body)
                    msg = f"body {got}/{header.length}"
                    self._violation(conn, peer, D.FRAME_TRUNCATED, msg, answer=False)
        self._end_body(conn, peer, header, slot, body)

    def _end_body(
        self,
        conn: socket.socket,
        peer: dict[str, int | None],
        header: P.Header,
        slot: Slot,
        body: bytearray,
    ) -> None:
        """The body phase is over (whole, or cut short); raises _Drop, after freeing ``body``
        and answering busy, when the connection was closed to make room for a newcomer
        (nothing was done)."""
        with self._lock:
            evicted, for_budget, got = slot.evicted, slot.for_budget, slot.received
            slot.end_body()
        if evicted:
            self._release(conn, len(body))  # before the answer, which may block: room now
            body.clear()
            taken = "request memory was full" if for_budget else "every connection was taken"
            message = (
                f"the request's body arrived slower than {SLOW_BODY_RATE} bytes/s or stalled "
                f"({got}/{header.length} bytes) while {taken}: closed to make room; nothing "
                "was done; send whole frames at once and retry"
            )
            self._violation(
                conn,
                peer,
                D.SLOW_BODY,
                message,
                rid=header.request_id,
                error_class=P.ErrorClass.BUSY,
            )

    def _mark(self, conn: socket.socket, *, busy: bool) -> bool:
        """Mark the connection busy (a whole header arrived: its body phase begins) or idle
        again; False when it was evicted first (then nothing of its request was done)."""
        with self._lock:
            slot = self._conns[conn]
            if slot.evicted:
                return False
            if busy:
                slot.start_body(self._clock())
            else:
                slot.to_idle(self._clock())
            self._idle.notify_all()  # wait_open and wait_busy wake on either change
            return True

    def _release(self, conn: socket.socket, nbytes: int) -> None:
        if nbytes:
            with self._idle:
                self._buffered -= nbytes
                self._conns[conn].held -= nbytes
                self._idle.notify_all()  # a request waiting for evicted bodies' bytes

    def _violation(
        self,
        conn: socket.socket,
        peer: dict[str, int | None],
        diagnostic: D.Diagnostic,
        reason: str,
        *,
        answer: bool = True,
        rid: bytes = P.ZERO_ID,
        detail: dict[str, Any] | None = None,
        error_class: P.ErrorClass = P.ErrorClass.PROTOCOL,
    ) -> NoReturn:
        """Record a stream-fatal violation, answer it when the peer can read, raise _Drop."""
        self._violations.note(peer, diagnostic.code, reason)
        self._refusal(diagnostic.code)
        if answer:
            with contextlib.suppress(OSError):
                body = P.encode_error(
                    error_class, diagnostic.code, reason, closing=True, detail=detail
                )
                send(conn, P.encode_frame(P.FrameType.ERROR, rid, body))
        raise _Drop

    def _answer(self, conn: socket.socket, peer: dict[str, int | None], frame: P.Frame) -> None:
        rid = frame.request_id
        if frame.type is P.FrameType.PING:
            send(conn, P.encode_frame(P.FrameType.PONG, rid))
            return
        if frame.type is P.FrameType.HEALTH:
            send(conn, P.encode_frame(P.FrameType.HEALTH_REPLY, rid, self._health()))
            return
        call: Call | None = None
        try:
            context, offset = P.Context(None, None), 0
            if frame.flags & P.FLAG_CONTEXT:
                context, offset = P.decode_context(frame.body)
            call = self.admission.begin(context.traceparent, context.rate_class, "socket")
            refusal = self._refused(call, rid)
            if refusal is not None:
                send(conn, refusal)
                return
            x = P.decode_tensors(frame.body, offset)
        except ProtocolError as exc:  # the frame was sound: answer, and serve on
            self._violations.note(peer, exc.code, exc.message)
            self._abandon(call, exc)
            self._observe_refusal(call, exc)  # counted: protocol_error
            body = P.encode_error(P.ErrorClass.PROTOCOL, exc.code, exc.message)
            send(conn, P.encode_frame(P.FrameType.ERROR, rid, body))
            return
        except Exception as exc:  # a codec bug must cost one answer, never the thread
            self._violations.note(peer, D.SERVER_FAULT.code, describe(exc, 500))
            self._abandon(call, exc)
            self._observe_refusal(call, exc)
            send(conn, error_frame(exc, rid))
            return
        with self._lock:
            if self._stopping:
                refused = True
            else:
                refused = False
                self._in_flight += 1
                self._counts["requests"] += 1
        if refused:
            self._abandon(call, ServiceBusy("the service is stopping"))
            self._refusal(D.SERVICE_BUSY.code)
            body = P.encode_error(
                P.ErrorClass.BUSY, D.SERVICE_BUSY.code, "the service is stopping", closing=True
            )
            send(conn, P.encode_frame(P.FrameType.ERROR, rid, body))
            raise _Drop
        try:
            send(conn, self._infer(x, rid, call))
        finally:
            with self._idle:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.notify_all()

    def _abandon(self, call: Call | None, error: Exception) -> None:
        """End the span of a call that never reached the supervisor (refused or broken)."""
        if call is not None:
            self.admission.end(call, None, error)

    def _refusal(self, code: str) -> None:
        """Count a refusal that never became a call (``on_refused``)."""
        if self._on_refused is not None:
            with contextlib.suppress(Exception):  # metrics must not hurt the service
                self._on_refused(code)

    def _observe_refusal(self, call: Call | None, error: Exception) -> None:
        """Count a request refused before it reached the supervisor (``on_call``)."""
        if self._on_call is not None:
            with contextlib.suppress(Exception):  # metrics must not hurt the service
                self._on_call(None, error, 0.0, None if call is None else call.trace_id)

    def _refused(self, call: Call, rid: bytes) -> list[P.Buffer] | None:
        """None when the call may go on; else the ERROR frame (class BUSY, DIA-2021) of a
        rate-limited refusal, recorded before it is sent."""
        refusal = self.admission.refusal(call, None if rid == P.ZERO_ID else rid)
        if refusal is None:
            return None
        self.admission.end(call, None, refusal.error)
        self._observe_refusal(call, refusal.error)
        detail = {
            "class": refusal.rate_class,
            "retry_after_s": round(refusal.retry_after_s, 6),
            "seq": refusal.seq,
            "request_id": None if refusal.request_id is None else refusal.request_id.hex(),
        }
        body = P.encode_error(
            P.ErrorClass.BUSY, D.RATE_LIMITED.code, refusal.error.message, detail=detail
        )
        return P.encode_frame(P.FrameType.ERROR, rid, body)

    def _infer(self, x: Any, rid: bytes, call: Call) -> list[P.Buffer]:
        """Run the call; the frame that answers it (never raises but for BaseException)."""
        result, error = None, None
        t0 = time.perf_counter()
        try:
            result = self._sup.infer(
                x, request_id=None if rid == P.ZERO_ID else rid, **call.infer_kwargs()
            )
        except Exception as exc:
            error = exc
        seconds = time.perf_counter() - t0
        self.admission.end(call, result, error)
        if self._on_call is not None:
            with contextlib.suppress(Exception):  # metrics must not hurt the service
                self._on_call(result, error, seconds, call.trace_id)
        if error is not None:
            return error_frame(error, rid)
        assert result is not None
        try:
            body = P.encode_result(result)
        except ProtocolError as exc:
            message = f"call seq {result.seq} was served, but its output cannot be sent: "
            body = P.encode_error(
                P.ErrorClass.SERVER,
                D.OUTPUT_NOT_ENCODABLE.code,
                message + exc.message,
                detail={"seq": result.seq},
            )
            return P.encode_frame(P.FrameType.ERROR, result.request_id, body)
        return P.encode_frame(P.FrameType.RESULT, result.request_id, body)

    def _health(self) -> list[P.Buffer]:
        try:
            state = self._sup.state
            snapshot = self._sup.statistics()
            detail: dict[str, Any] = {
                k: getattr(snapshot, k) for k in _STATS_FIELDS if hasattr(snapshot, k)
            }
        except Exception as exc:  # report it: a health check must answer
            return P.encode_health(False, "UNKNOWN", {"error": describe(exc)})
        name = getattr(state, "name", str(state))
        detail["server"] = self.statistics()
        detail["protocol_version"] = P.VERSION
        return P.encode_health(not self._stopping and name != "SAFE_STOP", name, detail)
