"""Process isolation: the per-call cost of the process boundary, and failover time.

Boundary overhead: ``WorkerPool.call`` (tensors through shared memory, a small message over a
pipe) vs running the same model in-process, for a small input (1x16 float32) and a 1 MiB one;
the raw pipe round trip of the same message size is printed as the floor. Medians of
interleaved repeats; overhead = pool median - in-process median.

Failover: SIGKILL the active worker while it is idle, then time from the kill until a call is
answered again: with a hot standby (promotion; the target is <= 50 ms) vs a cold restart (no
standby: a fresh process must import torch and load the model).

    python bench/bench_worker.py [--quick] [--device cpu|cuda] [--calls 2000] [--kills 5]
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import statistics
import time
from multiprocessing import get_context
from multiprocessing.connection import Connection

import torch

from vigil.testing._models import triggered_model
from vigil.workers._pool import WorkerPool, WorkerSpec


def _echo(conn: Connection) -> None:
    while True:
        message = conn.recv_bytes()
        if not message:
            return
        conn.send_bytes(message)


def pipe_floor(calls: int) -> float:
    """Median round trip (µs) of a call-sized message through a spawn Pipe."""
    ctx = get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_echo, args=(theirs,), daemon=True)
    proc.start()
    message = pickle.dumps((1, "tensor", [(None, "torch.float32", (1, 16), 0, 64)]))
    times = []
    for i in range(calls + 200):
        t0 = time.perf_counter_ns()
        ours.send_bytes(message)
        ours.poll(5)
        ours.recv_bytes()
        if i >= 200:
            times.append(time.perf_counter_ns() - t0)
    ours.send_bytes(b"")
    proc.join(5)
    return statistics.median(times) / 1e3


def boundary(pool: WorkerPool, device: str, x: torch.Tensor, calls: int) -> tuple[float, float]:
    """Median µs of one call through the pool and of the same model in-process."""
    model = triggered_model(device=device)
    local, remote = [], []
    for _ in range(50):
        pool.call(x, 10**10)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        pool.call(x, 10**10)
        t1 = time.perf_counter_ns()
        with torch.inference_mode():
            y = model(x.to(device))
            y.cpu()
        t2 = time.perf_counter_ns()
        if i >= 10:
            remote.append(t1 - t0)
            local.append(t2 - t1)
    return statistics.median(remote) / 1e3, statistics.median(local) / 1e3


def failover(pool: WorkerPool, kills: int, ready_s: float) -> list[float]:
    """Milliseconds from SIGKILL of the idle active worker to the next answered call."""
    x = torch.ones(1, 16)
    times = []
    for _ in range(kills):
        assert pool.wait_standby(ready_s), "no standby within the start timeout"
        pid = pool.statistics().active_pid
        assert pid is not None
        t0 = time.perf_counter_ns()
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                pool.call(x, 10**10)
                break
            except Exception:  # the loss surfaces on this call, or no worker is ready yet
                time.sleep(0.0005)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--kills", type=int, default=5)
    a = ap.parse_args()
    calls, kills = (300, 2) if a.quick else (a.calls, a.kills)
    torch.set_num_threads(1)  # the supervisor's side copies bytes; it must not spin OpenMP
    spec = WorkerSpec(
        factory="vigil.testing._models:triggered_model",
        device=a.device,
        warmup_input=torch.ones(1, 16),
        threads=1 if a.device == "cpu" else None,
    )
    print(f"process boundary ({a.device}, {calls} calls; medians)")
    floor = pipe_floor(calls)
    print(f"  raw pipe round trip (floor)            {floor:9.1f} µs")
    with WorkerPool(spec) as pool:
        pool.start()
        for label, x in (
            ("1x16 float32", torch.ones(1, 16)),
            ("1 MiB float32", torch.ones(1 << 18)),
        ):
            remote, local = boundary(pool, a.device, x, calls if "16" in label else calls // 10)
            over = remote - local
            verdict = "PASS" if over <= 100 or "MiB" in label else "MISS"
            target = " (target <= 100 µs)" if "MiB" not in label else ""
            print(
                f"  {label:14s} pool {remote:8.1f} µs  in-process {local:8.1f} µs  "
                f"overhead {over:8.1f} µs  x{remote / local:6.1f}{target} "
                + (verdict if target else "")
            )
        hot = failover(pool, kills, 120)
    no_spin = WorkerSpec(**{**spec.__dict__, "spin_us": 0})
    with WorkerPool(no_spin, standby=False) as pool:
        pool.start()
        remote, local = boundary(pool, a.device, torch.ones(1, 16), calls)
        print(
            f"  1x16, spin_us=0 pool {remote:8.1f} µs  in-process {local:8.1f} µs  "
            f"overhead {remote - local:8.1f} µs  (both sides block at once)"
        )
    print(f"failover after SIGKILL of the idle active worker ({kills} kills)")
    med = statistics.median(hot)
    print(
        f"  hot standby   median {med:9.1f} ms  (target <= 50 ms) {'PASS' if med <= 50 else 'MISS'}"
    )
    with WorkerPool(spec, standby=False) as cold_pool:
        cold_pool.start()
        cold = failover(cold_pool, max(1, kills // 2), 120)
    cmed = statistics.median(cold)
    print(f"  cold restart  median {cmed:9.1f} ms  (x{cmed / med:.0f} the hot standby)")


if __name__ == "__main__":
    main()
