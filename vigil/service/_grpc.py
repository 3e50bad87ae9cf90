"""The KServe v2 (Open Inference) protocol over gRPC, so that Triton's and KServe's gRPC clients
can call ``vigil serve`` unchanged.

Theory of operation
-------------------
:class:`KServeGrpc` implements ``inference.GRPCInferenceService`` (ServerLive, ServerReady,
ModelReady, ServerMetadata, ModelMetadata, ModelInfer; the rest answer UNIMPLEMENTED);
:class:`KServeGrpcServer` serves it with grpcio from a bounded thread pool, next to the Unix
socket server. Each ModelInfer calls :meth:`vigil.supervisor.Supervisor.infer` directly, as a
socket client's call does: the same contract, deadline, fallbacks and flight-log record.

The messages are tritonclient's generated ones (``tritonclient.grpc.service_pb2``, Triton's
``grpc_service.proto``: the KServe v2 ``grpc_predict_v2.proto`` with the same package, service,
field numbers and more). Vendoring KServe's proto would need generated code kept in step with
the protobuf runtime, and its ``inference.*`` names would collide with tritonclient's in any
process that imports both (protobuf's default pool refuses a duplicate symbol): reusing the
client's stubs keeps one definition, the one Triton's client speaks.

One model (``[grpc] model_name``, version ``1``) with one input named ``input``, as over HTTP;
inputs come as ``raw_input_contents`` (little-endian) or typed ``contents``; outputs always go
as ``raw_output_contents`` (what Triton does). Errors are gRPC statuses whose message starts
with the DIA code: INVALID_ARGUMENT (a contract breach, a malformed request), NOT_FOUND (another
model), UNAVAILABLE (SAFE_STOP without a fallback, draining), RESOURCE_EXHAUSTED (more than
``max_concurrency`` calls at once; a message over ``max_request_mb``, refused by gRPC itself),
INTERNAL (an answer it cannot send, any other failure: one log line, never a traceback).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import torch
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from vigil import _diagnostics as D
from vigil.errors import InvalidInput, ServiceConfigError, Unavailable, VigilError
from vigil.schemas import Result
from vigil.service._calls import Admission, Call
from vigil.service._v2 import (
    DATATYPES,
    MAX_DIMS,
    NAME_OF,
    CallGate,
    Refused,
    infer_kwargs,
    named_outputs,
    oversized_shape,
    request_id_of,
    vigil_parameters,
)

__all__ = ["KServeGrpc", "KServeGrpcServer"]

_LOG = logging.getLogger("vigil.grpc")
_MB = 1 << 20
#: typed ``contents`` field per datatype (FP16 and BF16 have none: raw bytes only)
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


class _Refused(Refused):
    """A gRPC status and a diagnostic-coded message (never leaves this module)."""

    def __init__(self, status: grpc.StatusCode, diagnostic: D.Diagnostic, message: str) -> None:
        super().__init__(diagnostic, message)
        self.status = status

    @classmethod
    def of(cls, status: grpc.StatusCode, error: VigilError) -> _Refused:
        return cls(status, error.diagnostic, error.message)


def _invalid(diagnostic: D.Diagnostic, message: str) -> _Refused:
    return _Refused(grpc.StatusCode.INVALID_ARGUMENT, diagnostic, message)


class KServeGrpc(pb_grpc.GRPCInferenceServiceServicer, CallGate):  # type: ignore[misc]
    """The v2 gRPC service.

    Args:
        supervisor: answers ``infer`` (a :class:`~vigil.supervisor.Supervisor`).
        model_name: the one model name served.
        readiness: may the service take calls now (not SAFE_STOP, not draining, finished
            starting).
        input_shape, input_dtype: the contract's shape (``-1`` any) and dtype name, for the
            metadata; None when not declared.
        max_concurrency: ModelInfer calls at once; one more is RESOURCE_EXHAUSTED (DIA-7175).
        on_call: ``on_call(result_or_None, exception_or_None, seconds, trace_id)`` after each
            call and each request refused as malformed (metrics).
        on_refused: ``on_refused(code)`` for each request refused before it became a call
            (unknown model, draining, every slot taken); what it raises is ignored.
    """

    def __init__(
        self,
        supervisor: Any,
        *,
        model_name: str,
        readiness: Any,
        input_shape: tuple[int, ...] | None = None,
        input_dtype: str | None = None,
        max_concurrency: int = 16,
        admission: Admission | None = None,
        class_header: str = "x-vigil-class",
        on_call: Any = None,
        on_refused: Any = None,
    ) -> None:
        CallGate.__init__(self, readiness, on_refused)
        self.supervisor = supervisor
        self.on_call = on_call  # ServiceMetrics.observe_call: (result, error, seconds, trace)
        self.admission = admission if admission is not None else Admission(supervisor)
        self.class_header = class_header.lower()  # gRPC metadata keys are lower case
        self.model_name = model_name
        self.input_shape = input_shape
        self.input_dtype = input_dtype
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._outputs: list[tuple[str, str, list[int]]] | None = None  # from the first answer

    # --- health and metadata -------------------------------------------------------------

    def ServerLive(self, request: Any, context: Any) -> Any:  # the proto's names
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._ready())

    def ModelReady(self, request: Any, context: Any) -> Any:
        known = request.name == self.model_name and request.version in ("", "1")
        return pb.ModelReadyResponse(ready=known and self._ready())

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="vigil", version="1", extensions=[])

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        return self._call(context, lambda: self._metadata(request))

    def _metadata(self, request: Any) -> Any:
        self._check_model(request.name, request.version)
        shape = [-1] if self.input_shape is None else list(self.input_shape)
        datatype = NAME_OF[getattr(torch, self.input_dtype or "float32")]
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self.model_name,
            versions=["1"],
            platform="vigil",
            inputs=[meta(name="input", datatype=datatype, shape=shape)],
            outputs=[meta(name=n, datatype=t, shape=s) for n, t, s in self._outputs or []],
        )

    # --- inference -----------------------------------------------------------------------

    def ModelInfer(self, request: Any, context: Any) -> Any:
        return self._call(context, lambda: self._infer(request, context))

    def _call(self, context: Any, fn: Any) -> Any:
        try:
            return fn()
        except _Refused as exc:
            text, status = exc.text, exc.status
        except Exception as exc:  # fail closed: one line, INTERNAL, never a traceback
            _LOG.warning("vigil grpc: call failed: %s: %s", type(exc).__name__, exc)
            text, status = f"internal error: {type(exc).__name__}", grpc.StatusCode.INTERNAL
        context.abort(status, text)  # raises: the call ends with this status
        return None  # not reached

    def _check_model(self, name: str, version: str) -> None:
        if name != self.model_name or version not in ("", "1"):
            self.refused(D.GRPC_UNKNOWN_MODEL.code)
            raise _Refused(
                grpc.StatusCode.NOT_FOUND,
                D.GRPC_UNKNOWN_MODEL,
                f"unknown model {name!r} version {version!r}; this service serves "
                f"{self.model_name!r} version '1'",
            )

    def _infer(self, request: Any, context: Any) -> Any:
        self._check_model(request.model_name, request.model_version)
        if self.draining:
            self.refused(D.GRPC_DRAINING.code)
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE, D.GRPC_DRAINING, "the service is draining; retry"
            )
        call = self._admit(context)
        try:
            x = _input(request)
        except _Refused as exc:  # a malformed request: the span ends with the refusal
            self.admission.end(call, None, exc)
            self._observe(None, exc.as_error(), 0.0, call)  # counted: protocol_error
            raise
        try:
            self._take_slot()
        except _Refused as exc:  # the span ends with the refusal
            self.admission.end(call, None, exc)
            raise
        result: Result | None = None
        try:
            result = self._supervised(x, call, request_id_of(request.id))
        except _Refused as exc:
            self.admission.end(call, None, exc)
            raise
        finally:
            self._slots.release()
        self.admission.end(call, result, None)
        return self._answer(request, result, [out.name for out in request.outputs], call)

    def _take_slot(self) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused(D.GRPC_BUSY.code)
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                D.GRPC_BUSY,
                "every [grpc] max_concurrency slot is taken; retry after a back-off",
            )

    def _admit(self, context: Any) -> Call:
        """The call's W3C trace context (the ``traceparent`` and ``tracestate`` metadata, each
        ignored when invalid, as on HTTP) and rate class (the ``[limits] class_header``
        metadata); a call over its class's limit is refused RESOURCE_EXHAUSTED with DIA-2021,
        recorded as REJECTED."""
        metadata: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):  # binary (-bin) metadata is not for us
                metadata[key] = ", ".join((metadata[key], value)) if key in metadata else value
        call = self.admission.begin(
            metadata.get("traceparent"),
            metadata.get(self.class_header),
            "grpc",
            metadata.get("tracestate"),  # several entries: joined with commas, one list
        )
        refusal = self.admission.refusal(call, None)
        if refusal is not None:
            self.admission.end(call, None, refusal.error)
            self._observe(None, refusal.error, 0.0, call)
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED, D.RATE_LIMITED, refusal.error.message
            )
        return call

    def _supervised(self, x: torch.Tensor, call: Call, request_id: bytes | None) -> Result:
        with self._calls:
            self._in_flight += 1
            self._calls.notify_all()
        result: Result | None = None
        error: Exception | None = None
        t0 = time.perf_counter()
        try:
            result = self.supervisor.infer(x, **infer_kwargs(call, request_id))
        except Exception as exc:  # mapped to a status below, after the call is counted
            error = exc
        finally:
            with self._calls:
                self._in_flight -= 1
                self._calls.notify_all()
        self._observe(result, error, time.perf_counter() - t0, call)
        if isinstance(error, InvalidInput):
            raise _Refused.of(grpc.StatusCode.INVALID_ARGUMENT, error)
        if isinstance(error, Unavailable):
            raise _Refused.of(grpc.StatusCode.UNAVAILABLE, error)
        if isinstance(error, VigilError):
            raise _Refused.of(grpc.StatusCode.INTERNAL, error)
        if error is not None:
            raise error
        assert result is not None
        return result

    def _observe(
        self, result: Result | None, error: BaseException | None, seconds: float, call: Call
    ) -> None:
        """Count the request in the service's per-request metrics (as the other fronts do)."""
        if self.on_call is not None:
            with contextlib.suppress(Exception):  # metrics must not hurt the service
                self.on_call(result, error, seconds, call.trace_id)

    def _answer(self, request: Any, result: Result, wanted: list[str], call: Call) -> Any:
        outputs = named_outputs(result)
        if outputs is None:
            raise _Refused(
                grpc.StatusCode.INTERNAL,
                D.GRPC_OUTPUT_UNSUPPORTED,
                f"call seq {result.seq}: the answer is a {type(result.output).__name__}",
            )
        if self._outputs is None:
            self._outputs = [(n, NAME_OF[t.dtype], list(t.shape)) for n, t in outputs]
        unknown = set(wanted) - {n for n, _ in outputs}
        if unknown:
            raise _invalid(D.GRPC_TENSOR_INVALID, f"no output named {sorted(unknown)}")
        response = pb.ModelInferResponse(
            model_name=self.model_name, model_version="1", id=request.id
        )
        for name, t in outputs:
            if wanted and name not in wanted:
                continue
            response.outputs.add(name=name, datatype=NAME_OF[t.dtype], shape=list(t.shape))
            flat = t.detach().cpu().contiguous().reshape(-1)
            raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
            response.raw_output_contents.append(raw)
        for key, value in vigil_parameters(result, call).items():
            if isinstance(value, bool):
                response.parameters[key].bool_param = value
                continue
            if isinstance(value, int):
                response.parameters[key].int64_param = value
            else:
                response.parameters[key].string_param = value
        return response


