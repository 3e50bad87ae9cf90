"""Fast codecs derived from construct declarations.

A binary structure is declared once, as a ``construct.Struct``; that declaration is the single
source of truth and the documentation's reference. Building or parsing with construct costs
5-17 µs a record, which the append path cannot afford, so :class:`Layout` walks the
declaration once at import time and derives a ``struct.Struct`` for its fixed-size prefix plus
a short list of length-prefixed tail fields. The derivation supports exactly the construct
primitives vigil's formats use and refuses anything else, and the tests build random values
with both and compare the bytes.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import construct as cs

from vigil.errors import InvalidArgument
from vigil.schemas._enums import coerce

_PREFIX_FORMATS = {1: "B", 2: "H", 4: "I"}


@dataclass(frozen=True)
class TailField:
    """A length-prefixed field after the fixed part: raw bytes or UTF-8 text."""

    name: str
    prefix: struct.Struct
    text: bool

    @property
    def limit(self) -> int:
        return int(2 ** (8 * self.prefix.size) - 1)


class Layout:
    """A construct declaration plus the ``struct`` fast path derived from it.

    Args:
        name: a label used in error messages.
        declaration: a ``construct.Struct`` of fixed-width little-endian integers, fixed
            ``Bytes``, ``Const``, ``Padding``, integer ``Enum`` fields, followed by any number
            of ``Prefixed(IntNul, GreedyBytes)`` or ``PascalString(IntNul, "utf8")`` fields.

    Attributes:
        fixed: the derived ``struct.Struct`` of the fixed prefix.
        fields: names of the values in ``fixed`` (constants included, padding excluded).
        tail: the variable-length fields, in order.
    """

    def __init__(self, name: str, declaration: cs.Struct) -> None:
        self.name = name
        self.declaration = declaration
        formats: list[str] = []
        fields: list[str] = []
        consts: dict[str, bytes] = {}
        enums: dict[str, type[enum.IntEnum]] = {}
        tail: list[TailField] = []
        for sub in declaration.subcons:
            if tail and not _is_tail(sub):
                raise TypeError(f"{name}: fixed field {sub.name!r} after a variable-length field")
            if isinstance(sub, cs.Padded):
                formats.append(f"{sub.length}x")
                continue
            if not isinstance(sub, cs.Renamed):
                raise TypeError(f"{name}: unsupported construct {type(sub).__name__}")
            inner = sub.subcon
            if _is_tail(sub):
                tail.append(_tail_field(name, sub.name, inner))
                continue
            fmt, const, kind = _fixed_format(name, sub.name, inner)
            formats.append(fmt)
            fields.append(sub.name)
            if const is not None:
                consts[sub.name] = const
            if kind is not None:
                enums[sub.name] = kind
        self.fixed = struct.Struct("<" + "".join(formats))
        self.format = "".join(formats)
        self.fields = tuple(fields)
        self.consts: Mapping[str, bytes] = consts
        self.enums: Mapping[str, type[enum.IntEnum]] = enums
        self.tail = tuple(tail)
        if declaration.subcons and not tail and declaration.sizeof() != self.fixed.size:
            raise TypeError(f"{name}: derived size {self.fixed.size} != construct size")

    @property
    def fixed_size(self) -> int:
        return self.fixed.size

    def pack(self, values: Mapping[str, Any]) -> bytes:
        """Encode ``values`` exactly as construct would. Every field but constants is required.

        Raises:
            InvalidArgument: a value is missing, has the wrong type or overflows its field.
        """
        try:
            fixed = self.fixed.pack(
                *(self.consts[f] if f in self.consts else values[f] for f in self.fields)
            )
        except KeyError as exc:
            raise InvalidArgument(f"{self.name}: missing field {exc.args[0]!r}") from None
        except struct.error as exc:
            raise InvalidArgument(f"{self.name}: {exc}") from None
        parts = [fixed]
        for field in self.tail:
            if field.name not in values:
                raise InvalidArgument(f"{self.name}: missing field {field.name!r}")
            raw = _tail_bytes(self.name, field, values[field.name])
            parts.append(field.prefix.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)

    def unpack(self, buf: bytes | memoryview, strict_size: bool = True) -> dict[str, Any]:
        """Decode ``buf``; enum fields become members where the value is known.

        Args:
            buf: exactly the encoded bytes (``strict_size``) or at least them.
            strict_size: refuse trailing bytes after the last field.

        Raises:
            InvalidArgument: the buffer is too short, a length prefix overruns it, a constant
                differs, text is not UTF-8, or (strict) bytes are left over.
        """
        if len(buf) < self.fixed.size:
            raise InvalidArgument(
                f"{self.name}: {len(buf)} bytes, fixed part needs {self.fixed.size}"
            )
        out: dict[str, Any] = dict(zip(self.fields, self.fixed.unpack_from(buf), strict=True))
        for key, const in self.consts.items():
            if out[key] != const:
                raise InvalidArgument(f"{self.name}: field {key} is {out[key]!r}, not {const!r}")
        for key, kind in self.enums.items():
            out[key] = coerce(kind, out[key])
        pos = self.fixed.size
        for field in self.tail:
            if pos + field.prefix.size > len(buf):
                raise InvalidArgument(f"{self.name}: truncated before {field.name} length")
            (n,) = field.prefix.unpack_from(buf, pos)
            pos += field.prefix.size
            if pos + n > len(buf):
                raise InvalidArgument(f"{self.name}: {field.name} length {n} overruns the body")
            raw = bytes(buf[pos : pos + n])
            pos += n
            if field.text:
                try:
                    out[field.name] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidArgument(f"{self.name}: {field.name} is not UTF-8") from None
            else:
                out[field.name] = raw
        if strict_size and pos != len(buf):
            raise InvalidArgument(f"{self.name}: {len(buf) - pos} unexpected trailing bytes")
        return out


def _is_tail(sub: Any) -> bool:
    return isinstance(sub, cs.Renamed) and isinstance(sub.subcon, cs.StringEncoded | cs.Prefixed)


def _tail_field(layout: str, name: str, inner: Any) -> TailField:
    text = isinstance(inner, cs.StringEncoded)
    if text:
        if inner.encoding not in ("utf8", "utf-8"):
            raise TypeError(f"{layout}.{name}: only UTF-8 text is supported")
        inner = inner.subcon
    if not (isinstance(inner, cs.Prefixed) and isinstance(inner.subcon, type(cs.GreedyBytes))):
        raise TypeError(f"{layout}.{name}: only Prefixed(IntNul, GreedyBytes) is supported")
    fmt = _int_format(layout, name, inner.lengthfield)
    if fmt not in ("<B", "<H", "<I", "<L"):
        raise TypeError(f"{layout}.{name}: length prefix must be an unsigned integer")
    return TailField(name, struct.Struct(fmt), text)


def _fixed_format(layout: str, name: str, inner: Any) -> tuple[str, bytes | None, Any]:
    if isinstance(inner, cs.Const):
        value = inner.value
        if not isinstance(value, bytes) or not isinstance(inner.subcon, cs.Bytes):
            raise TypeError(f"{layout}.{name}: only Const(bytes) is supported")
        return f"{len(value)}s", value, None
    if isinstance(inner, cs.Enum):
        kind = getattr(inner, "vigil_enum", None)
        return _int_format(layout, name, inner.subcon)[1:], None, kind
    if isinstance(inner, cs.Bytes):
        if not isinstance(inner.length, int):
            raise TypeError(f"{layout}.{name}: Bytes length must be a constant")
        return f"{inner.length}s", None, None
    return _int_format(layout, name, inner)[1:], None, None


def _int_format(layout: str, name: str, inner: Any) -> str:
    if (
        isinstance(inner, cs.FormatField)
        and inner.fmtstr[0] == "<"
        and inner.fmtstr[1] in "bBhHiIlLqQ"
    ):
        return str(inner.fmtstr)
    raise TypeError(f"{layout}.{name}: unsupported field type {type(inner).__name__}")


def _tail_bytes(layout: str, field: TailField, value: Any) -> bytes:
    if field.text:
        if not isinstance(value, str):
            raise InvalidArgument(f"{layout}: {field.name} must be str, not {type(value).__name__}")
        raw = value.encode("utf-8", "backslashreplace")  # a lone surrogate: escaped, kept
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    else:
        raise InvalidArgument(f"{layout}: {field.name} must be bytes, not {type(value).__name__}")
    if len(raw) > field.limit:
        raise InvalidArgument(f"{layout}: {field.name} is {len(raw)} bytes, limit {field.limit}")
    return raw


def enum_field(kind: type[enum.IntEnum], width: Any) -> Any:
    """A construct ``Enum`` over ``width`` that remembers its Python enum for the fast path."""
    con = cs.Enum(width, kind)
    con.vigil_enum = kind
    return con
