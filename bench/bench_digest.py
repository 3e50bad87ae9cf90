"""The output digest off the caller's path (format 1.2, issue 16): its lag, and what it saves
the caller.

Part 1, lag: ``Supervisor.infer`` (inline isolation, durability ``batch``) paced at
``--rate`` calls/s (default 400), the model returning a fresh 1 MiB float32 tensor; the
digester's lag, from each INFERENCE append to its OUTPUT_DIGEST append, in ns and in calls
(how many later outputs had been deferred when the digest was appended), p50/p99/max, and
how often the queue was full (the caller then hashed inline). Target: p99 <= 2 calls behind.

Part 2, the caller's time: a GPU-shaped stand-in (``time.sleep`` of 2.5 ms, which releases the
GIL as a device call does) returning a 2 MiB float32 tensor; ``bare``, ``off-path``
(``digest_threshold`` 64 KiB: the default) and ``inline`` (``digest_threshold=0``: hashed on
the caller's path), alternating call by call. Ratios of p50s within the run.

Nothing here asserts on timing.

    python bench/bench_digest.py [--calls 2000] [--rate 400] [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import torch
from _common import interleaved, pct

from vigil.supervisor import Supervisor

torch.set_num_threads(1)

MIB = 1 << 20


def _lag(work: str, calls: int, rate: float) -> None:
    out = torch.zeros(MIB // 4)
    period = 1e9 / rate

    def model(x: torch.Tensor) -> torch.Tensor:
        return out + x[0]  # a fresh 1 MiB tensor each call, as a model's output is

    with Supervisor(
        model, log=os.path.join(work, "lag.vigil"), isolation="inline", deadline_ns=10**10
    ) as sup:
        x = torch.ones(4)
        start = time.perf_counter_ns()
        for i in range(calls):
            wait = start + i * period - time.perf_counter_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            sup.infer(x)
        elapsed = (time.perf_counter_ns() - start) / 1e9
        sup.wait_digested(60)
        d = sup.statistics().digester
    assert d is not None
    print(f"lag: {calls} calls of 1 MiB at {calls / elapsed:.0f} calls/s (target {rate:.0f})")
    print(
        f"  deferred {d.deferred}, digested {d.digested}, hashed inline (queue full) "
        f"{d.inline_when_full}"
    )
    print(
        f"  lag p50 {d.lag_p50_ns / 1e6:.2f} ms, p99 {d.lag_p99_ns / 1e6:.2f} ms, "
        f"max {d.lag_max_ns / 1e6:.2f} ms"
    )
    print(f"  lag in calls: p99 {d.lag_p99_calls}, max {d.lag_max_calls}  (target p99 <= 2)")


def _caller(work: str, calls: int) -> None:
    out = torch.zeros(2 * MIB // 4)

    def model(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.0025)  # the device works; the GIL is free
        return out + x[0]

    x = torch.ones(4)
    off = Supervisor(
        model, log=os.path.join(work, "off.vigil"), isolation="inline", deadline_ns=10**10
    )
    inline = Supervisor(
        model,
        log=os.path.join(work, "inline.vigil"),
        isolation="inline",
        digest_threshold=0,
        deadline_ns=10**10,
    )
    cases: dict[str, Callable[[], object]] = {
        "bare": lambda: model(x),
        "off-path": lambda: off.infer(x),
        "inline": lambda: inline.infer(x),
    }
    try:
        times = interleaved(list(cases.values()), calls)
        d = off.statistics().digester
    finally:
        off.close()
        inline.close()
    p50 = {name: pct(t, 0.5) for name, t in zip(cases, times, strict=True)}
    print(f"caller, GPU-shaped 2.5 ms call returning 2 MiB, {calls} calls each, alternating:")
    for name, t in zip(cases, times, strict=True):
        print(f"  {name:<9} p50 {pct(t, 0.5):9.1f} us   p99 {pct(t, 0.99):9.1f} us")
    assert d is not None
    print(f"  off-path: hashed inline because the queue was full: {d.inline_when_full}")
    print(f"  off-path / inline p50: {p50['off-path'] / p50['inline']:.3f}")
    print(f"  off-path / bare p50:   {p50['off-path'] / p50['bare']:.3f}")
    print(f"  inline / bare p50:     {p50['inline'] / p50['bare']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=400.0)
    ap.add_argument("--quick", action="store_true", help="200 calls each (a smoke run)")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    calls = 200 if args.quick else args.calls
    work = tempfile.mkdtemp(prefix="vigil-digest-", dir=args.dir)
    try:
        _lag(work, calls, args.rate)
        _caller(work, calls)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
