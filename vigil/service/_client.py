"""A Python client of the service socket (protocol: docs/PROTOCOL.md).

One :class:`Client` holds one connection and makes one call at a time (a lock serialises
threads that share it; give each thread its own client for parallel calls). A connection the
server closed while idle is reopened before the next call; a connection lost during a call is
not retried -- the call may have been served and recorded -- and raises
:class:`~vigil.errors.ServiceUnreachable`.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil import _diagnostics as D
from vigil.errors import (
    InvalidInput,
    ProtocolError,
    ServiceBusy,
    ServiceUnreachable,
    Unavailable,
    VigilError,
)
from vigil.schemas import Result, State
from vigil.service import _protocol as P
from vigil.service import _trace

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TokenResult:
    """What :meth:`Client.infer_tokens` returns: a service with ``[model] output = "tokens"``
    served, per input row, the greedy next token and its log-probability.

    Attributes:
        tokens: ``(batch,)`` int64, the argmax of each row's logits at its last position.
        logprobs: ``(batch,)`` float32, ``log_softmax`` of those logits at that token (<= 0).
        result: the whole :class:`~vigil.schemas.Result` (``seq``, ``served_by``, ``state``...;
            its ``output`` is ``{"tokens": tokens, "logprobs": logprobs}``).
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    result: Result