def _input(request: Any) -> torch.Tensor:
    """The request's one input as a tensor, every size checked before anything is allocated."""
    if len(request.inputs) != 1:
        raise _invalid(D.GRPC_REQUEST_INVALID, f"{len(request.inputs)} inputs; send one, 'input'")
    raws = request.raw_input_contents
    if len(raws) not in (0, 1):
        raise _invalid(
            D.GRPC_REQUEST_INVALID, f"{len(raws)} raw_input_contents for 1 input; send 0 or 1"
        )
    spec = request.inputs[0]
    if spec.name != "input":
        raise _invalid(D.GRPC_TENSOR_INVALID, f"input {spec.name!r}: the input is 'input'")
    dtype = DATATYPES.get(spec.datatype)
    if dtype is None:
        raise _invalid(
            D.GRPC_TENSOR_INVALID,
            f"input: datatype {spec.datatype!r} is not one of {', '.join(DATATYPES)}",
        )
    shape = list(spec.shape)
    if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
        raise _invalid(
            D.GRPC_TENSOR_INVALID,
            f"input: shape {shape[: MAX_DIMS + 1]} must be at most {MAX_DIMS} dims >= 0",
        )
    oversized = oversized_shape(shape)
    if oversized is not None:
        raise _invalid(D.GRPC_TENSOR_INVALID, f"input: shape {shape}: {oversized}")
    count = math.prod(shape)
    if raws:
        nbytes = count * dtype.itemsize
        if len(raws[0]) != nbytes:
            raise _invalid(
                D.GRPC_TENSOR_INVALID,
                f"input: {len(raws[0])} raw bytes, but shape {shape} of {spec.datatype} is "
                f"{nbytes} bytes",
            )
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(bytearray(raws[0]), dtype=dtype).reshape(shape)
    return _from_contents(spec, shape, count, dtype)


