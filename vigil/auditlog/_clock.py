"""Where the flight recorder's timestamps come from.

Every record carries CLOCK_REALTIME (``real_ns``, for people and for ordering across boots)
and CLOCK_MONOTONIC (``mono_ns``, for intervals), the latter scoped by a boot id: monotonic
time is comparable only within one boot session. Tests inject a :class:`Clock` of their own.
"""

from __future__ import annotations

import time
import uuid
from typing import Protocol

from vigil.schemas._enums import ClockSource


class Clock(Protocol):
    """Where timestamps come from. ``boot_uuid`` scopes monotonic time (16 bytes)."""

    source: ClockSource
    boot_uuid: bytes

    def realtime_ns(self) -> int: ...

    def monotonic_ns(self) -> int: ...


class SystemClock:
    """CLOCK_REALTIME and CLOCK_MONOTONIC, scoped by the kernel's boot id."""

    source = ClockSource.SYSTEM

    def __init__(self) -> None:
        self.boot_uuid, self.boot_from_kernel = _boot_uuid()
        self.realtime_ns = time.time_ns
        self.monotonic_ns = time.monotonic_ns


def _boot_uuid() -> tuple[bytes, bool]:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return uuid.UUID(f.read().strip()).bytes, True
    except (OSError, ValueError):
        return uuid.uuid4().bytes, False  # no boot id: each writer is its own session
