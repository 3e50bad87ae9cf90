"""What supervision costs around a GPU-shaped call, measured on the CPU, and around a tiny model.

Part 1, GPU-shaped: a model stand-in that spends 2.5 ms *without holding the GIL*
(``time.sleep``, which releases it as a GPU call does while the device works) and returns a
``(1, 16, 32000)`` bfloat16 tensor (1 000 000 bytes of logits, allocated once: the device would
have written it; the device-to-host copy a real GPU output needs is not modelled). Cases:
``bare`` (the stand-in itself), ``inline`` and ``thread`` (``Supervisor.infer`` with an input
and an output contract, SHA-256 digests of input and output, a sealed INFERENCE record,
durability ``batch``).

Part 2, tiny: ``Linear(16, 4)`` under ``no_grad``, batch 1, one torch thread: ``bare``,
``inline`` (as above) and ``pybreaker`` (``CircuitBreaker.call`` of the same model). The
inline overhead (inline p50 - bare p50) is compared with pybreaker's (pybreaker p50 - bare p50).

Every group's calls alternate call by call (the order rotating each round, never in blocks):
drift on a shared VM is larger than the overhead measured. Nothing here asserts on timing.

    python bench/bench_gpu_shaped.py [--quick] [--calls 2000] [--tiny-calls 20000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import pybreaker
import torch
from _common import interleaved, pct

from vigil.fsm import Policy
from vigil.schemas import Contract, TensorSpec
from vigil.supervisor import Constant, Supervisor

torch.set_num_threads(1)

GPU_SECONDS = 0.0025
LOGITS = (1, 16, 32000)


def _supervisors(
    model: Callable[[torch.Tensor], torch.Tensor],
    *,
    work: str,
    tag: str,
    x: torch.Tensor,
    out: torch.Tensor,
    isolations: tuple[str, ...],
) -> dict[str, Supervisor]:
    spec_in = Contract(TensorSpec(shape=tuple(x.shape), dtype=x.dtype))
    spec_out = Contract(TensorSpec(shape=tuple(out.shape), dtype=out.dtype))
    return {
        iso: Supervisor(
            model,
            log=os.path.join(work, f"{tag}-{iso}.vigil"),
            isolation=iso,  # type: ignore[arg-type]
            input_contract=spec_in,
            output_contract=spec_out,
            fallback=Constant(torch.zeros_like(out)),
            policy=Policy(),
        )
        for iso in isolations
    }


def _report(title: str, names: list[str], samples: list[list[int]]) -> dict[str, float]:
    print(f"\n{title}")
    print(f"{'case':12s} {'p50 us':>10s} {'p99 us':>10s}")
    p50 = {}
    for name, s in zip(names, samples, strict=True):
        p50[name] = pct(s, 0.5)
        print(f"{name:12s} {p50[name]:10.1f} {pct(s, 0.99):10.1f}")
    return p50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=2000, help="GPU-shaped calls per case")
    ap.add_argument("--tiny-calls", type=int, default=20000, help="tiny-model calls per case")
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    args = ap.parse_args()
    if args.quick:
        args.calls, args.tiny_calls = 100, 1000
    work = tempfile.mkdtemp(prefix="vigil-bench-gpu-", dir=args.dir)

    # --- part 1: GPU-shaped --------------------------------------------------------------
    logits = torch.randn(LOGITS).to(torch.bfloat16)
    tokens = torch.randn(1, 16)

    def gpu_call(t: torch.Tensor) -> torch.Tensor:
        time.sleep(GPU_SECONDS)  # releases the GIL, as a GPU call does while the device works
        return logits

    gpu = _supervisors(
        gpu_call, work=work, tag="gpu", x=tokens, out=logits, isolations=("inline", "thread")
    )
    names = ["bare", "inline", "thread"]
    fns: list[Callable[[], object]] = [
        lambda: gpu_call(tokens),
        lambda: gpu["inline"].infer(tokens),
        lambda: gpu["thread"].infer(tokens),
    ]
    interleaved(fns, min(args.calls, 50))  # warm up
    big = _report(
        f"GPU-shaped: {GPU_SECONDS * 1e3:.1f} ms sleep (GIL released) -> {LOGITS} bfloat16, "
        f"{args.calls} calls per case, alternating",
        names,
        interleaved(fns, args.calls),
    )

    # --- part 2: tiny model and pybreaker ------------------------------------------------
    layer = torch.nn.Linear(16, 4).eval()
    x = torch.randn(1, 16)

    def tiny(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = layer(t)
        return out

    sup = _supervisors(tiny, work=work, tag="tiny", x=x, out=tiny(x), isolations=("inline",))[
        "inline"
    ]
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    tnames = ["bare", "inline", "pybreaker"]
    tfns: list[Callable[[], object]] = [
        lambda: tiny(x),
        lambda: sup.infer(x),
        lambda: breaker.call(tiny, x),
    ]
    interleaved(tfns, min(args.tiny_calls, 1000))  # warm up
    small = _report(
        f"tiny: Linear(16, 4), batch 1, CPU, {args.tiny_calls} calls per case, alternating",
        tnames,
        interleaved(tfns, args.tiny_calls),
    )

    for s in (*gpu.values(), sup):
        s.close()
    shutil.rmtree(work, ignore_errors=True)

    print("\nratios (p50):")
    print(f"  GPU-shaped inline / bare: {big['inline'] / big['bare']:.4f}")
    print(f"  GPU-shaped thread / bare: {big['thread'] / big['bare']:.4f}")
    print(f"  GPU-shaped inline overhead: {big['inline'] - big['bare']:.1f} us")
    print(f"  GPU-shaped thread overhead: {big['thread'] - big['bare']:.1f} us")
    inline = small["inline"] - small["bare"]
    breaker_cost = small["pybreaker"] - small["bare"]
    print(f"  tiny inline overhead: {inline:.1f} us (target <= 10 us)")
    print(f"  tiny pybreaker overhead: {breaker_cost:.1f} us")
    ratio = inline / breaker_cost if breaker_cost > 0 else float("inf")
    print(f"  tiny inline overhead / pybreaker overhead: {ratio:.1f}")
    verdict = "PASS" if big["inline"] / big["bare"] <= 1.01 else "MISS"
    print(f"\n  {verdict}  GPU-shaped inline <= 1 % over bare (p50)")
    print(f"  {'PASS' if inline <= 10 else 'MISS'}  tiny inline overhead <= 10 us (p50)")


if __name__ == "__main__":
    main()
