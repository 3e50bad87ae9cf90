"""CRC32C (Castagnoli), hardware-accelerated where possible.

The hot path uses the ``crc32c`` package (SSE4.2 / ARMv8 CRC instructions, ~0.1 µs for 256
bytes, and it accepts memoryviews of the mmap without a copy). ``crcmod``, the design card's
library, is kept in two real roles: the portable fallback when ``crc32c`` is unavailable or
has no hardware support (``VIGIL_CRC=crcmod`` forces it), and the independent oracle the tests
compare against. Both compute the same function: reflected polynomial 0x82F63B78, initial
value and final XOR 0xFFFFFFFF; CRC32C(b"123456789") == 0xE3069283.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import crcmod.predefined

Buffer = bytes | bytearray | memoryview

_crcmod_fn: Callable[[bytes, int], int] = crcmod.predefined.mkCrcFun("crc-32c")


def crc32c_portable(data: Buffer, value: int = 0) -> int:
    """CRC32C with crcmod (C extension when built, pure Python otherwise). ``value``: the CRC
    of the bytes before ``data``, to continue it (``crc32c(b, crc32c(a)) == crc32c(a + b)``)."""
    return _crcmod_fn(bytes(data), value)


hw: Any
try:
    import crc32c as hw
except ImportError:  # the fallback below covers it
    hw = None


class Crc32c(Protocol):
    """``crc32c(data, value=0)``: the CRC32C of ``data``, continuing ``value``."""

    def __call__(self, data: Buffer, value: int = 0, /) -> int: ...


def _select() -> tuple[Crc32c, str]:
    if os.environ.get("VIGIL_CRC", "").lower() == "crcmod":
        return crc32c_portable, "crcmod (forced by VIGIL_CRC)"
    if hw is None:
        return crc32c_portable, "crcmod (crc32c package not installed)"
    if not hw.hardware_based:
        return crc32c_portable, "crcmod (no CRC32C instructions on this CPU)"
    fn: Crc32c = hw.crc32c
    return fn, "crc32c (hardware)"


crc32c, BACKEND = _select()
"""The CRC32C function used by vigil (``crc32c(data, value=0)``; ``value`` continues a CRC)
and a description of where it comes from."""
