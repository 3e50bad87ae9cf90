"""The service socket's wire format: frames and the tensors in them (sans-IO).

Theory of operation
-------------------
A connection carries a sequence of frames, each a fixed 32-byte header and a body. The header
says everything needed to decide, before a single body byte is read or allocated, whether the
frame can be accepted: the magic, the protocol version, a known frame type, reserved flags
zero, and a body length under the receiver's cap. The CRC32C at the end of the header covers
the header's first 28 bytes and the whole body; it is checked once the body is in. A header
that fails any of these checks leaves the stream unsynchronised (nothing says where the next
frame would begin): the receiver answers with an ERROR frame and closes. A body that passes
the CRC but says something invalid (a tensor whose shape does not match its bytes) is refused
with an ERROR frame, and the connection goes on.

Tensors travel as raw little-endian bytes, each starting 8-byte aligned within the body, so
that the receiver builds them with ``torch.frombuffer`` on the received buffer, without a copy.
Every count, rank, dimension and length is checked against the bytes actually present before
anything is built.

This module owns no socket, thread or clock: it turns values into lists of buffers and buffers
into values, and raises :class:`~vigil.errors.ProtocolError` (with a DIA-71xx code) for
anything it refuses -- for any bytes at all, never another exception. ``docs/PROTOCOL.md`` is
the same layout in byte tables.
"""

from __future__ import annotations

import enum
import functools
import json
import struct
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import crc32c as _crc

from vigil import _diagnostics as D
from vigil.errors import ProtocolError
from vigil.schemas import Outcome, Result, ServedBy, State
from vigil.schemas._result import diagnostic_of

if TYPE_CHECKING:
    import torch

MAGIC = b"VGLP"
VERSION = 1
HEADER = struct.Struct("<4sBBH16sII")  # magic, version, type, flags, request id, length, crc
HEADER_SIZE = HEADER.size  # 32
_CRC_AT = HEADER_SIZE - 4  # the CRC covers the header before it, then the body
MAX_FRAME_BODY = 0xFFFF_FFFF
MAX_NDIM = 8
MAX_DIM = 0xFFFF_FFFF
MAX_EXTENT = 0xFFFF_FFFF  # product of the dimensions, a zero counted as one (bounds strides)
MAX_TENSORS = 1024
MAX_NAME = 255
ZERO_ID = bytes(16)
FIRST_CHUNK = 64 << 10  # a receiver's body buffer starts this large and doubles as bytes arrive
FLAG_CONTEXT = 0x0001  # INFER only: the body opens with a context block (traceparent, class)
MAX_CLASS = 64  # a rate class name's UTF-8 bytes at most

assert sys.byteorder == "little", "the wire format is little-endian; so is every supported host"


@enum.unique
class FrameType(enum.IntEnum):
    """What a frame carries (header byte 5)."""

    INFER = 1  # client -> server: tensor payload
    RESULT = 2  # server -> client: result metadata + tensor payload
    ERROR = 3  # server -> client: error class, code, message, JSON detail
    HEALTH = 4  # client -> server: empty
    HEALTH_REPLY = 5  # server -> client: ready, state name, JSON detail
    PING = 6  # client -> server: empty
    PONG = 7  # server -> client: empty


REQUESTS = frozenset({FrameType.INFER, FrameType.HEALTH, FrameType.PING})
RESPONSES = frozenset({FrameType.RESULT, FrameType.ERROR, FrameType.HEALTH_REPLY, FrameType.PONG})
EMPTY = frozenset({FrameType.HEALTH, FrameType.PING})  # requests whose body is empty


@enum.unique
class ErrorClass(enum.IntEnum):
    """How an ERROR frame's receiver should treat it (body byte 0)."""

    PROTOCOL = 0  # the request broke the protocol (DIA-71xx)
    INVALID_INPUT = 1  # the supervisor refused the input (recorded REJECTED)
    UNAVAILABLE = 2  # no trustworthy answer (recorded, served by NONE)
    SERVER = 3  # another failure inside the service (DIA-7114 or the error's own code)
    BUSY = 4  # too many connections, or shutting down: nothing was done, retry later


