"""Timing helpers shared by the benchmarks (each benchmark runs as a script from this folder)."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(fn: Callable[[], object], calls: int) -> list[int]:
    """Nanoseconds of each of ``calls`` calls of ``fn`` (``perf_counter_ns``, timer included)."""
    out = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def pct(values: list[int], q: float) -> float:
    """The ``q`` quantile of nanosecond samples, in microseconds (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000


def interleaved(
    fns: list[Callable[[], object]], calls: int, pause_s: float = 0.0
) -> list[list[int]]:
    """Like :func:`timed` for several functions at once, alternating them call by call (the
    order rotating each round), so that a slow phase of a noisy machine reaches each alike.

    ``pause_s`` > 0 sleeps that long before each call (outside its time): each call then runs
    as the code after a GPU call's wait does, with whatever the machine did meanwhile in the
    caches, rather than right after a call of the same code."""
    out: list[list[int]] = [[] for _ in fns]
    clock = time.perf_counter_ns
    sleep = time.sleep
    for i in range(calls):
        for k in range(len(fns)):
            j = (i + k) % len(fns)
            if pause_s:
                sleep(pause_s)
            t0 = clock()
            fns[j]()
            out[j].append(clock() - t0)
    return out
