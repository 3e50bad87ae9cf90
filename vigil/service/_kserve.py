"""The KServe v2 (Open Inference) protocol over HTTP/REST, so that Triton's and KServe's
clients can call ``vigil serve`` unchanged.

Theory of operation
-------------------
:class:`KServeApp` is a WSGI application (werkzeug's request, response and routing, but
for the hot path: an infer request to the served model's own path is read straight from the
WSGI environ and answered without them);
:class:`KServeServer` serves it with waitress (HTTP/1.1 keep-alive) from one event-loop thread
of the service process and a pool of application threads, next to the Unix socket server. Each
request runs in one of the pool's threads and calls
:meth:`vigil.supervisor.Supervisor.infer` directly, as a socket client's call does: the same
contract, deadline, fallbacks and flight-log record.

One model (``[http] model_name``, version ``1``) with one input tensor named ``input``; its
outputs are ``output`` (a tensor answer), ``output_0``.. (a tuple or list), or the dict's keys.
Inputs and outputs travel as JSON ``data`` or with the binary-data extension
(``Inference-Header-Content-Length``, ``binary_data_size``, ``binary_data``), little-endian.

Bounds: at most ``max_connections`` connections are open at once (beyond them waitress stops
accepting until one closes), served by as many application threads; a connection silent for
``timeout_s`` (idle between kept-alive calls, or stalled inside a request) is closed. A body
longer than ``max_request_mb`` is refused by waitress from its ``Content-Length`` with a 413
before it is read, a JSON part longer than ``max_json_mb`` by the application with a 400; the
body is buffered as it arrives (never allocated from what is declared), every element count and
byte size is checked against the bytes present before a tensor is built. Every refusal of the
application is the protocol's error body ``{"error": "DIA-...: ..."}`` with 400 (request or
contract), 404 (model), 503 (draining, SAFE_STOP, no answer), never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.sansio.utils import get_content_length
from werkzeug.wrappers import Request, Response

from vigil import _diagnostics as D
from vigil.errors import InvalidInput, ServiceConfigError, Unavailable, VigilError
from vigil.schemas import Result
from vigil.service._calls import Admission, Call, Refusal
from vigil.service._limits import retry_after
from vigil.service._v2 import (
    DATATYPES,
    CallGate,
    Refused,
    infer_kwargs,
    oversized_shape,
    request_id_of,
)
from vigil.service._v2 import MAX_DIMS as _MAX_DIMS
from vigil.service._v2 import NAME_OF as _NAME_OF
from vigil.service._v2 import named_outputs as _named_outputs
from vigil.service._v2 import vigil_parameters as _vigil_parameters

__all__ = ["DATATYPES", "KServeApp", "KServeServer"]

_LOG = logging.getLogger("vigil.http")
_MB = 1 << 20
_CHUNK = 1 << 20
_EMPTY = memoryview(b"")
_FIRST_READ = 64 << 10  # a body's buffer starts here and doubles as its bytes arrive

_URLS = Map(
    [
        Rule("/v2", endpoint="server", methods=["GET"]),
        Rule("/v2/health/live", endpoint="live", methods=["GET"]),
        Rule("/v2/health/ready", endpoint="ready", methods=["GET"]),
        *(
            Rule(f"/v2/models/<name>{v}{tail}", endpoint=what, methods=[method])
            for v in ("", "/versions/<version>")
            for tail, what, method in (
                ("", "metadata", "GET"),
                ("/ready", "model_ready", "GET"),
                ("/infer", "infer", "POST"),
            )
        ),
    ],
    strict_slashes=False,
)


class _Refused(Refused):
    """An HTTP status and a diagnostic-coded message (never leaves this module)."""

    def __init__(self, status: int, diagnostic: D.Diagnostic, message: str) -> None:
        super().__init__(diagnostic, message)
        self.status = status

    @classmethod
    def of(cls, status: int, error: VigilError) -> _Refused:
        return cls(status, error.diagnostic, error.message)


_UNREADABLE = "the request could not be read"  # the catch-all's words (the fuzz harness looks)


def _bad(diagnostic: D.Diagnostic, message: str, status: int = 400) -> _Refused:
    return _Refused(status, diagnostic, message)


class KServeApp(CallGate):
    """The v2 endpoints as a WSGI application.

    Args:
        supervisor: answers ``infer`` (a :class:`~vigil.supervisor.Supervisor`).
        model_name: the one model name served.
        input_shape, input_dtype: the contract's shape (``-1`` any) and dtype name, for the
            metadata; None when not declared.
        readiness: may the service take calls now (not SAFE_STOP, not
            draining, finished starting).
        max_request_bytes, max_json_bytes: the body's and its JSON part's caps.
        admission: trace context, rate limits and spans (:mod:`._calls`); by default the
            ``traceparent`` header is honoured and nothing is limited or traced.
        class_header: the header naming a call's rate class (``[limits] class_header``).
        on_call: ``on_call(result_or_None, exception_or_None, seconds, trace_id)`` after each
            call, each rate-limited refusal and each infer request refused as malformed (a
            ProtocolError with the refusal's code) (metrics); what it raises is ignored.
        on_refused: ``on_refused(code)`` for each request refused before it became a call
            (draining, too large, unknown model or endpoint, no Content-Length, compressed);
            what it raises is ignored.
    """

    def __init__(
        self,
        supervisor: Any,
        *,
        model_name: str,
        readiness: Callable[[], bool],
        input_shape: tuple[int, ...] | None = None,
        input_dtype: str | None = None,
        max_request_bytes: int = 64 * _MB,
        max_json_bytes: int = 8 * _MB,
        admission: Admission | None = None,
        class_header: str = "x-vigil-class",
        on_call: Callable[..., None] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(readiness, on_refused)
        self.supervisor = supervisor
        self.admission = admission if admission is not None else Admission(supervisor)
        self.class_header = class_header
        self.on_call = on_call
        self.model_name = model_name
        self.input_shape = input_shape
        self.input_dtype = input_dtype
        self.max_request_bytes = max_request_bytes
        self.max_json_bytes = max_json_bytes
        self._outputs: list[dict[str, Any]] | None = None  # learnt from the first answer
        # the infer endpoint's paths as PATH_INFO holds them (UTF-8 bytes read as latin-1);
        # any other spelling of them goes through werkzeug's routing, to the same handler
        self._infer_paths = frozenset(
            p.encode("utf-8", "surrogatepass").decode("latin-1")
            for p in (f"/v2/models/{model_name}/infer", f"/v2/models/{model_name}/versions/1/infer")
        )
        self._class_key = _environ_key(class_header)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            if (
                environ.get("PATH_INFO") in self._infer_paths
                and environ.get("REQUEST_METHOD") == "POST"
            ):  # the hot path, straight from the environ: the one model's infer
                response = self._infer(environ)
            else:
                response = self._dispatch(Request(environ))
        except _Refused as exc:
            response = _json({"error": exc.text}, exc.status)
        except MethodNotAllowed:
            self.refused(D.HTTP_REQUEST_INVALID.code)
            response = _json(
                {"error": _bad(D.HTTP_REQUEST_INVALID, "method not allowed").text}, 405
            )
        except NotFound:
            self.refused(D.HTTP_UNKNOWN_MODEL.code)
            response = _json({"error": _bad(D.HTTP_UNKNOWN_MODEL, "no such endpoint").text}, 404)
        except HTTPException as exc:
            self.refused(D.HTTP_REQUEST_INVALID.code)
            response = _json({"error": _bad(D.HTTP_REQUEST_INVALID, str(exc.name)).text}, 400)
        except Exception as exc:  # fail closed: one line, a 500, never a traceback
            _LOG.warning("vigil http: request failed: %s: %s", type(exc).__name__, exc)
            response = _json({"error": f"internal error: {type(exc).__name__}"}, 500)
        return response(environ, start_response)

    # --- routing -------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> Response | _Answer:
        endpoint, args = _URLS.bind_to_environ(request.environ).match()
        if endpoint == "server":
            return _json({"name": "vigil", "version": "1", "extensions": ["binary_tensor_data"]})
        if endpoint == "live":
            return Response(status=200)
        if endpoint == "ready":
            return Response(status=200 if self._ready() else 503)
        if args["name"] != self.model_name or args.get("version", "1") != "1":
            self.refused(D.HTTP_UNKNOWN_MODEL.code)
            raise _bad(
                D.HTTP_UNKNOWN_MODEL,
                f"unknown model {args['name']!r} version {args.get('version', '')!r}; this "
                f"service serves {self.model_name!r} version '1'",
                404,
            )
        if endpoint == "metadata":
            return _json(self.metadata())
        if endpoint == "model_ready":
            return Response(status=200 if self._ready() else 503)
        return self._infer(request.environ)

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata: the input's contract, the outputs seen so far."""
        shape = [-1] if self.input_shape is None else list(self.input_shape)
        datatype = _NAME_OF[getattr(torch, self.input_dtype or "float32")]
        return {
            "name": self.model_name,
            "versions": ["1"],
            "platform": "vigil",
            "inputs": [{"name": "input", "datatype": datatype, "shape": shape}],
            "outputs": self._outputs or [],
        }

    # --- inference -----------------------------------------------------------------------

    def _infer(self, environ: dict[str, Any]) -> Response | _Answer:
        """One infer request, from the WSGI environ (no werkzeug request: this is the hot
        path); its answer as a WSGI callable."""
        try:
            body, header_len = self._admissible(environ)
        except _Refused as exc:  # before it became a call: counted as a refusal
            self.refused(exc.code)
            raise
        # several traceparent headers arrive combined into one (invalid) value, RFC 9110 §5.3
        traceparent = environ.get("HTTP_TRACEPARENT") or None
        call = self.admission.begin(
            traceparent,
            environ.get(self._class_key),
            "http",
            environ.get("HTTP_TRACESTATE"),  # several headers: joined with commas, one list
        )
        refusal = self.admission.refusal(call, None)
        if refusal is not None:
            return self._too_many(call, refusal)
        try:
            doc = _parse_json(body, header_len)
            x = self._input(doc, body, header_len)
            wanted, binary_all = _requested_outputs(doc)
        except _Refused as exc:  # a malformed request: its span ends with the refusal
            self._malformed(call, exc)
            raise
        except Exception as exc:  # a malformation no check above names: refused all the same
            _LOG.warning("vigil http: unreadable request: %s: %s", type(exc).__name__, exc)
            refused = _bad(D.HTTP_REQUEST_INVALID, f"{_UNREADABLE} ({type(exc).__name__})")
            self._malformed(call, refused)
            raise refused from None
        result = self._call(x, call, request_id_of(doc.get("id")))
        return self._answer(doc, result, wanted, binary_all, call)

    def _call(self, x: torch.Tensor, call: Call, request_id: bytes | None = None) -> Result:
        with self._calls:
            self._in_flight += 1
            self._calls.notify_all()
        result: Result | None = None
        error: Exception | None = None
        t0 = time.perf_counter()
        try:
            result = self.supervisor.infer(x, **infer_kwargs(call, request_id))
        except Exception as exc:
            error = exc
        finally:
            with self._calls:
                self._in_flight -= 1
                self._calls.notify_all()
        self._ended(call, result, error, time.perf_counter() - t0)
        if isinstance(error, InvalidInput):
            raise _Refused.of(400, error)
        if isinstance(error, Unavailable):
            raise _Refused.of(503, error)
        if isinstance(error, VigilError):
            raise _Refused.of(500, error)
        if error is not None:
            raise error
        assert result is not None
        return result

    def _ended(
        self, call: Call, result: Result | None, error: BaseException | None, seconds: float
    ) -> None:
        self.admission.end(call, result, error)
        if self.on_call is not None:
            with contextlib.suppress(Exception):  # metrics must not hurt the service
                self.on_call(result, error, seconds, call.trace_id)

    def _malformed(self, call: Call, refused: _Refused) -> None:
        """End the span of a request refused as malformed, and count it (protocol_error)."""
        self.admission.end(call, None, refused)
        if self.on_call is not None:
            with contextlib.suppress(Exception):  # metrics must not hurt the service
                self.on_call(None, refused.as_error(), 0.0, call.trace_id)

    def _too_many(self, call: Call, refusal: Refusal) -> Response:
        """429 with the protocol's error body and ``Retry-After``; already recorded."""
        self._ended(call, None, refusal.error, 0.0)
        response = _json({"error": _Refused.of(429, refusal.error).text}, 429)
        response.headers["Retry-After"] = str(retry_after(refusal.retry_after_s))
        return response

    def _admissible(self, environ: dict[str, Any]) -> tuple[bytearray, int]:
        """The body and its JSON part's length, or the refusal of a request that cannot
        become a call: draining, compressed, no Content-Length, too large."""
        if self.draining:
            raise _bad(D.HTTP_DRAINING, "the service is draining; retry elsewhere", 503)
        if environ.get("HTTP_CONTENT_ENCODING", "identity") != "identity":
            raise _bad(D.HTTP_REQUEST_INVALID, "compressed bodies are not accepted")
        body = self._read_body(environ)
        header_len = _header_length(environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"), len(body))
        if header_len > self.max_json_bytes:
            raise _bad(
                D.HTTP_REQUEST_TOO_LARGE,
                f"the JSON part is {header_len} bytes, over max_json_mb "
                f"({self.max_json_bytes} bytes); send tensors as binary data",
            )
        return body, header_len

    def _read_body(self, environ: dict[str, Any]) -> bytearray:
        length = get_content_length(
            environ.get("CONTENT_LENGTH"), environ.get("HTTP_TRANSFER_ENCODING")
        )
        if length is None:
            raise _bad(D.HTTP_REQUEST_INVALID, "a Content-Length header is required")
        if length > self.max_request_bytes:
            raise _bad(
                D.HTTP_REQUEST_TOO_LARGE,
                f"the body is {length} bytes, over max_request_mb ({self.max_request_bytes})",
            )
        stream = environ["wsgi.input"]
        # read into place (no bytes object copied over): the buffer grows with the bytes that
        # arrive -- doubling from one chunk -- never with what was declared
        body = bytearray(min(length, _FIRST_READ))
        have = 0
        while have < length:
            if have == len(body):
                body.extend(bytes(min(len(body), length - len(body))))
            with memoryview(body) as whole, whole[have:] as view:
                got = _read_into(stream, view)
            if not got:
                raise _bad(D.HTTP_REQUEST_INVALID, f"the body ended at {have} of {length}")
            have += got
        return body

    def _input(self, doc: dict[str, Any], body: bytearray, header_len: int) -> torch.Tensor:
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise _bad(D.HTTP_REQUEST_INVALID, "'inputs' must be a list of one tensor object")
        spec = inputs[0]
        if spec.get("name") != "input":
            raise _bad(D.HTTP_TENSOR_INVALID, f"input {spec.get('name')!r}: the input is 'input'")
        datatype = spec.get("datatype")
        dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise _bad(
                D.HTTP_TENSOR_INVALID,
                f"input: datatype {spec.get('datatype')!r} is not one of {', '.join(DATATYPES)}",
            )
        shape = spec.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_DIMS
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise _bad(
                D.HTTP_TENSOR_INVALID,
                f"input: shape {shape!r} must be a list of at most {_MAX_DIMS} integers >= 0",
            )
        oversized = oversized_shape(shape)
        if oversized is not None:
            raise _bad(D.HTTP_TENSOR_INVALID, f"input: shape {shape}: {oversized}")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise _bad(D.HTTP_REQUEST_INVALID, "input: 'parameters' must be an object")
        size = params.get("binary_data_size")
        binary = len(body) - header_len
        if size is not None:
            if type(size) is not int or size != nbytes:
                raise _bad(
                    D.HTTP_TENSOR_INVALID,
                    f"input: binary_data_size {size!r}, but shape {shape} of {spec['datatype']} "
                    f"is {nbytes} bytes",
                )
            if binary != size:
                raise _bad(
                    D.HTTP_TENSOR_INVALID,
                    f"input: {binary} bytes follow the JSON part, binary_data_size says {size}",
                )
            if count == 0:
                return torch.empty(shape, dtype=dtype)
            flat = torch.frombuffer(body, dtype=dtype, count=count, offset=header_len)
            return flat.reshape(shape)
        if binary != 0:
            raise _bad(
                D.HTTP_TENSOR_INVALID, f"{binary} binary bytes follow but no tensor uses them"
            )
        return _from_json(spec.get("data"), shape, count, dtype, spec["datatype"])

    def _answer(
        self,
        doc: dict[str, Any],
        result: Result,
        wanted: dict[str, bool],
        binary_all: bool,
        call: Call | None = None,
    ) -> _Answer:
        outputs = _named_outputs(result)
        if outputs is None:
            raise _bad(
                D.HTTP_OUTPUT_UNSUPPORTED,
                f"call seq {result.seq}: the answer is a {type(result.output).__name__}",
                500,
            )
        if self._outputs is None:
            self._outputs = [
                {"name": n, "datatype": _NAME_OF[t.dtype], "shape": list(t.shape)}
                for n, t in outputs
            ]
        unknown = set(wanted) - {n for n, _ in outputs}
        if unknown:
            raise _bad(D.HTTP_TENSOR_INVALID, f"no output named {sorted(unknown)}")
        described: list[dict[str, Any]] = []
        parts: list[memoryview] = []
        for name, t in outputs:
            if wanted and name not in wanted:
                continue
            item: dict[str, Any] = {
                "name": name,
                "datatype": _NAME_OF[t.dtype],
                "shape": list(t.shape),
            }
            flat = t.detach().cpu().contiguous().reshape(-1)
            if wanted.get(name, binary_all):
                raw = flat.view(torch.uint8).numpy().data if flat.numel() else _EMPTY
                item["parameters"] = {"binary_data_size": raw.nbytes}
                parts.append(raw)
            else:
                item["data"] = flat.tolist()
            described.append(item)
        answer: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": "1",
            "outputs": described,
            "parameters": _vigil_parameters(result, call),
        }
        if isinstance(doc.get("id"), str):
            answer["id"] = doc["id"]
        head = json.dumps(answer, separators=(",", ":")).encode()
        if not parts:
            return _Answer(head, [("Content-Type", "application/json")])
        return _Answer(
            b"".join([head, *parts]),  # the tensors' bytes copied once, into the answer
            [
                ("Content-Type", "application/octet-stream"),
                ("Inference-Header-Content-Length", str(len(head))),
            ],
        )


class _Answer:
    """A 200 answer as a WSGI callable, built without werkzeug's response object: the body and
    the headers given, with Content-Length (all werkzeug's response adds here)."""

    __slots__ = ("body", "headers")

    def __init__(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.body = body  # one write: waitress sends each write at once
        self.headers = headers

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [*self.headers, ("Content-Length", str(len(self.body)))])
        return [self.body]


def _environ_key(header: str) -> str:
    """Where a request header is found in a WSGI environ (PEP 3333)."""
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def _read_into(stream: Any, view: memoryview) -> int:
    """Read into ``view`` from a WSGI input stream (``readinto`` when it has one)."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return int(readinto(view) or 0)
    chunk = stream.read(len(view))
    view[: len(chunk)] = chunk
    return len(chunk)


def _json(doc: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(doc), status, content_type="application/json")


def _header_length(raw: str | None, body_len: int) -> int:
    if raw is None:
        return body_len
    if not raw.isdigit() or len(raw) > 12 or int(raw) > body_len:
        raise _bad(
            D.HTTP_REQUEST_INVALID,
            f"Inference-Header-Content-Length {raw[:20]!r} must be a number <= the body's "
            f"{body_len} bytes",
        )
    return int(raw)


def _parse_json(body: bytearray, header_len: int) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(memoryview(body)[:header_len]))
    except RecursionError:
        raise _bad(D.HTTP_REQUEST_INVALID, "the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise _bad(D.HTTP_REQUEST_INVALID, f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad(D.HTTP_REQUEST_INVALID, "the body must be a JSON object")
    return doc


def _requested_outputs(doc: dict[str, Any]) -> tuple[dict[str, bool], bool]:
    """``({name: binary}, default binary)``: the outputs asked for (all when empty)."""
    params = doc.get("parameters") or {}
    outputs = doc.get("outputs") or []
    if not isinstance(params, dict) or not isinstance(outputs, list):
        raise _bad(D.HTTP_REQUEST_INVALID, "'parameters' must be an object, 'outputs' a list")
    binary_all = params.get("binary_data_output", False) is True
    wanted: dict[str, bool] = {}
    for out in outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise _bad(D.HTTP_REQUEST_INVALID, "each of 'outputs' must be an object with a name")
        p = out.get("parameters") or {}
        if not isinstance(p, dict):
            raise _bad(D.HTTP_REQUEST_INVALID, f"output {out['name']!r}: bad 'parameters'")
        wanted[out["name"]] = p.get("binary_data", binary_all) is True
    return wanted, binary_all


def _from_json(
    data: Any, shape: list[int], count: int, dtype: torch.dtype, datatype: str
) -> torch.Tensor:
    """The tensor for a JSON ``data`` (flat or nested, row-major), checked value by value."""
    if not isinstance(data, list):
        raise _bad(D.HTTP_TENSOR_INVALID, "input: 'data' (a list) or binary_data_size is needed")
    if dtype is torch.bool:
        kind: tuple[type, ...] = (bool,)
    elif dtype.is_floating_point:
        kind = (int, float)
    else:
        kind = (int,)
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative: no recursion on hostile nesting
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            if not isinstance(value, kind) or (dtype is not torch.bool and type(value) is bool):
                raise _bad(D.HTTP_TENSOR_INVALID, f"input: {value!r} is not a {datatype} value")
            flat.append(value)
            if len(flat) > count:
                break
        else:
            stack.pop()
            continue
        if len(flat) > count:
            break
    if len(flat) != count:
        raise _bad(
            D.HTTP_TENSOR_INVALID,
            f"input: shape {shape} holds {count} values, 'data' has "
            f"{'more' if len(flat) > count else len(flat)}",
        )
    try:
        return torch.tensor(flat, dtype=dtype).reshape(shape)
    except (RuntimeError, OverflowError, ValueError) as exc:  # beyond int64: ValueError
        raise _bad(
            D.HTTP_TENSOR_INVALID, f"input: a value does not fit {datatype}: {exc}"
        ) from None


class _Channel(HTTPChannel):  # type: ignore[misc]
    """waitress's connection, telling :meth:`KServeServer.wait_for` when it opens and closes."""

    changed: threading.Condition

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with self.changed:
            self.changed.notify_all()

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        with self.changed:
            self.changed.notify_all()


class KServeServer:
    """:class:`KServeApp` served on ``host:port`` by waitress, from one thread (port 0: a free
    one).

    waitress keeps HTTP/1.1 connections alive between calls (werkzeug's server closes each after
    one answer: a TCP handshake and a 10 ms drain wait per call); one event-loop thread reads and
    parses requests, a pool of ``max_connections`` threads runs the application.

    Args:
        app: the application.
        host, port: where to listen.
        max_connections: connections open at once; beyond them the server stops accepting until
            one closes (the kernel's backlog holds the next ones).
        timeout_s: a connection silent that long (idle between calls, or stalled in a
            request's head or body) is closed; whole seconds, rounded up.
        max_request_bytes: a body declared longer is answered 413 before it is read.

    Raises:
        ServiceConfigError: DIA-7250, the address cannot be bound.
    """

    def __init__(
        self,
        app: KServeApp,
        host: str,
        port: int,
        *,
        max_connections: int = 16,
        timeout_s: float = 30.0,
        max_request_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_connections = max_connections
        body = app.max_request_bytes if max_request_bytes is None else max_request_bytes
        seconds = max(1, math.ceil(timeout_s))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:  # bound here, before waitress starts its threads and its wake-up pipe
            listener = socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            raise ServiceConfigError(
                f"[http].listen: cannot listen on {host}:{port}: {exc.strerror or exc}",
                diagnostic=D.HTTP_BIND,
                host=host,
                port=port,
            ) from exc
        server = create_server(
            app,
            sockets=[listener],
            threads=max_connections,
            # the map holds the listener and the loop's wake-up pipe besides the channels
            connection_limit=max_connections + 2,
            channel_timeout=seconds,
            cleanup_interval=seconds,
            max_request_body_size=body,
            inbuf_overflow=body,  # bodies stay in memory (bounded by the cap), not on disk
            backlog=128,
            recv_bytes=_CHUNK,  # a large body in a few reads, not in 8 KiB ones
            outbuf_overflow=body,  # an answer as large stays in memory too
            ident="vigil",
        )
        assert isinstance(server, BaseWSGIServer)  # one address: never a MultiSocketServer
        self._changed = threading.Condition()
        server.channel_class = type("_Channel", (_Channel,), {"changed": self._changed})
        self._server = server
        self.port: int = int(server.effective_port)
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=server.run, name="vigil-kserve", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def connections(self) -> int:
        """Connections open now (accepted and not yet closed)."""
        return len(self._server.active_channels)

    def wait_for(self, predicate: Callable[[int], bool], timeout_s: float) -> bool:
        """Block until ``predicate(connections())`` holds; False when ``timeout_s`` passed."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.connections()), timeout_s)

    def _in_loop(self, thunk: Callable[[], None], timeout_s: float | None = None) -> bool:
        """Run ``thunk`` in the event loop's thread (asyncore is not thread-safe); with
        ``timeout_s``, wait for it. False when the loop is not running."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()

        def run() -> None:
            try:
                thunk()
            finally:
                done.set()

        self._server.trigger.pull_trigger(run)
        return True if timeout_s is None else done.wait(timeout_s)

    def stop(self, drain_timeout_s: float) -> int:
        """Take no new calls (503 on open connections), stop listening (new connections are
        refused), wait up to ``drain_timeout_s`` for the calls in flight, then close every
        connection once its answer is sent. Returns the calls still in flight then."""
        self.app.drain()
        if self._stopped:
            return self.app.wait_idle(0)
        self._stopped = True
        server = self._server
        if not self._in_loop(lambda: _stop_listening(server), 5.0):
            _stop_listening(server)
        left = self.app.wait_idle(drain_timeout_s)
        pool = server.task_dispatcher
        pool.shutdown(cancel_pending=True, timeout=0.5 if left else 5)  # answers written
        self._in_loop(lambda: _close_when_flushed(server), 5.0)
        self.wait_for(lambda n: n == 0, 5.0)
        # the loop ends when its map is empty: the wake-up pipe leaves it last; a call cut off
        # by the drain, answering later, finds its connection closed and the pipe a no-op
        self._in_loop(server.trigger.del_channel, 5.0)
        self._thread.join(5.0)
        server.pull_trigger = lambda: None
        for channel in list(server._map.values()):
            channel.close()
        server.trigger.close()
        return left


def _stop_listening(server: Any) -> None:
    server.accepting = False
    server.del_channel()
    server.socket.close()


def _close_when_flushed(server: Any) -> None:
    for channel in list(server.active_channels.values()):
        channel.close_when_flushed = True