# dtype code -> (dtype, item size); the table is part of the protocol and never renumbered
# dtype code -> (torch dtype name, element size). torch is imported on first use, so that a
# client (vigil.service.Client) imports nothing heavy until it encodes or decodes a tensor.
_DTYPE_TABLE = {
    1: ("float32", 4),
    2: ("float16", 2),
    3: ("bfloat16", 2),
    4: ("float64", 8),
    5: ("int8", 1),
    6: ("int16", 2),
    7: ("int32", 4),
    8: ("int64", 8),
    9: ("uint8", 1),
    10: ("bool", 1),
}


@functools.cache
def _tables() -> tuple[dict[int, tuple[torch.dtype, int]], dict[torch.dtype, int]]:
    """``(code -> (dtype, size), dtype -> code)``, built when torch is first needed."""
    import torch  # noqa: PLC0415 - see _DTYPE_TABLE

    dtypes = {code: (getattr(torch, name), size) for code, (name, size) in _DTYPE_TABLE.items()}
    return dtypes, {dtype: code for code, (dtype, _) in dtypes.items()}


def __getattr__(name: str) -> Any:
    if name == "DTYPES":  # code -> (torch dtype, element size)
        return _tables()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@enum.unique
class Kind(enum.IntEnum):
    """The shape of a tensor payload (payload byte 0)."""

    TENSOR = 0  # exactly one tensor, with an empty name
    MAPPING = 1  # names (unique, non-empty) -> tensors
    SEQUENCE = 2  # an ordered tuple of tensors, names empty (outputs only)


_PAYLOAD = struct.Struct("<BBH")  # kind, reserved 0, count
_ENTRY = struct.Struct("<BB")  # dtype code, ndim (after the name)
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_RESULT = struct.Struct("<BBBBQQQ")  # served_by, state, outcome, code len, seq, age, latency
_ERROR = struct.Struct("<BBB")  # class, closing, code len
_HEALTH = struct.Struct("<BB")  # ready, state name len
_DIMS = [struct.Struct(f"<{n}Q") for n in range(MAX_NDIM + 1)]
_PAD = bytes(8)

Buffer = bytes | bytearray | memoryview


class Header(NamedTuple):
    """A frame header that passed every check that needs no body."""

    type: FrameType
    flags: int
    request_id: bytes
    length: int
    crc: int


class Frame(NamedTuple):
    """One whole frame whose CRC matched."""

    type: FrameType
    request_id: bytes
    body: Buffer
    flags: int = 0


class Context(NamedTuple):
    """An INFER frame's context block: the raw values, checked later by their users (the
    traceparent by :mod:`._trace`, the class by the rate limiter)."""

    traceparent: str | None
    rate_class: str | None


class ErrorInfo(NamedTuple):
    """An ERROR frame's body."""

    error_class: ErrorClass
    closing: bool
    code: str
    message: str
    detail: dict[str, Any]


def fail(diagnostic: D.Diagnostic, message: str, **context: Any) -> ProtocolError:
    """A :class:`ProtocolError` carrying ``diagnostic`` (raise it)."""
    return ProtocolError(message, diagnostic=diagnostic, **context)


# Stream-fatal codes: after one of these the receiver cannot find the next frame.
FATAL = frozenset(
    {
        D.BAD_MAGIC.code,
        D.PROTOCOL_VERSION.code,
        D.FRAME_CRC.code,
        D.FRAME_TOO_LARGE.code,
        D.FRAME_TYPE.code,
        D.FRAME_TRUNCATED.code,
    }
)

# --- frames ------------------------------------------------------------------------------


def encode_frame(
    ftype: FrameType,
    request_id: bytes,
    body: list[Buffer] | tuple[Buffer, ...] = (),
    *,
    flags: int = 0,
) -> list[Buffer]:
    """The frame's buffers, header first; send them in order (no body bytes are copied).

    Raises:
        ProtocolError: DIA-7105 when the body exceeds the 4 GiB a header can announce.
    """
    if len(request_id) != 16:
        raise fail(D.PROTOCOL_ERROR, f"request id must be 16 bytes, got {len(request_id)}")
    length = sum(len(memoryview(b).cast("B")) for b in body)
    if length > MAX_FRAME_BODY:
        raise fail(D.FRAME_TOO_LARGE, f"body of {length} bytes exceeds {MAX_FRAME_BODY}")
    head = HEADER.pack(MAGIC, VERSION, int(ftype), flags, request_id, length, 0)[:_CRC_AT]
    crc = _crc.crc32c(head)
    for b in body:
        crc = _crc.crc32c(b, crc)
    return [head + _U32.pack(crc), *body]