def _from_contents(spec: Any, shape: list[int], count: int, dtype: torch.dtype) -> torch.Tensor:
    field = _CONTENTS.get(spec.datatype)
    values = None if field is None else getattr(spec.contents, field)
    if values is None:
        raise _invalid(
            D.GRPC_TENSOR_INVALID, f"input: {spec.datatype} travels as raw_input_contents only"
        )
    if len(values) != count:
        raise _invalid(
            D.GRPC_TENSOR_INVALID,
            f"input: shape {shape} holds {count} values, contents.{field} has {len(values)}",
        )
    try:
        return torch.tensor(list(values), dtype=dtype).reshape(shape)
    except (RuntimeError, OverflowError, ValueError) as exc:  # beyond int64: ValueError
        raise _invalid(
            D.GRPC_TENSOR_INVALID, f"input: a value does not fit {spec.datatype}: {exc}"
        ) from None


class KServeGrpcServer:
    """:class:`KServeGrpc` served on ``host:port`` (port 0: a free one).

    Args:
        service: the servicer.
        host, port: where to listen.
        max_request_bytes: the largest request message (gRPC refuses a larger one,
            RESOURCE_EXHAUSTED).
        max_concurrency: the servicer's ModelInfer slots; the server runs at most that many
            RPCs plus a few for health and metadata, and refuses more (RESOURCE_EXHAUSTED).
        idle_timeout_s: a connection without calls that long is closed (GOAWAY).

    Raises:
        ServiceConfigError: DIA-7230, the address cannot be bound.
    """

    def __init__(
        self,
        service: KServeGrpc,
        host: str,
        port: int,
        *,
        max_request_bytes: int = 64 * _MB,
        max_concurrency: int = 16,
        idle_timeout_s: float = 300.0,
    ) -> None:
        self.service = service
        rpcs = max_concurrency + 4  # health and metadata keep answering while infer is full
        self._pool = futures.ThreadPoolExecutor(rpcs, thread_name_prefix="vigil-grpc")
        self._server = grpc.server(
            self._pool,
            maximum_concurrent_rpcs=rpcs,
            options=[
                ("grpc.max_receive_message_length", max_request_bytes),
                ("grpc.max_connection_idle_ms", max(1, round(idle_timeout_s * 1000))),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, self._server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises where older versions returned 0
            bound, why = 0, str(exc)
        else:
            why = "the address is in use or not local"
        if not bound:
            self._server.stop(None)
            self._pool.shutdown(wait=True)
            raise ServiceConfigError(
                f"[grpc].listen: cannot listen on {host}:{port}: {why}",
                diagnostic=D.GRPC_BIND,
                host=host,
                port=port,
            )
        self.port: int = bound
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"

    def start(self) -> None:
        self._server.start()

    def stop(self, drain_timeout_s: float) -> int:
        """Take no new calls (UNAVAILABLE), stop listening, wait up to ``drain_timeout_s`` for
        the calls in flight, then cancel what is left. Returns the calls still in flight then."""
        self.service.drain()
        stopped = self._server.stop(drain_timeout_s)
        left = self.service.wait_idle(drain_timeout_s)
        stopped.wait(drain_timeout_s + 5.0)
        self._pool.shutdown(wait=left == 0)
        return left
