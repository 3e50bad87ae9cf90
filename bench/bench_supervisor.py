"""What supervision costs per call, against a bare call and against pybreaker, in one run.

Cases (each call timed with ``perf_counter_ns``, medians over round-robin repeats):

- ``bare``: the trivial model itself (``Linear(16, 4)`` under ``no_grad``, batch 1, CPU);
- ``supervised-inline`` / ``supervised-thread``: ``Supervisor.infer`` around it, with an
  input and an output contract check, SHA-256 digests of input and output, and a sealed
  INFERENCE record (durability ``batch``), in both isolation modes;
- ``fsm+watchdog``: the state machine's route + record and a watchdog arm + disarm around a
  call of a no-op function -- the part comparable to a circuit breaker;
- ``pybreaker``: ``CircuitBreaker.call`` of the same no-op function (the peer);
- components, one by one: digest, output check, record append, route + record, arm + disarm.

Targets from the issue: whole wrapper overhead (supervised-inline p50 - bare p50) <= 10 µs;
fsm+watchdog within 2x of pybreaker. Nothing here asserts on timing.

    python bench/bench_supervisor.py [--quick] [--repeats 5] [--calls 20000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import pybreaker
import torch
from _common import pct, timed

from vigil.fsm import Policy, SafetyMachine
from vigil.schemas import Contract, Outcome, TensorSpec
from vigil.supervisor import Constant, Supervisor, Watchdog, digest
from vigil.supervisor._tensors import check_finite

torch.set_num_threads(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.calls = 1, 500
    work = tempfile.mkdtemp(prefix="vigil-bench-sup-", dir=args.dir)
    layer = torch.nn.Linear(16, 4).eval()
    x = torch.randn(1, 16)

    def model(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = layer(t)
        return out

    def noop() -> int:
        return 1

    spec_in = Contract(TensorSpec(shape=(1, 16), dtype=torch.float32))
    spec_out = Contract(TensorSpec(shape=(1, 4), dtype=torch.float32))
    sups = {
        iso: Supervisor(
            model,
            log=os.path.join(work, f"{iso}.vigil"),
            isolation=iso,
            input_contract=spec_in,
            output_contract=spec_out,
            fallback=Constant(torch.zeros(1, 4)),
            policy=Policy(),
        )
        for iso in ("inline", "thread")
    }
    machine = SafetyMachine(Policy(), time.monotonic_ns())
    dog = Watchdog()
    far = 10**18

    def fsm_watchdog() -> None:
        now = time.monotonic_ns()
        machine.route(now)
        ticket = dog.arm(now + far, noop)
        noop()
        dog.disarm(ticket)
        machine.record(Outcome.OK, now)

    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    out = model(x)
    cases: dict[str, Callable[[], object]] = {
        "bare": lambda: model(x),
        "supervised-inline": lambda: sups["inline"].infer(x),
        "supervised-thread": lambda: sups["thread"].infer(x),
        "fsm+watchdog": fsm_watchdog,
        "pybreaker": lambda: breaker.call(noop),
        "noop": noop,
        "part: digest(input)": lambda: digest(x),
        "part: input contract": lambda: spec_in.check(x),
        "part: output contract": lambda: spec_out.check(out),
        "part: default finite check": lambda: check_finite(out),
        "part: sealed record": lambda: sups["inline"].log.record_inference(
            request_id=b"r" * 16,
            model_digest=b"m" * 32,
            input_digest=b"i" * 32,
            output_digest=b"o" * 32,
            state=1,
            served_by=1,
            outcome=0,
            latency_ns=1,
            deadline_ns=2,
            flags=4,
        ),
        "part: route+record": lambda: (machine.route(5), machine.record(Outcome.OK, 5)),
        "part: arm+disarm": lambda: dog.disarm(dog.arm(far, noop)),
    }
    for fn in cases.values():  # warm up
        timed(fn, min(args.calls, 500))
    p50: dict[str, list[float]] = {k: [] for k in cases}
    p99: dict[str, list[float]] = {k: [] for k in cases}
    for rep in range(args.repeats):
        for name, fn in cases.items():
            samples = timed(fn, args.calls)
            p50[name].append(pct(samples, 0.5))
            p99[name].append(pct(samples, 0.99))
        print(f"  repeat {rep + 1}/{args.repeats} done", flush=True)
    for sup in sups.values():
        sup.close()
    dog.close()
    shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in p50.items()}
    print(
        f"\nsupervision cost per call: {args.calls} calls x {args.repeats} repeats, "
        "CPU, Linear(16, 4), batch 1; medians of per-repeat percentiles (timer included)\n"
    )
    print(f"{'case':32s} {'p50 us':>9s} {'p99 us':>9s}")
    for name in cases:
        print(f"{name:32s} {med[name]:9.2f} {statistics.median(p99[name]):9.2f}")
    inline = med["supervised-inline"] - med["bare"]
    thread = med["supervised-thread"] - med["bare"]
    ratio = statistics.median(
        a / b for a, b in zip(p50["fsm+watchdog"], p50["pybreaker"], strict=True)
    )
    print("\ntargets (within this run):")
    print(
        f"  {'PASS' if inline <= 10 else 'MISS'}  wrapper overhead, inline, p50 <= 10 us: "
        f"{inline:.1f} us"
    )
    print(f"  info  wrapper overhead, thread isolation, p50: {thread:.1f} us (a thread handoff)")
    print(f"  {'PASS' if ratio <= 2 else 'MISS'}  fsm+watchdog / pybreaker <= 2: {ratio:.2f}")


if __name__ == "__main__":
    main()