class Client:
    """A connection to ``vigil serve``'s socket.

    Args:
        path: the socket file.
        timeout_s: the longest a call waits (to connect, send and for its answer).
        max_response_bytes: the largest response body accepted.

    Raises:
        ServiceUnreachable: the socket cannot be connected to.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout_s: float = 30.0,
        max_response_bytes: int = P.MAX_FRAME_BODY,
    ) -> None:
        self.path = os.fspath(path)
        self._timeout = timeout_s
        self._max_body = max_response_bytes
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise ServiceUnreachable(f"{self.path}: {exc}", path=self.path) from exc
        self._sock = sock
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # --- calls -----------------------------------------------------------------------------

    def infer(
        self,
        x: Any,
        *,
        request_id: bytes | None = None,
        traceparent: str | None = None,
        rate_class: str | None = None,
    ) -> Result:
        """Have the service answer ``x`` (a tensor, or a dict of name -> tensor).

        Args:
            request_id: 16 bytes recorded with the call (by default the service assigns one;
                ``Result.request_id`` says which).
            traceparent: the caller's W3C trace context (``00-<trace>-<span>-<flags>``); the
                service records its trace id with the call and makes its span a child of it.
            rate_class: the class whose rate limit the call counts against (``[limits]``; an
                unknown one counts against the default class).

        Raises:
            InvalidInput: the supervisor refused ``x`` (recorded as REJECTED), or
                ``traceparent`` is malformed (DIA-2020, nothing sent).
            Unavailable: no trustworthy answer exists (recorded); ``reason`` and ``state``.
            ServiceBusy: refused, nothing done; retry later (rate limited: DIA-2021, recorded).
            ServiceUnreachable: no connection, or it was lost or timed out during the call.
            ProtocolError: ``x`` cannot be encoded (DIA-7108), or the service refused the
                request or failed (``code`` says which).
        """
        rid = P.ZERO_ID if request_id is None else bytes(request_id)
        if len(rid) != 16:
            raise ProtocolError("request_id must be 16 bytes", diagnostic=D.PROTOCOL_ERROR)
        if traceparent is None and rate_class is None:
            body, flags = P.encode_tensors(x), 0
        else:
            if traceparent is not None:
                _trace.parse(traceparent)
            block = P.encode_context(traceparent, rate_class)
            body, flags = [block, *P.encode_tensors(x, offset=len(block))], P.FLAG_CONTEXT
        frame = self._call(P.FrameType.INFER, rid, body, P.FrameType.RESULT, flags=flags)
        return P.decode_result(frame.body, frame.request_id)

    def infer_tokens(self, x: Any, *, request_id: bytes | None = None) -> TokenResult:
        """:meth:`infer` for a service that serves tokens (``[model] output = "tokens"``).

        Returns:
            The tokens and log-probabilities, typed, with the whole result.

        Raises:
            ProtocolError: DIA-7180 when the answer is not token output (the service serves
                logits; the call was served and recorded); otherwise as :meth:`infer`.
        """
        import torch  # noqa: PLC0415 - the client imports torch only when it decodes tensors

        result = self.infer(x, request_id=request_id)
        out = result.output
        tokens = out.get("tokens") if isinstance(out, dict) else None
        logprobs = out.get("logprobs") if isinstance(out, dict) else None
        if (
            not isinstance(tokens, torch.Tensor)
            or not isinstance(logprobs, torch.Tensor)
            or len(out) != 2
            or tokens.dtype != torch.int64
            or logprobs.dtype != torch.float32
            or tokens.dim() != 1
            or tokens.shape != logprobs.shape
        ):
            form = (
                sorted(out) if isinstance(out, dict) else getattr(out, "shape", type(out).__name__)
            )
            raise ProtocolError(
                f"seq {result.seq}: the service answered {form}, not token output "
                "(tokens (batch,) int64 and logprobs (batch,) float32)",
                diagnostic=D.TOKEN_RESULT_INVALID,
                seq=result.seq,
            )
        return TokenResult(tokens, logprobs, result)

    def health(self) -> dict[str, Any]:
        """``{"ready": bool, "state": "NORMAL", "detail": {...}}`` (statistics, server counters).

        Raises:
            ServiceUnreachable, ProtocolError: as for :meth:`infer`.
        """
        frame = self._call(P.FrameType.HEALTH, P.ZERO_ID, [], P.FrameType.HEALTH_REPLY)
        return P.decode_health(frame.body)

    def ping(self) -> None:
        """One round trip with no work (raises as :meth:`health`; a PONG with a body is a
        ProtocolError, DIA-7109, as a PING with one is to the service)."""
        frame = self._call(P.FrameType.PING, P.ZERO_ID, [], P.FrameType.PONG)
        if frame.body:
            with self._lock:
                self._drop()
            raise ProtocolError(
                f"the service answered PING with a PONG of {len(frame.body)} body bytes "
                "(PONG has none): not a vigil service, or a broken one",
                diagnostic=D.BODY_MALFORMED,
            )

    def _call(
        self,
        ftype: P.FrameType,
        rid: bytes,
        body: list[P.Buffer],
        want: P.FrameType,
        *,
        flags: int = 0,
    ) -> P.Frame:
        frame = P.encode_frame(ftype, rid, body, flags=flags)
        with self._lock:
            sock = self._usable()
            try:
                if sum(memoryview(b).nbytes for b in frame) <= 1 << 16:
                    sock.sendall(b"".join(frame))
                else:
                    for b in frame:
                        sock.sendall(b)
            except OSError as exc:  # the server may have said why before it closed
                if self._pending(sock):
                    answer = self._receive(sock)
                    if answer.type is P.FrameType.ERROR:
                        self._raise(answer)
                self._drop()
                raise ServiceUnreachable(f"sending the request failed: {exc}") from exc
            answer = self._receive(sock)
            if answer.type is P.FrameType.ERROR:
                self._raise(answer)
            if answer.type is not want or rid not in (P.ZERO_ID, answer.request_id):
                self._drop()
                raise ProtocolError(
                    f"expected {want.name} for {rid.hex()}, got {answer.type.name} for "
                    f"{answer.request_id.hex()}",
                    diagnostic=D.FRAME_TYPE,
                )
            return answer

    def _usable(self) -> socket.socket:
        """The connection, reopened when the server closed it while it was idle. An ERROR
        frame the server left before closing (busy) is raised."""
        sock = self._sock if self._sock is not None else self._connect()
        if self._pending(sock):
            try:
                peek = sock.recv(1, socket.MSG_PEEK)
            except OSError:
                peek = b""
            if peek:
                answer = self._receive(sock)
                if answer.type is P.FrameType.ERROR:
                    self._raise(answer)
                self._drop()
                raise ProtocolError(
                    "an unsolicited frame from the service", diagnostic=D.FRAME_TYPE
                )
            self._drop()  # EOF: closed by the server while idle
            sock = self._connect()
        return sock

    @staticmethod
    def _pending(sock: socket.socket) -> bool:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def _receive(self, sock: socket.socket) -> P.Frame:
        try:
            head = self._exactly(sock, P.HEADER_SIZE)
            header = P.parse_header(head, max_body=self._max_body, expect=P.RESPONSES)
            body = self._exactly(sock, header.length)
            P.check_crc(head, body, header.crc)
        except TimeoutError as exc:
            self._drop()  # a late answer would be read as the next call's
            raise ServiceUnreachable(f"no answer within {self._timeout} s") from exc
        except (OSError, ProtocolError, ServiceUnreachable) as exc:
            self._drop()
            if isinstance(exc, VigilError):
                raise
            raise ServiceUnreachable(f"the connection was lost: {exc}") from exc
        return P.Frame(header.type, header.request_id, body)

    def _exactly(self, sock: socket.socket, n: int) -> bytearray:
        """``n`` bytes; the buffer grows as they arrive (a header that announces a large body
        makes the client allocate only what the peer really sends)."""
        buf = bytearray(min(n, P.FIRST_CHUNK))
        got = 0
        while True:
            view = memoryview(buf)
            while got < len(buf):
                k = sock.recv_into(view[got:])
                if k == 0:
                    raise ServiceUnreachable(
                        f"the service closed the connection ({got}/{n} bytes of a frame)"
                    )
                got += k
            view.release()  # the buffer can grow only with no view on it
            if got == n:
                return buf
            buf += bytes(min(n, 2 * len(buf)) - len(buf))

    def _raise(self, frame: P.Frame) -> None:
        info = P.decode_error(frame.body)
        if info.closing:
            self._drop()
        raise _rebuild(info)

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rebuild(info: P.ErrorInfo) -> VigilError:
    """The exception an ERROR frame stands for, with the server's code and message."""
    try:
        diagnostic = D.lookup(info.code)
    except KeyError:  # a code this client does not know: keep it as a fact
        diagnostic = D.PROTOCOL_ERROR
    detail = info.detail
    if info.error_class is P.ErrorClass.INVALID_INPUT:
        return InvalidInput(
            info.message,
            diagnostic=diagnostic,
            field=detail.get("field"),
            rule=detail.get("rule"),
        )
    if info.error_class is P.ErrorClass.UNAVAILABLE:
        state = str(detail.get("state"))
        return Unavailable(
            info.message,
            diagnostic=diagnostic,
            reason=detail.get("reason"),
            state=State[state] if state in State.__members__ else state,
        )
    if info.error_class is P.ErrorClass.BUSY:
        return ServiceBusy(info.message, diagnostic=diagnostic)
    return ProtocolError(info.message, diagnostic=diagnostic, server_code=info.code, detail=detail)
