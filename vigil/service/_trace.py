"""W3C Trace Context: the ``traceparent`` value, parsed strictly (sans-IO, no dependency).

Theory of operation
-------------------
A ``traceparent`` is ``version-traceid-parentid-flags`` in lower-case hex
(https://www.w3.org/TR/trace-context-2/, "traceparent Header"). Version ``00`` is exactly 55
characters: 2 + 1 + 32 + 1 + 16 + 1 + 2. A trace-id or parent-id of all zeros is invalid, and
so is version ``ff``. A later version may append fields: its first 55 characters are parsed
as version 00's, and the character after them must be ``-`` (or the end); the rest is not
interpreted.

What a receiver does with an invalid value is the specification's rule too: it does not fail
the request, it *restarts the trace* -- the call is served as if no ``traceparent`` had come
(:func:`extract` returns None and says why). ``vigil serve`` follows that on both protocols
and counts the values it ignored; only the Python client, which is handed the value by its
own caller, refuses a bad one outright (:func:`parse` raises ``InvalidInput``, DIA-2020),
since there the mistake is the program's and nothing has been sent yet.

The parser looks at the value's characters only, at most the first 55 of a later version's:
any bytes at all give a :class:`TraceContext` or ``InvalidInput``, never another exception.

A ``tracestate`` (the vendors' ``key=value`` list that travels with a ``traceparent``,
"tracestate Header") is read by :func:`parse_state` only next to a valid ``traceparent`` (a
receiver that restarts the trace must not parse it): list members split at commas, optional
white space around them dropped, empty ones skipped; each member ``key=value`` with the
specification's key and value grammar; keys unique; at most 32 members. Anything else makes
the whole value invalid: it is ignored (the call keeps its ``traceparent``) and counted, as
an invalid ``traceparent`` is. A valid list longer than 512 characters is cut as the
specification says a vendor may: members over 128 characters go first, then members from the
end, until it fits. A value over :data:`MAX_STATE_INPUT` characters is not read at all.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from vigil import _diagnostics as D
from vigil.errors import InvalidInput

__all__ = [
    "TraceContext",
    "extract",
    "extract_state",
    "new_span_id",
    "new_trace_id",
    "parse",
    "parse_state",
]

V0_LENGTH = 55
MAX_LENGTH = 512  # a later version's header may grow; a longer value is not a traceparent
_V0 = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_new = tuple.__new__  # a NamedTuple built from checked fields, without its Python __new__

MAX_STATE_MEMBERS = 32
MAX_STATE_LENGTH = 512  # what a vendor must pass on; a longer list is cut (see above)
MAX_STATE_CUT_FIRST = 128  # members longer than this are the first ones cut
MAX_STATE_INPUT = 64 * 1024  # 32 members of 256 + 256 characters, with room for white space
# the W3C grammar: a simple key, or tenant@system; a value of printable ASCII but , and =,
# not ending in a space (opentelemetry-api's TraceState checks the same)
_STATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-\*\/]{0,255}|[a-z0-9][_0-9a-z\-\*\/]{0,240}@[a-z][_0-9a-z\-\*\/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
SAMPLED = 0x01


class TraceContext(NamedTuple):
    """A parsed ``traceparent``: the caller's trace and span (the parent of ours)."""

    version: int
    trace_id: bytes  # 16 bytes, never all zero
    parent_id: bytes  # 8 bytes, never all zero
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def header(self) -> str:
        """The value as version 00 writes it (a later version's extra fields are dropped)."""
        return f"00-{self.trace_id.hex()}-{self.parent_id.hex()}-{self.flags:02x}"


def _invalid(why: str) -> InvalidInput:
    return InvalidInput(
        f"traceparent: {why}", diagnostic=D.TRACEPARENT_INVALID, field="traceparent"
    )


