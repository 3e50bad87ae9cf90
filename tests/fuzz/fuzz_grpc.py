"""Fuzz the KServe v2 gRPC front (``vigil.service._grpc.KServeGrpc``) with whole ModelInfer
requests, as the servicer receives them once grpcio has parsed the message.

Input: one selector byte, then a serialized ``inference.ModelInferRequest`` (bytes protobuf
cannot parse are protobuf's to refuse, and end the input) -- or, with selector bit 4, bytes the
harness builds the message from field by field (:func:`structured`: model name and version,
datatype, shape with dimensions up to 2^64-1, raw bytes or typed contents, outputs, an id), so
that mutations reach the servicer's checks instead of protobuf's. Selector bit 0: a ``traceparent``
metadata entry (a valid one, or with bit 1 the first 55 bytes of the message as text); bit 2:
a ``tracestate`` entry; bit 3: the rate limiter's class entry.

The invariant: the call is answered, or aborted with a status the front documents and details
that start with a ``DIA-`` code -- never the catch-all ``internal error: ...`` -- and what the
model is given is a CPU tensor no larger than the message's bytes could make (the serialized
message's size: a built one may be larger than the input).

    python tests/fuzz/fuzz_grpc.py -max_total_time=600 /tmp/fz/grpc tests/fuzz/corpus/grpc
"""

from __future__ import annotations

import contextlib
import struct
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fuzzing import instrumenting, main

with instrumenting(__name__):
    import grpc
    import torch
    from _doubling import Doubling
    from google.protobuf.message import DecodeError
    from tritonclient.grpc import service_pb2 as pb

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


_SUP = Doubling()
_SERVICE = KServeGrpc(
    _SUP, model_name="m", readiness=lambda: True, input_shape=(-1, 2), max_concurrency=1
)


_DATATYPES = ("FP32", "FP16", "BF16", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "BOOL")
_FIELDS = {  # typed contents by datatype, and how a value is read from 8 bytes
    "BOOL": ("bool_contents", lambda b: bool(b[0] & 1)),
    "UINT8": ("uint_contents", lambda b: int.from_bytes(b[:4], "little")),
    "INT8": ("int_contents", lambda b: int.from_bytes(b[:4], "little", signed=True)),
    "INT16": ("int_contents", lambda b: int.from_bytes(b[:4], "little", signed=True)),
    "INT32": ("int_contents", lambda b: int.from_bytes(b[:4], "little", signed=True)),
    "INT64": ("int64_contents", lambda b: int.from_bytes(b, "little", signed=True)),
    "FP32": ("fp32_contents", lambda b: struct.unpack("<d", b)[0]),
    "FP64": ("fp64_contents", lambda b: struct.unpack("<d", b)[0]),
}


class _Bytes:
    """Consumes the input: each read takes what is left when the input runs short."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at : self.at + n]
        self.at += len(chunk)
        return chunk.ljust(n, b"\0")

    def byte(self) -> int:
        return self.take(1)[0]

    def dim(self) -> int:
        kind = self.byte() % 4  # small, 16-bit, 32-bit, 64-bit unsigned (beyond int64 too)
        return int.from_bytes(self.take((1, 2, 4, 8)[kind]), "little")


def structured(rest: bytes) -> Any:
    """A ModelInferRequest built from ``rest`` field by field."""
    b = _Bytes(rest)
    flags = b.byte()
    datatype = (
        _DATATYPES[b.byte() % len(_DATATYPES)] if flags & 1 == 0 else b.take(4).decode("latin-1")
    )
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input" if flags & 2 == 0 else "x", datatype=datatype
    )
    for _ in range(b.byte() % 6):
        dim = b.dim()
        tensor.shape.append(min(dim, 2**63 - 1))  # int64 field: protobuf refuses more
    request = pb.ModelInferRequest(
        model_name="m" if flags & 4 == 0 else "n", model_version=("", "1", "2")[b.byte() % 3]
    )
    if flags & 8:
        request.id = b.take(b.byte() % 40).decode("latin-1")
    if flags & 16:  # typed contents
        field, read = _FIELDS.get(datatype, ("fp32_contents", _FIELDS["FP32"][1]))
        values = [read(b.take(8)) for _ in range(b.byte() % 12)]
        with contextlib.suppress(ValueError, TypeError):  # protobuf refuses out-of-range values
            getattr(tensor.contents, field).extend(values)
    else:
        for _ in range(1 + (flags >> 6 & 1)):  # one raw part, or two
            request.raw_input_contents.append(b.take(b.byte() % 64))
    request.inputs.append(tensor)
    if flags & 32:
        request.outputs.add(name=("output", "other")[b.byte() % 2])
    return request


def one_input(data: bytes) -> None:
    if not data:
        return
    selector, rest = data[0], data[1:]
    if selector & 16:
        request = structured(rest)
    else:
        try:
            request = pb.ModelInferRequest.FromString(rest)
        except (DecodeError, RuntimeWarning, ValueError):
            return  # protobuf's parser refused it: grpcio answers that before the servicer
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
    size = request.ByteSize()  # the message's own bytes (a built one may outgrow the input)
    assert x.numel() * x.element_size() <= max(size, 1) * 8, (x.shape, size)


if __name__ == "__main__":
    main(one_input)