def parse_header(data: Buffer, *, max_body: int, expect: frozenset[FrameType]) -> Header:
    """Check a 32-byte header before any of its body is read.

    Args:
        data: exactly :data:`HEADER_SIZE` bytes.
        max_body: the largest body this receiver accepts.
        expect: the frame types this receiver accepts (REQUESTS on a server).

    Raises:
        ProtocolError: DIA-7103 bad magic, DIA-7102 another version (``theirs``, ``ours``),
            DIA-7106 an unknown or unexpected type or reserved flags set, DIA-7109 a body
            announced on a PING or HEALTH request (theirs is empty), DIA-7105 a body over
            ``max_body`` -- all stream-fatal (the body is never read): answer, then close.
    """
    if len(data) != HEADER_SIZE:
        raise fail(D.FRAME_TRUNCATED, f"header of {len(data)} bytes, expected {HEADER_SIZE}")
    magic, version, ftype, flags, rid, length, crc = HEADER.unpack(data)
    if magic != MAGIC:
        raise fail(D.BAD_MAGIC, f"magic {bytes(magic)!r}, expected {MAGIC!r}: not a vigil client")
    if version != VERSION:
        raise fail(
            D.PROTOCOL_VERSION,
            f"protocol version {version} is not supported: this side speaks version {VERSION}",
            theirs=version,
            ours=VERSION,
        )
    try:
        kind = FrameType(ftype)
    except ValueError:
        raise fail(D.FRAME_TYPE, f"unknown frame type {ftype}") from None
    if kind not in expect:
        raise fail(D.FRAME_TYPE, f"frame type {kind.name} is not accepted here")
    if flags and (kind is not FrameType.INFER or flags != FLAG_CONTEXT):
        raise fail(
            D.FRAME_TYPE,
            f"flags 0x{flags:04x} on a {kind.name} frame: only INFER may set 0x0001 (CONTEXT), "
            "every other bit is reserved",
        )
    if length and kind in EMPTY:
        raise fail(
            D.BODY_MALFORMED,
            f"a {kind.name} frame's body is empty; this one announces {length} bytes",
            size=length,
        )
    if length > max_body:
        raise fail(
            D.FRAME_TOO_LARGE,
            f"body of {length} bytes exceeds the limit of {max_body}",
            size=length,
            limit=max_body,
        )
    return Header(kind, flags, bytes(rid), length, crc)


def check_crc(header_bytes: Buffer, body: Buffer, expected: int) -> None:
    """Raises ProtocolError DIA-7104 when the CRC over header and body does not match."""
    actual = _crc.crc32c(body, _crc.crc32c(bytes(header_bytes[:_CRC_AT])))
    if actual != expected:
        raise fail(D.FRAME_CRC, f"CRC32C 0x{actual:08x}, header says 0x{expected:08x}")


def decode_frame(
    data: Buffer, *, max_body: int = MAX_FRAME_BODY, expect: frozenset[FrameType] | None = None
) -> Frame:
    """Decode exactly one whole frame from ``data`` (no byte more, no byte less).

    Raises:
        ProtocolError: the frame is refused (see :func:`parse_header`), truncated (DIA-7107),
            followed by other bytes (DIA-7109), or fails its CRC (DIA-7104).
    """
    view = memoryview(data).cast("B")
    if len(view) < HEADER_SIZE:
        raise fail(D.FRAME_TRUNCATED, f"{len(view)} bytes, less than a header")
    head = parse_header(
        view[:HEADER_SIZE], max_body=max_body, expect=expect or REQUESTS | RESPONSES
    )
    end = HEADER_SIZE + head.length
    if len(view) < end:
        raise fail(D.FRAME_TRUNCATED, f"body of {len(view) - HEADER_SIZE}/{head.length} bytes")
    if len(view) > end:
        raise fail(D.BODY_MALFORMED, f"{len(view) - end} bytes after the frame")
    body = view[HEADER_SIZE:end]
    check_crc(view[:HEADER_SIZE], body, head.crc)
    return Frame(head.type, head.request_id, body, head.flags)