def parse(value: str | bytes) -> TraceContext:
    """Parse a ``traceparent`` strictly.

    Raises:
        InvalidInput: DIA-2020, with the rule it broke in the message.
    """
    if type(value) is not str:
        if not isinstance(value, bytes | bytearray):
            raise _invalid(f"a {type(value).__name__}, not a string")
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise _invalid("not ASCII") from None
    n = len(value)
    if n < V0_LENGTH or n > MAX_LENGTH:
        raise _invalid(f"{min(n, 9999)} characters, version 00 has {V0_LENGTH}")
    if _V0.fullmatch(value, 0, V0_LENGTH) is None:
        raise _invalid(
            f"{value[:V0_LENGTH]!r} is not version-traceid-parentid-flags in lower-case hex"
        )
    # checked: 2, 32, 16 and 2 lower-case hex digits between dashes; one pass makes the bytes
    raw = bytes.fromhex(value[:V0_LENGTH].replace("-", ""))
    version = raw[0]
    if version == 0xFF:
        raise _invalid("version ff is invalid")
    if version == 0 and n != V0_LENGTH:
        raise _invalid(f"version 00 is exactly {V0_LENGTH} characters, got {n}")
    if n > V0_LENGTH and value[V0_LENGTH] != "-":
        raise _invalid(f"version {value[:2]}: the flags must be followed by '-' or the end")
    trace_id, parent_id = raw[1:17], raw[17:25]
    if trace_id == _ZERO_TRACE:
        raise _invalid("the trace-id is all zeros")
    if parent_id == _ZERO_SPAN:
        raise _invalid("the parent-id is all zeros")
    return _new(TraceContext, (version, trace_id, parent_id, raw[25]))


def extract(value: str | bytes | None) -> tuple[TraceContext | None, InvalidInput | None]:
    """The receiver's rule: ``(context, None)``, ``(None, None)`` when there is no value, or
    ``(None, why)`` when the value is invalid and the trace restarts (serve the call as one
    without context; ``why`` is for counting, never to refuse the call)."""
    if value is None:
        return None, None
    try:
        return parse(value), None
    except InvalidInput as exc:
        return None, exc


def _invalid_state(why: str) -> InvalidInput:
    return InvalidInput(f"tracestate: {why}", diagnostic=D.TRACESTATE_INVALID, field="tracestate")


def parse_state(value: str) -> tuple[tuple[str, str], ...]:
    """Parse a ``tracestate`` (several headers joined with commas are one value): its
    ``(key, value)`` members in order, cut to 512 characters as the specification allows.

    Raises:
        InvalidInput: DIA-7260, with the rule it broke in the message.
    """
    if not isinstance(value, str):
        raise _invalid_state(f"a {type(value).__name__}, not a string")
    if len(value) > MAX_STATE_INPUT:
        raise _invalid_state(f"{len(value)} characters, over {MAX_STATE_INPUT}")
    members: list[tuple[str, str]] = []
    keys: set[str] = set()
    for raw in value.split(","):
        text = raw.strip(" \t")
        if not text:
            continue
        m = _STATE_MEMBER.fullmatch(text)
        if m is None:
            raise _invalid_state(f"{text[:40]!r} is not key=value in the W3C grammar")
        key = m.group(1)
        if key in keys:
            raise _invalid_state(f"the key {key!r} appears twice")
        keys.add(key)
        members.append((key, m.group(2)))
        if len(members) > MAX_STATE_MEMBERS:
            raise _invalid_state(f"more than {MAX_STATE_MEMBERS} list members")
    return _cut_state(members)


def _cut_state(members: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    def size(m: tuple[str, str]) -> int:
        return len(m[0]) + 1 + len(m[1])

    total = sum(size(m) for m in members) + max(0, len(members) - 1)  # the commas
    while total > MAX_STATE_LENGTH:
        big = [i for i, m in enumerate(members) if size(m) > MAX_STATE_CUT_FIRST]
        gone = members.pop(big[-1] if big else -1)
        total -= size(gone) + (1 if members else 0)
    return tuple(members)


def extract_state(
    value: str | None,
) -> tuple[tuple[tuple[str, str], ...], InvalidInput | None]:
    """The receiver's rule for a ``tracestate`` next to a valid ``traceparent``: ``(members,
    None)``, ``((), None)`` without one, or ``((), why)`` when it is invalid and ignored."""
    if value is None:
        return (), None
    try:
        return parse_state(value), None
    except InvalidInput as exc:
        return (), exc


def new_trace_id() -> bytes:
    """16 random bytes, never all zero (a new trace)."""
    while True:
        tid = os.urandom(16)
        if any(tid):
            return tid


def new_span_id() -> bytes:
    """8 random bytes, never all zero."""
    while True:
        sid = os.urandom(8)
        if any(sid):
            return sid
