"""What the KServe v2 (Open Inference) fronts share, over HTTP (:mod:`._kserve`) and gRPC
(:mod:`._grpc`): the datatype table, how an answer is named and described, how a refusal is
worded, and the gate that counts calls in flight and drains them. Needs torch only (no server
library)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from collections.abc import Callable
from typing import Any

import torch

from vigil import _diagnostics as D
from vigil.errors import ProtocolError
from vigil.schemas import Result
from vigil.service._calls import Call
from vigil.service._protocol import MAX_DIM, MAX_EXTENT

__all__ = [
    "DATATYPES",
    "MAX_DIMS",
    "NAME_OF",
    "CallGate",
    "Refused",
    "named_outputs",
    "oversized_shape",
    "vigil_parameters",
]

MAX_DIMS = 32

#: KServe datatype -> torch dtype (the ones both sides share; BYTES and unsigned > 8 bits: no)
DATATYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "FP32": torch.float32,
    "FP64": torch.float64,
}
NAME_OF = {v: k for k, v in DATATYPES.items()}


class Refused(Exception):
    """A front's refusal of a request (never leaves the fronts): its diagnostic, its message,
    and :attr:`text`, the one form both fronts answer with, ``DIA-xxxx NAME: message``. Give
    it a :class:`~vigil.errors.VigilError`'s ``message``, never its ``str`` (which already
    starts with the code)."""

    def __init__(self, diagnostic: D.Diagnostic, message: str) -> None:
        super().__init__(message)
        self.diagnostic = diagnostic
        self.code = diagnostic.code  # the span's vigil.code
        self.message = message
        self.text = f"{diagnostic.code} {diagnostic.name}: {message}"

    def as_error(self) -> ProtocolError:
        """The refusal of a malformed request as the metrics count it (``protocol_error``)."""
        return ProtocolError(self.message, diagnostic=self.diagnostic)


class CallGate:
    """Counts the calls inside ``infer`` and refuses new ones once :meth:`drain` ran.

    Args:
        readiness: may the service take calls now (not SAFE_STOP, not draining, finished
            starting).
        on_refused: ``on_refused(code)`` for each refusal that never became a call (busy,
            draining, too large, unknown model: what ``on_call`` does not see), for metrics;
            what it raises is ignored.
    """

    def __init__(
        self, readiness: Callable[[], bool], on_refused: Callable[[str], None] | None = None
    ) -> None:
        self.readiness = readiness
        self.on_refused = on_refused
        self.draining = False
        self._calls = threading.Condition()
        self._in_flight = 0

    def refused(self, code: str) -> None:
        """Count a refusal that never became a call (``on_refused``); never raises."""
        if self.on_refused is not None:
            with contextlib.suppress(Exception):  # metrics must not hurt the service
                self.on_refused(code)

    def drain(self) -> None:
        """Take no new calls: each is refused (503 / UNAVAILABLE) from now on."""
        with self._calls:
            self.draining = True
            self._calls.notify_all()

    def statistics(self) -> dict[str, int]:
        """``in_flight``: calls inside ``infer`` now; ``draining``: 1 once :meth:`drain` ran."""
        with self._calls:
            return {"in_flight": self._in_flight, "draining": int(self.draining)}

    def wait_for(self, predicate: Callable[[dict[str, int]], bool], timeout_s: float) -> bool:
        """Block until ``predicate(statistics())`` holds; False when ``timeout_s`` passed."""
        with self._calls:
            return self._calls.wait_for(
                lambda: predicate({"in_flight": self._in_flight, "draining": int(self.draining)}),
                timeout_s,
            )

    def wait_idle(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the calls in flight; returns how many are left."""
        with self._calls:
            self._calls.wait_for(lambda: self._in_flight == 0, timeout_s)
            return self._in_flight

    def _ready(self) -> bool:
        try:
            return not self.draining and self.readiness()
        except Exception:  # fail closed: not ready
            return False


def named_outputs(result: Result) -> list[tuple[str, torch.Tensor]] | None:
    """The answer's tensors by name: ``output`` (a tensor), ``output_0``.. (a tuple or list), or
    the dict's keys; None when it is anything else or a dtype the protocol lacks."""
    out = result.output
    if isinstance(out, torch.Tensor):
        named = [("output", out)]
    elif isinstance(out, tuple | list):
        named = [(f"output_{i}", t) for i, t in enumerate(out)]
    elif isinstance(out, dict) and all(isinstance(k, str) for k in out):
        named = list(out.items())
    else:
        return None
    if not all(isinstance(t, torch.Tensor) and t.dtype in NAME_OF for _, t in named):
        return None
    return named


def vigil_parameters(result: Result, call: Call | None = None) -> dict[str, Any]:
    """How the answer came about, as the socket's RESULT frame says it (docs/PROTOCOL.md),
    and the call's trace id (when it had one) and whether its traceparent was ignored."""
    extra: dict[str, Any] = {}
    if call is not None and call.trace_id is not None:
        extra["vigil_trace_id"] = call.trace_id.hex()
    if call is not None and call.traceparent_ignored:
        extra["vigil_traceparent_ignored"] = True
    return extra | {
        "vigil_served_by": result.served_by.name,
        "vigil_outcome": result.outcome.name,
        "vigil_state": result.state.name,
        "vigil_seq": result.seq,
        "vigil_code": "" if result.code is None else result.code.code,
        "vigil_reason": result.reason,
        "vigil_request_id": result.request_id.hex(),
        "vigil_latency_ns": result.latency_ns,
    }


def oversized_shape(shape: list[int]) -> str | None:
    """Why torch could not lay out a tensor of ``shape`` (dimensions already checked to be
    integers >= 0), or None: the socket protocol's rule (``_protocol._elements``), every
    dimension at most 2^32-1 and the extent -- the product with a zero counted as one, which
    bounds every stride -- too. A zero-size shape such as [0, 2^62, 2^62] holds no element
    yet overflows torch's stride computation (a RuntimeError deep in the call)."""
    extent = 1
    for d in shape:
        if d > MAX_DIM:
            return f"dimension {d} exceeds {MAX_DIM}"
        extent *= max(d, 1)
    if extent > MAX_EXTENT:
        return f"shape spans {extent} elements (zero dimensions counted as one), over {MAX_EXTENT}"
    return None


def request_id_of(text: Any) -> bytes | None:
    """The 16-byte request id the flight log records for a KServe request's ``id``: a UUID
    (in any form :class:`uuid.UUID` reads, 32 hex digits included) as its 16 bytes, so that
    a caller's UUID is found as is in ``vigil dump``; any other non-empty string as the first
    16 bytes of its SHA-256 (the same id, the same record id); None without one (the
    supervisor generates an id)."""
    if not isinstance(text, str) or not text:
        return None
    if len(text) <= 45:  # the longest form uuid.UUID accepts: "urn:uuid:" + 36
        try:
            return uuid.UUID(text).bytes
        except ValueError:
            pass
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


def infer_kwargs(call: Call, request_id: bytes | None) -> dict[str, bytes]:
    """``Supervisor.infer``'s keywords for a v2 call: its trace context and request id, each
    only when there is one (stand-ins that know neither are called as before)."""
    kwargs = call.infer_kwargs()
    if request_id is not None:
        kwargs["request_id"] = request_id
    return kwargs