# --- the context block (INFER with FLAG_CONTEXT) -----------------------------------------


def encode_context(traceparent: str | None, rate_class: str | None) -> bytes:
    """The context block: traceparent length (u8), class length (u8), the traceparent (ASCII),
    the class (UTF-8), zeros to the next multiple of 8 (the tensor payload follows).

    Raises:
        ProtocolError: DIA-7150 a traceparent that is not ASCII of at most 255 characters, or a
            class that is not 1..64 UTF-8 bytes.
    """
    try:
        tp = b"" if traceparent is None else traceparent.encode("ascii")
    except UnicodeEncodeError:
        raise fail(D.FRAME_CONTEXT_INVALID, "the traceparent is not ASCII") from None
    cls = b"" if rate_class is None else rate_class.encode("utf-8", "surrogatepass")
    if len(tp) > 255 or (traceparent is not None and not tp):
        raise fail(D.FRAME_CONTEXT_INVALID, f"a traceparent of {len(tp)} characters (1..255)")
    if not 0 < len(cls) <= MAX_CLASS and rate_class is not None:
        raise fail(D.FRAME_CONTEXT_INVALID, f"a rate class of {len(cls)} bytes (1..{MAX_CLASS})")
    block = bytes((len(tp), len(cls))) + tp + cls
    return block + _PAD[: -len(block) % 8]


def decode_context(body: Buffer) -> tuple[Context, int]:
    """The context block at the start of ``body`` and where the tensor payload begins.

    Raises:
        ProtocolError: DIA-7150 for a block that ends early, a traceparent that is not ASCII, a
            class that is not UTF-8 or longer than 64 bytes, or padding that is not zero.
    """
    view = memoryview(body).cast("B")
    if len(view) < 2:
        raise fail(D.FRAME_CONTEXT_INVALID, "the body ends before the context block")
    n_tp, n_cls = view[0], view[1]
    end = 2 + n_tp + n_cls
    payload = end + (-end % 8)
    if payload > len(view):
        raise fail(D.FRAME_CONTEXT_INVALID, f"a context block of {payload} bytes, body shorter")
    if n_cls > MAX_CLASS:
        raise fail(D.FRAME_CONTEXT_INVALID, f"a rate class of {n_cls} bytes (1..{MAX_CLASS})")
    if view[end:payload] != _PAD[: payload - end]:  # compared in place, no byte iterated
        raise fail(D.FRAME_CONTEXT_INVALID, "the context block's padding is not zero")
    try:  # the texts are decoded straight from the body's memory: no bytes copied out first
        tp = str(view[2 : 2 + n_tp], "ascii") if n_tp else None
        cls = str(view[2 + n_tp : end], "utf-8") if n_cls else None
    except UnicodeDecodeError:
        raise fail(D.FRAME_CONTEXT_INVALID, "traceparent not ASCII or class not UTF-8") from None
    return Context(tp, cls), payload


# --- tensors -----------------------------------------------------------------------------


