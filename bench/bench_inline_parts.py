"""Where the inline wrapper's fixed cost goes: the whole call and each part, alternating.

Around ``Linear(16, 4)`` (batch 1, CPU, one torch thread, ``no_grad``): the bare call;
``Supervisor.infer`` inline with compiled contracts (as shipped) and with the contracts' compiled
fast path switched off (the full check every call, as before issue 16), and around the
``nn.Module`` itself with no ``no_grad`` (the supervisor turns autograd off); then each part alone:
both contract checks both ways, the two digests, the default finiteness check, the sealed
record append, the state machine's route + record, the watchdog's arm + disarm, and a no-op
(the timer's floor). Every case alternates call by call with every other (order rotating), so
that drift on a shared machine reaches each alike; what the parts do not explain is the Python
around them. Nothing here asserts on timing.

    python bench/bench_inline_parts.py [--quick] [--calls 20000] [--dir DIR] [--pause-us US]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import interleaved, pct

from vigil.fsm import Policy, SafetyMachine
from vigil.schemas import Contract, Outcome, TensorSpec
from vigil.supervisor import Constant, Supervisor, Watchdog, digest
from vigil.supervisor._tensors import check_finite

torch.set_num_threads(1)


def _full(contract: Contract) -> Contract:
    """The contract with its compiled fast path off: the full check on every call."""
    slow = Contract(contract.specs, rules=contract.rules, name=contract.name)
    slow._fast_one = None
    slow._fast_map = None
    return slow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    ap.add_argument(
        "--pause-us",
        type=float,
        default=0.0,
        help="sleep this long before each timed call (2500: as after a GPU call's wait)",
    )
    args = ap.parse_args()
    if args.quick:
        args.calls = 500
    work = tempfile.mkdtemp(prefix="vigil-bench-parts-", dir=args.dir)
    layer = torch.nn.Linear(16, 4).eval()
    x = torch.randn(1, 16)

    def model(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = layer(t)
        return out

    out = model(x)
    spec_in = Contract(TensorSpec(shape=(1, 16), dtype=torch.float32))
    spec_out = Contract(TensorSpec(shape=(1, 4), dtype=torch.float32))
    full_in, full_out = _full(spec_in), _full(spec_out)

    def supervisor(
        name: str, cin: Contract, cout: Contract, primary: Callable[[torch.Tensor], Any] = model
    ) -> Supervisor:
        return Supervisor(
            primary,
            log=os.path.join(work, f"{name}.vigil"),
            isolation="inline",
            input_contract=cin,
            output_contract=cout,
            fallback=Constant(torch.zeros(1, 4)),
            policy=Policy(),
        )

    compiled = supervisor("compiled", spec_in, spec_out)
    uncompiled = supervisor("full", full_in, full_out)
    plain = supervisor("plain", spec_in, spec_out, layer)  # no no_grad around it
    machine = SafetyMachine(Policy(), time.monotonic_ns())
    dog = Watchdog()
    far = 10**18

    def noop() -> None:
        return None

    log = compiled.log
    cases: dict[str, Callable[[], object]] = {
        "bare": lambda: model(x),
        "inline": lambda: compiled.infer(x),
        "inline, contracts uncompiled": lambda: uncompiled.infer(x),
        "inline, the bare nn.Module": lambda: plain.infer(x),
        "input contract": lambda: spec_in.check(x),
        "input contract, uncompiled": lambda: full_in.check(x),
        "output contract": lambda: spec_out.check(out),
        "output contract, uncompiled": lambda: full_out.check(out),
        "digest(input)": lambda: digest(x),
        "digest(output)": lambda: digest(out),
        "default finite check": lambda: check_finite(out),
        "sealed record": lambda: log.record_inference(
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
        "route + record": lambda: (machine.route(5), machine.record(Outcome.OK, 5)),
        "arm + disarm": lambda: dog.disarm(dog.arm(far, noop)),
        "noop (timer floor)": noop,
    }
    names, fns = list(cases), list(cases.values())
    pause = args.pause_us / 1e6
    interleaved(fns, min(args.calls, 1000))  # warm up
    samples = interleaved(fns, args.calls, pause)
    compiled.close()
    uncompiled.close()
    plain.close()
    dog.close()
    shutil.rmtree(work, ignore_errors=True)

    p50 = {n: pct(s, 0.5) for n, s in zip(names, samples, strict=True)}
    print(
        f"inline fixed cost, Linear(16, 4), CPU, {args.calls} calls per case, alternating"
        + (f", each after a {args.pause_us:g} us sleep" if pause else "")
        + "\n"
    )
    print(f"{'case':30s} {'p50 us':>9s} {'p99 us':>9s}")
    for n, s in zip(names, samples, strict=True):
        print(f"{n:30s} {p50[n]:9.2f} {pct(s, 0.99):9.2f}")
    floor = p50["noop (timer floor)"]
    overhead = p50["inline"] - p50["bare"]
    before = p50["inline, contracts uncompiled"] - p50["bare"]
    parts = [
        "input contract",
        "output contract",
        "digest(input)",
        "digest(output)",
        "sealed record",
        "route + record",
        "arm + disarm",
    ]
    explained = sum(max(p50[n] - floor, 0.0) for n in parts)
    print(f"\ninline overhead (inline - bare), p50: {overhead:.1f} us")
    print(f"  with the contracts uncompiled: {before:.1f} us")
    print(f"  the parts, less the timer floor each: {explained:.1f} us")
    print(f"  the rest (Python around them): {overhead - explained:.1f} us")
    print(f"  {'PASS' if overhead <= 10 else 'MISS'}  inline overhead <= 10 us")


if __name__ == "__main__":
    main()
