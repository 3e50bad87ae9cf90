"""Where the flight recorder's timestamps come from.

Every record carries a wall-clock time (``real_ns``, for people and for ordering across
boots) and CLOCK_MONOTONIC (``mono_ns``, for intervals), the latter scoped by a boot id:
monotonic time is comparable only within one boot session. The wall clock is the session's
*clock source*:

* :class:`SystemClock`: CLOCK_REALTIME (the default);
* :class:`PosixClock.tai`: CLOCK_TAI, which differs from CLOCK_REALTIME by the TAI-UTC
  offset once something (``ptp4l``/``phc2sys``, chrony) has set the kernel's offset;
* :class:`PosixClock.ptp`: a PTP hardware clock, ``/dev/ptpN`` opened as a dynamic POSIX
  clock (what ``ptp4l`` disciplines; usually TAI).

The source, its device and its offset to CLOCK_REALTIME (measured when a writer opens the
log) go into the OPENED record (docs/FORMAT.md §5), so that a reader knows which timescale
``real_ns`` is in; ``vigil verify --clock-steps`` reports where it stepped. Tests inject a
:class:`Clock` of their own (and :class:`PosixClock` takes an injected ``gettime``).
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from vigil.errors import ClockUnavailable
from vigil.schemas._enums import ClockSource

_CLOCKFD = 3
_OFFSET_SAMPLES = 7


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

    def describe(self) -> dict[str, Any]:
        """What the OPENED record says of this clock."""
        return {"source": "realtime"}


class PosixClock:
    """A POSIX clock other than CLOCK_REALTIME as the wall clock; CLOCK_MONOTONIC for
    intervals. Build one with :meth:`tai` or :meth:`ptp`; :meth:`close` it after the
    writer that uses it (a PTP clock holds its device open).

    Args:
        clock_id: the clock to read (``time.CLOCK_TAI``, or a dynamic clock id).
        source: how records name it.
        device: the PTP device path, when there is one.
        gettime: reads a clock by id (``time.clock_gettime_ns``; injected by tests).
        fd: the open device, closed by :meth:`close`.
    """

    def __init__(
        self,
        clock_id: int,
        source: ClockSource,
        *,
        device: str | None = None,
        gettime: Callable[[int], int] = time.clock_gettime_ns,
        fd: int | None = None,
    ) -> None:
        self.source = source
        self.device = device
        self.clock_id = clock_id
        self._gettime = gettime
        self._fd = fd
        self.boot_uuid, self.boot_from_kernel = _boot_uuid()
        self.monotonic_ns = time.monotonic_ns
        try:
            gettime(clock_id)  # fail now, not at the first record
        except OSError as exc:
            self.close()
            raise ClockUnavailable(
                f"{self._name()}: cannot be read ({exc.strerror}); check that the kernel "
                "exposes it and that this user may read it",
                path=device,
            ) from None

    @classmethod
    def tai(cls, *, gettime: Callable[[int], int] = time.clock_gettime_ns) -> PosixClock:
        """CLOCK_TAI. Raises ClockUnavailable (DIA-3060) where the platform has none."""
        clock_id = getattr(time, "CLOCK_TAI", None)
        if clock_id is None:
            raise ClockUnavailable("CLOCK_TAI: this platform has no TAI clock")
        return cls(clock_id, ClockSource.TAI, gettime=gettime)

    @classmethod
    def ptp(
        cls,
        device: str = "/dev/ptp0",
        *,
        gettime: Callable[[int], int] = time.clock_gettime_ns,
        opener: Callable[[str, int], int] = os.open,
    ) -> PosixClock:
        """The PTP hardware clock ``device``, read as a dynamic POSIX clock
        (``FD_TO_CLOCKID``: ``((~fd) << 3) | CLOCKFD``).

        Raises:
            ClockUnavailable: DIA-3060, the device cannot be opened, is not a character
                device, or cannot be read as a clock.
        """
        try:
            fd = opener(device, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise ClockUnavailable(
                f"PTP clock {device}: cannot open ({exc.strerror}); list the clocks with "
                "`ls /dev/ptp*` and check the permissions",
                path=device,
            ) from None
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            mode = 0
        if not stat.S_ISCHR(mode):
            os.close(fd)
            raise ClockUnavailable(
                f"PTP clock {device}: not a character device; give a /dev/ptpN path",
                path=device,
            )
        return cls(((~fd) << 3) | _CLOCKFD, ClockSource.PTP, device=device, gettime=gettime, fd=fd)

    def realtime_ns(self) -> int:
        """The source's time (the ``real_ns`` of records)."""
        return self._gettime(self.clock_id)

    def offset_to_realtime(self) -> tuple[int, int]:
        """``(offset_ns, uncertainty_ns)``: this clock minus CLOCK_REALTIME, from the tightest
        of a few REALTIME/source/REALTIME readings (the uncertainty is half its width)."""
        best: tuple[int, int] | None = None
        for _ in range(_OFFSET_SAMPLES):
            before = time.time_ns()
            here = self._gettime(self.clock_id)
            after = time.time_ns()
            half = (after - before) // 2
            if best is None or half < best[1]:
                best = (here - (before + half), half)
        assert best is not None
        return best

    def describe(self) -> dict[str, Any]:
        """What the OPENED record says of this clock: source, device and measured offset."""
        offset, uncertainty = self.offset_to_realtime()
        out: dict[str, Any] = {"source": self.source.name.lower()}
        if self.device is not None:
            out["device"] = self.device
        out["offset_to_realtime_ns"] = offset
        out["offset_uncertainty_ns"] = uncertainty
        return out

    def close(self) -> None:
        """Close the PTP device (nothing for CLOCK_TAI). The clock is unusable afterwards."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _name(self) -> str:
        return self.device or self.source.name

    def __enter__(self) -> PosixClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BridgedClock:
    """A clock whose failed reads are bridged by the system's, so that one bad read of an
    injected or hardware clock (a PTP device that errs, a callable that raises) never stops a
    watchdog or a call. A failed ``monotonic_ns`` returns CLOCK_MONOTONIC shifted by the
    offset measured when the bridge was built (never below the last time it returned); a
    failed ``realtime_ns`` returns CLOCK_REALTIME (a step ``vigil verify --clock-steps``
    shows when the source is TAI or PTP). :attr:`failures` counts the bridged reads. Any
    other attribute is the wrapped clock's.

    Raises:
        ClockUnavailable: DIA-3060, the clock cannot be read at all when the bridge is built.
    """

    def __init__(self, clock: Clock) -> None:
        self.inner = clock
        self.source = clock.source
        self.boot_uuid = clock.boot_uuid
        self.failures = 0
        try:
            start = _ns(clock.monotonic_ns())
            _ns(clock.realtime_ns())
        except Exception as exc:
            raise ClockUnavailable(
                f"the injected clock failed when first read (it must return int ns in "
                f"[0, 2^63)): {type(exc).__name__}: {exc}"
            ) from None
        self._offset = start - time.monotonic_ns()
        self._last = start

    def monotonic_ns(self) -> int:
        try:
            now = _ns(self.inner.monotonic_ns())
        except BaseException:  # a raise, or a value no record could hold (float, < 0, huge)
            self.failures += 1
            now = max(self._last, time.monotonic_ns() + self._offset)
        self._last = now
        return now

    def realtime_ns(self) -> int:
        try:
            return _ns(self.inner.realtime_ns())
        except BaseException:
            self.failures += 1
            return time.time_ns()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # describe(), close(), device, ...


def _ns(value: object) -> int:
    """A clock reading a record can hold: an int in [0, 2^63). Raises ValueError."""
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise ValueError(f"a clock read {value!r}, not int ns in [0, 2^63)")
    return value


def clock_from_config(source: str, device: str | None = None) -> SystemClock | PosixClock:
    """The clock named by a configuration: ``realtime`` (default), ``tai`` or ``ptp``."""
    if source == "realtime":
        return SystemClock()
    if source == "tai":
        return PosixClock.tai()
    if source == "ptp":
        return PosixClock.ptp(device or "/dev/ptp0")
    raise ClockUnavailable(f"clock source {source!r}: choose realtime, tai or ptp")


def _boot_uuid() -> tuple[bytes, bool]:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return uuid.UUID(f.read().strip()).bytes, True
    except (OSError, ValueError):
        return uuid.uuid4().bytes, False  # no boot id: each writer is its own session
