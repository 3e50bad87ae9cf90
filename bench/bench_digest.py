"""The output digest off the caller's path (format 1.2, issue 16): its lag, and what it saves
the caller.

Part 1, lag: ``Supervisor.infer`` (inline isolation, durability ``batch``) at ``--rate``
calls/s (default 400), the model returning a fresh 1 MiB float32 tensor; the digester's lag,
from each INFERENCE append to its OUTPUT_DIGEST append, in ns and in calls (how many later
outputs had been deferred when the digest was appended), p50/p99/max, where it comes from
(``wait``: from the hand-over until the digester thread took the output -- its wake-up, the
GIL, the outputs ahead of it; ``hash``: hashing it), and how often the queue was full (the
caller then hashed inline). Target: p99 <= 2 calls behind. Three runs, each with a fresh
supervisor:

* ``schedule``: call i starts at ``start + i / rate`` (an absolute schedule). After any stall
  the calls that fell behind go back to back, at whatever rate the machine allows (~2500/s
  here): its lag in calls measures those bursts as much as 400 calls/s.
* ``steady``: each call starts one period after the previous one started, or at once if that
  one took longer (no catch-up): the rate the target speaks of; the achieved rate is printed.
* ``steady-switch-0.5ms``: the same with ``sys.setswitchinterval(0.0005)`` (default 5 ms),
  to see whether the digester thread waits for the GIL (a process-wide setting: vigil leaves
  it alone; an application may set it).

Each prints how many calls started late (more than a period after their slot) and how many
started back to back (no wait before them).

Part 2, the caller's time: a GPU-shaped stand-in (``time.sleep`` of 2.5 ms, which releases the
GIL as a device call does) returning a 2 MiB float32 tensor; ``bare``, ``off-path``
(``digest_threshold`` 64 KiB: the default) and ``inline`` (``digest_threshold=0``: hashed on
the caller's path), alternating call by call. Ratios of p50s within the run.

Nothing here asserts on timing.

    python bench/bench_digest.py [--calls 2000] [--rate 400] [--quick] [--dir DIR]
        [--modes schedule,steady] [--lag-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from _common import interleaved, pct

from vigil.supervisor import Supervisor

torch.set_num_threads(1)

MIB = 1 << 20
MODES = ("schedule", "steady", "steady-switch-0.5ms")


def _lag(work: str, calls: int, rate: float, mode: str) -> None:
    out = torch.zeros(MIB // 4)
    period = round(1e9 / rate)

    def model(x: torch.Tensor) -> torch.Tensor:
        return out + x[0]  # a fresh 1 MiB tensor each call, as a model's output is

    steady = mode.startswith("steady")
    clock = time.perf_counter_ns
    late = back_to_back = 0
    before = sys.getswitchinterval()
    if "switch" in mode:
        sys.setswitchinterval(0.0005)
    try:
        with Supervisor(
            model, log=os.path.join(work, f"lag-{mode}.vigil"), isolation="inline",
            deadline_ns=10**10,
        ) as sup:  # fmt: skip
            x = torch.ones(4)
            start = due = clock()
            for i in range(calls):
                if i:
                    due = due + period if steady else start + i * period
                now = clock()
                if now < due:
                    time.sleep((due - now) / 1e9)
                else:
                    back_to_back += i > 0
                    late += now - due > period
                    if steady:
                        due = now  # no catch-up: the next call comes a period after this one
                sup.infer(x)
            elapsed = (clock() - start) / 1e9
            sup.wait_digested(60)
            d = sup.statistics().digester
    finally:
        sys.setswitchinterval(before)
    assert d is not None
    print(
        f"lag, {mode}: {calls} calls of 1 MiB at {calls / elapsed:.0f} calls/s achieved "
        f"(target {rate:.0f}); {late} started late (> 1 period), {back_to_back} back to back"
    )
    print(
        f"  deferred {d.deferred}, digested {d.digested}, hashed inline (queue full) "
        f"{d.inline_when_full}"
    )
    print(
        f"  lag p50 {d.lag_p50_ns / 1e6:.2f} ms, p99 {d.lag_p99_ns / 1e6:.2f} ms, "
        f"max {d.lag_max_ns / 1e6:.2f} ms"
    )
    print(f"  lag in calls: p99 {d.lag_p99_calls}, max {d.lag_max_calls}  (target p99 <= 2)")
    if hasattr(d, "wake_p50_ns"):  # (vigil before run P did not measure these)
        print(f"  wait (hand-over to taken) p50 {d.wait_p50_ns / 1e6:.2f} ms, p99 "
              f"{d.wait_p99_ns / 1e6:.2f} ms; hash p50 {d.hash_p50_ns / 1e6:.2f} ms, p99 "
              f"{d.hash_p99_ns / 1e6:.2f} ms")  # fmt: skip
        print(f"  wake-up (handed over to an idle thread, until it took it) p50 "
              f"{d.wake_p50_ns / 1e6:.3f} ms, p99 {d.wake_p99_ns / 1e6:.3f} ms")  # fmt: skip


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
    ap.add_argument("--modes", default=",".join(MODES), help=f"part 1's pacing: {MODES}")
    ap.add_argument("--lag-only", action="store_true", help="part 1 only")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    calls = 200 if args.quick else args.calls
    work = tempfile.mkdtemp(prefix="vigil-digest-", dir=args.dir)
    try:
        for mode in args.modes.split(","):
            _lag(work, calls, args.rate, mode)
        if not args.lag_only:
            _caller(work, calls)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