def encode_tensors(value: Any, *, offset: int = 0) -> list[Buffer]:
    """A tensor payload for ``value``: a tensor, a mapping str -> tensor, or a tuple/list.

    Args:
        offset: where the payload starts within the frame body (for the 8-byte alignment).

    Raises:
        ProtocolError: DIA-7108 when ``value`` is not one of those, a name is not a string of
            1..255 UTF-8 bytes, a dtype is not in the table, or the rank exceeds 8.
    """
    import torch  # noqa: PLC0415 - see _DTYPE_TABLE

    codes = _tables()[1]
    if isinstance(value, torch.Tensor):
        kind, items = Kind.TENSOR, [("", value)]
    elif isinstance(value, Mapping):
        kind, items = Kind.MAPPING, list(value.items())
    elif isinstance(value, tuple | list):
        kind, items = Kind.SEQUENCE, [("", t) for t in value]
    else:
        raise fail(D.TENSOR_SPEC, f"cannot send a {type(value).__name__}: tensors only")
    if len(items) > MAX_TENSORS:
        raise fail(D.TENSOR_SPEC, f"{len(items)} tensors, at most {MAX_TENSORS}")
    parts: list[Buffer] = [_PAYLOAD.pack(kind, 0, len(items))]
    pos = offset + _PAYLOAD.size
    for name, item in items:
        if kind is Kind.MAPPING and not isinstance(name, str):
            raise fail(D.TENSOR_SPEC, f"tensor names must be str, got {type(name).__name__}")
        raw = name.encode("utf-8")
        if (kind is Kind.MAPPING) != bool(raw) or len(raw) > MAX_NAME:
            raise fail(D.TENSOR_SPEC, f"tensor name {name!r}: 1..{MAX_NAME} UTF-8 bytes")
        if not isinstance(item, torch.Tensor):
            raise fail(D.TENSOR_SPEC, f"{name or 'item'}: a {type(item).__name__}, not a tensor")
        t = item.detach()
        code = codes.get(t.dtype)
        if code is None:
            raise fail(D.TENSOR_SPEC, f"{name or 'tensor'}: dtype {t.dtype} is not supported")
        if t.dim() > MAX_NDIM:
            raise fail(D.TENSOR_SPEC, f"{name or 'tensor'}: {t.dim()} dims, at most {MAX_NDIM}")
        _elements(tuple(t.shape), name or "tensor")
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        data = memoryview(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
        meta = (
            _U8.pack(len(raw))
            + raw
            + _ENTRY.pack(code, t.dim())
            + _DIMS[t.dim()].pack(*t.shape)
            + _U64.pack(len(data))
        )
        pos += len(meta)
        pad = -pos % 8
        parts.append(meta + _PAD[:pad])
        parts.append(data)
        pos += pad + len(data)
    return parts


def _elements(shape: tuple[int, ...], label: str) -> int:
    """The element count of ``shape``, computed in Python ints, after checking that torch can
    lay it out: every dimension at most 2^32-1, and the extent (the product of the dimensions
    with a zero counted as one, which bounds every stride) at most 2^32-1 as well. A non-empty
    tensor whose bytes fit in a frame always passes; a zero-size one such as (0, 2^32-1,
    2^32-1) would overflow torch's int64 stride computation."""
    numel = extent = 1
    for d in shape:
        if d > MAX_DIM:
            raise fail(D.TENSOR_SPEC, f"{label}: dimension {d} exceeds {MAX_DIM}")
        numel *= d
        extent *= max(d, 1)
    if extent > MAX_EXTENT:
        raise fail(
            D.TENSOR_SPEC,
            f"{label}: shape {list(shape)} spans {extent} elements (zero dimensions counted "
            f"as one), more than {MAX_EXTENT}",
        )
    return numel


def decode_tensors(body: Buffer, offset: int = 0) -> Any:
    """The value of a tensor payload at ``body[offset:]`` (which it must fill exactly).

    Tensors share the memory of ``body`` when it is writable (a ``bytearray``); a read-only
    buffer is copied once. Every field is checked before a tensor is built.

    Raises:
        ProtocolError: DIA-7108 for anything the payload does not spell out exactly.
    """
    import torch  # noqa: PLC0415 - see _DTYPE_TABLE

    dtypes = _tables()[0]
    view = memoryview(body).cast("B")
    if view.readonly:
        view = memoryview(bytearray(view))
    end = len(view)
    if end - offset < _PAYLOAD.size:
        raise fail(D.TENSOR_SPEC, "no tensor payload header")
    kind_n, reserved, count = _PAYLOAD.unpack_from(view, offset)
    if kind_n not in Kind.__members__.values() or reserved:
        raise fail(D.TENSOR_SPEC, f"payload kind {kind_n}/reserved {reserved} unknown")
    kind = Kind(kind_n)
    if count > MAX_TENSORS or (kind is Kind.TENSOR and count != 1):
        raise fail(D.TENSOR_SPEC, f"{count} tensors in a {kind.name} payload")
    pos = offset + _PAYLOAD.size
    named: dict[str, torch.Tensor] = {}
    ordered: list[torch.Tensor] = []
    for i in range(count):
        if pos + 1 > end:
            raise fail(D.TENSOR_SPEC, f"tensor #{i}: payload ends before its name")
        n = view[pos]
        pos += 1
        if pos + n + _ENTRY.size > end:
            raise fail(D.TENSOR_SPEC, f"tensor #{i}: payload ends inside its name")
        try:
            name = str(view[pos : pos + n], "utf-8")
        except UnicodeDecodeError:
            raise fail(D.TENSOR_SPEC, f"tensor #{i}: name is not UTF-8") from None
        pos += n
        if (kind is Kind.MAPPING) != bool(name):
            raise fail(D.TENSOR_SPEC, f"tensor #{i}: a {kind.name} payload with name {name!r}")
        if name and name in named:
            raise fail(D.TENSOR_SPEC, f"tensor {name!r} appears twice")
        label = name or f"tensor #{i}"
        code, ndim = _ENTRY.unpack_from(view, pos)
        pos += _ENTRY.size
        if code not in dtypes:
            raise fail(D.TENSOR_SPEC, f"{label}: unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise fail(D.TENSOR_SPEC, f"{label}: {ndim} dims, at most {MAX_NDIM}")
        dims_s = _DIMS[ndim]
        if pos + dims_s.size + 8 > end:
            raise fail(D.TENSOR_SPEC, f"{label}: payload ends inside its shape")
        shape = dims_s.unpack_from(view, pos)
        (nbytes,) = _U64.unpack_from(view, pos + dims_s.size)
        pos += dims_s.size + 8
        dtype, size = dtypes[code]
        numel = _elements(shape, label)
        if numel * size != nbytes:
            raise fail(
                D.TENSOR_SPEC,
                f"{label}: shape {list(shape)} of {dtype} needs {numel * size} bytes, "
                f"the payload says {nbytes}",
            )
        pad = -pos % 8
        if pos + pad + nbytes > end:
            raise fail(D.TENSOR_SPEC, f"{label}: {nbytes} bytes announced, fewer present")
        if any(view[pos : pos + pad]):
            raise fail(D.TENSOR_SPEC, f"{label}: alignment padding is not zero")
        pos += pad
        if numel == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(view, dtype=dtype, count=numel, offset=pos).view(shape)
            if dtype is torch.bool and int(t.view(torch.uint8).max()) > 1:
                raise fail(D.TENSOR_SPEC, f"{label}: a bool byte other than 0 or 1")
        pos += nbytes
        named[name] = t
        ordered.append(t)
    if pos != end:
        raise fail(D.TENSOR_SPEC, f"{end - pos} bytes after the last tensor")
    if kind is Kind.TENSOR:
        return ordered[0]
    return named if kind is Kind.MAPPING else tuple(ordered)


# --- bodies ------------------------------------------------------------------------------


def _text(view: memoryview, pos: int, n: int, what: str) -> str:
    if pos + n > len(view):
        raise fail(D.BODY_MALFORMED, f"{what}: body ends inside it")
    try:
        return str(view[pos : pos + n], "utf-8")
    except UnicodeDecodeError:
        raise fail(D.BODY_MALFORMED, f"{what} is not UTF-8") from None


def _long_text(view: memoryview, pos: int, what: str) -> tuple[str, int]:
    if pos + 4 > len(view):
        raise fail(D.BODY_MALFORMED, f"{what}: body ends before its length")
    (n,) = _U32.unpack_from(view, pos)
    return _text(view, pos + 4, n, what), pos + 4 + n


def _json(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        raise fail(D.BODY_MALFORMED, f"{what} is not JSON") from None
    except RecursionError:  # "[[[[...": nesting deeper than the interpreter's stack
        raise fail(D.BODY_MALFORMED, f"{what} nests deeper than a JSON body may") from None
    if not isinstance(value, dict):
        raise fail(D.BODY_MALFORMED, f"{what} is not a JSON object")
    return value


def encode_result(result: Result) -> list[Buffer]:
    """A RESULT body: ``result``'s fields (not its request id, which the frame header
    carries), then its output's tensor payload (DIA-7108 if not tensors)."""
    code_b = result.code.code.encode("ascii") if result.code else b""
    reason_b = result.reason.encode("utf-8", "replace")
    meta = (
        _RESULT.pack(
            int(result.served_by),
            int(result.state),
            int(result.outcome),
            len(code_b),
            result.seq,
            max(0, result.answer_age_ns),
            max(0, result.latency_ns),
        )
        + code_b
        + _U32.pack(len(reason_b))
        + reason_b
    )
    return [meta, *encode_tensors(result.output, offset=len(meta))]


def decode_result(body: Buffer, request_id: bytes = ZERO_ID) -> Result:
    """The :class:`~vigil.schemas.Result` a RESULT body carries (``request_id`` from its
    frame's header). Raises ProtocolError (DIA-7108/7109)."""
    view = memoryview(body).cast("B")
    if len(view) < _RESULT.size:
        raise fail(D.BODY_MALFORMED, "RESULT body shorter than its fixed part")
    served, state, outcome, code_n, seq, age, latency = _RESULT.unpack_from(view)
    try:
        enums = ServedBy(served), State(state), Outcome(outcome)
    except ValueError as exc:
        raise fail(D.BODY_MALFORMED, f"RESULT: {exc}") from None
    code = _text(view, _RESULT.size, code_n, "RESULT code")
    reason, pos = _long_text(view, _RESULT.size + code_n, "RESULT reason")
    output = decode_tensors(view, pos)
    served_by, state_, outcome_ = enums
    return Result(
        output,
        state_,
        served_by,
        outcome_,
        seq,
        diagnostic_of(code) if code else None,
        reason,
        age,
        latency,
        bytes(request_id),
    )


def encode_error(
    error_class: ErrorClass,
    code: str,
    message: str,
    *,
    closing: bool = False,
    detail: dict[str, Any] | None = None,
) -> list[Buffer]:
    """An ERROR body."""
    code_b = code.encode("ascii")
    msg = message.encode("utf-8", "replace")
    det = json.dumps(detail or {}, sort_keys=True, default=str).encode()
    return [
        _ERROR.pack(int(error_class), int(closing), len(code_b))
        + code_b
        + _U32.pack(len(msg))
        + msg
        + _U32.pack(len(det))
        + det
    ]


def decode_error(body: Buffer) -> ErrorInfo:
    """An ERROR body's fields. Raises ProtocolError (DIA-7109)."""
    view = memoryview(body).cast("B")
    if len(view) < _ERROR.size:
        raise fail(D.BODY_MALFORMED, "ERROR body shorter than its fixed part")
    cls, closing, code_n = _ERROR.unpack_from(view)
    if cls not in ErrorClass.__members__.values() or closing > 1:
        raise fail(D.BODY_MALFORMED, f"ERROR class {cls} / closing {closing} unknown")
    code = _text(view, _ERROR.size, code_n, "ERROR code")
    message, pos = _long_text(view, _ERROR.size + code_n, "ERROR message")
    detail, pos = _long_text(view, pos, "ERROR detail")
    if pos != len(view):
        raise fail(D.BODY_MALFORMED, f"{len(view) - pos} bytes after the ERROR detail")
    return ErrorInfo(ErrorClass(cls), bool(closing), code, message, _json(detail, "detail"))


def encode_health(ready: bool, state: str, detail: dict[str, Any]) -> list[Buffer]:
    """A HEALTH_REPLY body."""
    name = state.encode("ascii")
    det = json.dumps(detail, sort_keys=True, default=str).encode()
    return [_HEALTH.pack(int(ready), len(name)) + name + _U32.pack(len(det)) + det]


def decode_health(body: Buffer) -> dict[str, Any]:
    """A HEALTH_REPLY body as ``{"ready", "state", "detail"}``. Raises ProtocolError."""
    view = memoryview(body).cast("B")
    if len(view) < _HEALTH.size:
        raise fail(D.BODY_MALFORMED, "HEALTH_REPLY body shorter than its fixed part")
    ready, n = _HEALTH.unpack_from(view)
    if ready > 1:
        raise fail(D.BODY_MALFORMED, f"HEALTH_REPLY ready flag {ready}")
    state = _text(view, _HEALTH.size, n, "state name")
    detail, pos = _long_text(view, _HEALTH.size + n, "HEALTH_REPLY detail")
    if pos != len(view):
        raise fail(D.BODY_MALFORMED, f"{len(view) - pos} bytes after the HEALTH_REPLY detail")
    return {"ready": bool(ready), "state": state, "detail": _json(detail, "detail")}
