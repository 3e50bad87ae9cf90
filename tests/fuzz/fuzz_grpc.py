"""Fuzz the KServe v2 gRPC front (``vigil.service._grpc.KServeGrpc``) with whole ModelInfer
requests, as the servicer receives them once grpcio has parsed the message.

Input: one selector byte, then a serialized ``inference.ModelInferRequest`` (bytes protobuf
cannot parse are protobuf's to refuse, and end the input). Selector bit 0: a ``traceparent``
metadata entry (a valid one, or with bit 1 the first 55 bytes of the message as text); bit 2:
a ``tracestate`` entry; bit 3: the rate limiter's class entry.

The invariant: the call is answered, or aborted with a status the front documents and details
that start with a ``DIA-`` code -- never the catch-all ``internal error: ...`` -- and what the
model is given is a CPU tensor no larger than the message's bytes could make.

    python tests/fuzz/fuzz_grpc.py -max_total_time=600 /tmp/fz/grpc tests/fuzz/corpus/grpc
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fuzzing import instrumenting, main

with instrumenting(__name__):
    import grpc
    import torch
    from google.protobuf.message import DecodeError
    from tritonclient.grpc import service_pb2 as pb

    from vigil.schemas import Outcome, Result, ServedBy, State
    from vigil.service._grpc import KServeGrpc

_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_STATUSES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class _Aborted(Exception):
    def __init__(self, status: Any, details: str) -> None:
        super().__init__(details)
        self.status, self.details = status, details


class _Context:
    """The part of ``grpc.ServicerContext`` the servicer uses."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def abort(self, status: Any, details: str) -> None:
        raise _Aborted(status, details)


class _Supervisor:
    """Answers ``2 * x`` and remembers what it was given."""

    def __init__(self) -> None:
        self.given: list[Any] = []

    def infer(self, x: Any, **_: Any) -> Result:
        self.given.append(x)
        return Result(
            2 * x, State.NORMAL, ServedBy.PRIMARY, Outcome.OK, 1, None, "", 0, 0, b"\0" * 16
        )


_SUP = _Supervisor()
_SERVICE = KServeGrpc(
    _SUP, model_name="m", readiness=lambda: True, input_shape=(-1, 2), max_concurrency=1
)


def one_input(data: bytes) -> None:
    if not data:
        return
    selector, rest = data[0], data[1:]
    try:
        request = pb.ModelInferRequest.FromString(rest)
    except (DecodeError, RuntimeWarning, ValueError):
        return  # protobuf's own parser refused it: grpcio answers that before the servicer
    metadata: list[tuple[str, str]] = []
    if selector & 1:
        metadata.append(
            ("traceparent", rest[:55].decode("latin-1") if selector & 2 else _TRACEPARENT)
        )
    if selector & 4:
        metadata.append(("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"))
    if selector & 8:
        metadata.append(("x-vigil-class", "priority"))
    _SUP.given.clear()
    aborted: _Aborted | None = None
    try:
        _SERVICE.ModelInfer(request, _Context(tuple(metadata)))
    except _Aborted as exc:
        aborted = exc
    if aborted is not None:
        assert aborted.status in _STATUSES, (aborted.status, aborted.details)
        assert aborted.details.startswith("DIA-"), aborted.details
        return
    assert len(_SUP.given) == 1, "an answer the model did not give"
    (x,) = _SUP.given
    assert isinstance(x, torch.Tensor) and x.device.type == "cpu"
    assert x.numel() * x.element_size() <= max(len(rest), 1) * 8, (x.shape, len(rest))


if __name__ == "__main__":
    main(one_input)
