"""Where a process-isolated GPU-shaped call spends its time outside the model: the two wake-ups.

A worker runs the GPU-shaped stand-in (``bench/_gpu_standin.py``: 2.5 ms in ``time.sleep``, the
GIL free) behind ``WorkerPool.call``; the caller idles ``--idle`` seconds between calls, as the
supervisor does between one client's calls. The worker's shared header records when it
started and ended the model call (CLOCK_MONOTONIC is one clock for both processes), which
splits each call into: request sent -> the worker starts (its wake-up), the model, the worker
ends -> the caller has the answer (the caller's wake-up). Each side polls its pipe without
sleeping for ``WorkerSpec.spin_us`` before it blocks; the bench runs the default (300 µs) and
a spin longer than the call (3000 µs), in blocks A B A B with one pool at a time, and prints
the medians. Nothing here asserts on timing.

    python bench/bench_wakeups.py [--quick] [--calls 400] [--idle 0.003] [--output tokens]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from _common import pct

from vigil.workers import WorkerPool, WorkerSpec
from vigil.workers._pool import _END, _START

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _gpu_standin for the worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--idle", type=float, default=0.003, help="seconds between calls")
    ap.add_argument("--output", choices=("tokens", "logits"), default="tokens")
    args = ap.parse_args()
    if args.quick:
        args.calls = 40
    torch.set_num_threads(1)
    spins = (300, 3000)
    x = torch.randn(1, 16)
    parts: dict[int, list[list[int]]] = {s: [[], [], [], []] for s in spins}
    for _ in range(2):  # blocks A B A B: one pool at a time (two spinning pools would
        for spin in spins:  # compete for the cores they spin on)
            spec = WorkerSpec(
                factory="_gpu_standin:standin",
                kwargs={"output": args.output},
                threads=1,
                spin_us=spin,
            )
            pool = WorkerPool(spec, standby=False)
            pool.start()
            try:
                for _ in range(args.calls // 2):
                    t0 = time.monotonic_ns()
                    pool.call(x, 10**9)
                    t1 = time.monotonic_ns()
                    shm = pool._actives[0].shm
                    start, end = shm.get(_START), shm.get(_END)
                    for i, v in enumerate((start - t0, end - start, t1 - end, t1 - t0)):
                        parts[spin][i].append(v)
                    time.sleep(args.idle)
            finally:
                pool.close()
    print(
        f"process-isolated GPU-shaped call ({args.output}), {args.calls} calls per spin, "
        f"{args.idle * 1e3:.1f} ms idle between calls; p50 / p90 in us"
    )
    names = ("sent -> worker starts", "the model", "worker ends -> answer", "whole call")
    print(f"{'part':24s}" + "".join(f"{f'spin {s} us':>22s}" for s in spins))
    for i, name in enumerate(names):
        cells = "".join(
            f"{pct(parts[s][i], 0.5):12.1f} /{pct(parts[s][i], 0.9):8.1f}" for s in spins
        )
        print(f"{name:24s}{cells}")
    outside = {s: pct(parts[s][3], 0.5) - pct(parts[s][1], 0.5) for s in spins}
    print(
        f"\noutside the model, p50: spin {spins[0]} us {outside[spins[0]]:.1f} us, "
        f"spin {spins[1]} us {outside[spins[1]]:.1f} us "
        f"(ratio {outside[spins[1]] / outside[spins[0]]:.2f})"
    )


if __name__ == "__main__":
    main()
