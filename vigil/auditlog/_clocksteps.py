"""Where a session's wall clock stepped (``vigil verify --clock-steps``).

Within one writer session (from an OPENED record to the next, on one boot) a record's
``real_ns - mono_ns`` changes only as the time service slews the wall clock, which is slow
(ptp4l and chrony slew by at most 500 ppm; adjtime by 500 ppm). A change larger than
``threshold_ns`` plus ``ppm`` parts per million of the monotonic interval is a *step*: the
clock was set. The step is named in the session's clock source, read from its OPENED record
(docs/FORMAT.md §5), so that an auditor knows whether CLOCK_REALTIME, CLOCK_TAI or a PTP
device moved. A step is not damage: the chain and CRCs are checked by ``verify``; this only
says where timestamps on either side are not comparable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vigil import _diagnostics as codes
from vigil.auditlog._reader import LogRecord
from vigil.schemas._enums import LifecycleEvent, RecordType

DEFAULT_THRESHOLD_NS = 50_000_000
"""A step smaller than this (plus :data:`DEFAULT_PPM` of the interval) is not reported."""
DEFAULT_PPM = 1000
"""Twice the fastest slew of ptp4l, chrony or adjtime (500 ppm)."""

_NAMES = {"SYSTEM": "realtime", "INJECTED": "injected", "TAI": "tai", "PTP": "ptp"}


@dataclass(frozen=True)
class ClockStep:
    """One step of a session's wall clock between records ``prev_seq`` and ``seq``.

    Attributes:
        step_ns: how far the wall clock moved against the monotonic clock (+ forward).
        source: the session's clock source (``realtime``, ``tai``, ``ptp``, ``injected``,
            or ``unknown`` when the session's OPENED record is not in the log).
        device: the PTP device, when the OPENED record names one.
    """

    seq: int
    prev_seq: int
    step_ns: int
    source: str
    device: str | None = None
    code: str = codes.CLOCK_STEP.code

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "seq": self.seq,
            "prev_seq": self.prev_seq,
            "step_ns": self.step_ns,
            "source": self.source,
            "device": self.device,
        }

    def describe(self) -> str:
        where = f"{self.source} clock" + (f" ({self.device})" if self.device else "")
        return (
            f"records {self.prev_seq}..{self.seq}: the {where} stepped "
            f"{self.step_ns / 1e9:+.3f} s against the monotonic clock"
        )


def clock_steps(
    records: Iterable[LogRecord],
    *,
    threshold_ns: int = DEFAULT_THRESHOLD_NS,
    ppm: int = DEFAULT_PPM,
) -> Iterator[ClockStep]:
    """The steps in ``records`` (in log order), session by session. Memory is constant."""
    source, device = "unknown", None
    prev: LogRecord | None = None
    for rec in records:
        if rec.type == RecordType.LIFECYCLE and rec.body.get("event") == LifecycleEvent.OPENED:
            source, device = _source(rec.body)
            prev = rec  # a new session may use another clock: a new baseline
            continue
        if prev is not None and rec.boot_id == prev.boot_id and rec.mono_ns >= prev.mono_ns:
            interval = rec.mono_ns - prev.mono_ns
            step = (rec.real_ns - rec.mono_ns) - (prev.real_ns - prev.mono_ns)
            if abs(step) > threshold_ns + interval * ppm // 1_000_000:
                yield ClockStep(rec.seq, prev.seq, step, source, device)
        elif prev is not None and rec.boot_id != prev.boot_id:
            source, device = "unknown", None  # a boot without an OPENED record in the log
        prev = rec


def _source(body: dict[str, Any]) -> tuple[str, str | None]:
    clock = body.get("clock")
    name = getattr(clock, "name", None) or str(clock)
    source = _NAMES.get(name, name.lower())
    device = None
    try:
        detail = json.loads(body.get("detail") or "{}")
        described = detail.get("clock") if isinstance(detail, dict) else None
        if isinstance(described, dict) and isinstance(described.get("device"), str):
            device = described["device"]
    except (TypeError, ValueError, RecursionError):
        pass  # an undecodable detail: the source byte still says which clock
    return source, device
