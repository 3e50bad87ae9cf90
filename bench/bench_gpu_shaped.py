"""What supervision costs around a GPU-shaped call, measured on the CPU, and around a tiny model.

Part 1, GPU-shaped: a model stand-in (``_gpu_standin.py``) that spends 2.5 ms *without
holding the GIL* (``time.sleep``: it releases the GIL and uses no CPU, as the host thread of a
GPU call does while it waits for the device; a CPU op would compete with the supervisor for
the CPU, which a GPU does not) and answers either a ``(1, 16, 32000)`` bfloat16 tensor
(``logits``: 1 000 000 bytes, allocated once: the device would have written it) or its next
tokens (``tokens``: ``{"tokens", "logprobs"}``, one row, computed once: on a GPU the head runs
on the device within the 2.5 ms). Cases per output: ``bare`` (the stand-in itself),
``inline`` and ``process`` (``Supervisor.infer`` with an input and an output contract, SHA-256
digests of input and output, a sealed INFERENCE record, durability ``batch``; ``process`` runs
the stand-in in a worker process and reads its answer from shared memory), and ``thread`` for
logits.

Part 2, tiny: ``Linear(16, 4)`` under ``no_grad``, batch 1, one torch thread: ``bare``,
``inline`` (as above) and ``pybreaker`` (``CircuitBreaker.call`` of the same model). The
inline overhead (inline p50 - bare p50) is compared with pybreaker's (pybreaker p50 - bare p50).

Every group's calls alternate call by call (the order rotating each round, never in blocks):
drift on a shared VM is larger than the overhead measured. Nothing here asserts on timing.

``--digest-threshold BYTES`` passes an output-digest threshold (outputs larger than it are
digested off the caller's path) to the Supervisor, when its constructor has such a parameter
(a name with "digest" and "threshold"); otherwise the bench says so and runs without it.

    python bench/bench_gpu_shaped.py [--quick] [--calls 2000] [--tiny-calls 20000] [--dir DIR]
        [--digest-threshold BYTES] [--skip-process]
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import pybreaker
import torch
from _common import interleaved, pct
from _gpu_standin import GPU_SECONDS, LOGITS, standin

from vigil.fsm import Policy
from vigil.model import token_contract
from vigil.schemas import Contract, TensorSpec
from vigil.supervisor import LastGood, Supervisor
from vigil.workers import WorkerPool, WorkerSpec

torch.set_num_threads(1)


def digest_option(threshold: int | None) -> dict[str, Any]:
    """``{name: threshold}`` for the Supervisor's output-digest threshold parameter, or ``{}``
    when it has none (or no threshold was asked for)."""
    if threshold is None:
        return {}
    names = [
        n
        for n in inspect.signature(Supervisor.__init__).parameters
        if "digest" in n and "threshold" in n
    ]
    if not names:
        print("note: Supervisor takes no output-digest threshold here: --digest-threshold ignored")
        return {}
    print(f"Supervisor({names[0]}={threshold})")
    return {names[0]: threshold}


def _supervisor(
    primary: Any, *, work: str, tag: str, x: torch.Tensor, out_contract: Any, **options: Any
) -> Supervisor:
    return Supervisor(
        primary,
        log=os.path.join(work, f"{tag}.vigil"),
        input_contract=Contract(TensorSpec(shape=tuple(x.shape), dtype=x.dtype)),
        output_contract=out_contract,
        fallback=[LastGood(10**12)],
        policy=Policy(),
        deadline_ns=1_000_000_000,  # a loaded VM stalls calls for tens of ms: never a timeout
        **options,
    )


def gpu_shaped(
    args: argparse.Namespace, work: str, options: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Part 1: p50 per case, per output."""
    x = torch.randn(1, 16)
    out: dict[str, dict[str, float]] = {}
    for output in ("logits", "tokens"):
        model = standin(output)
        answer = model(x)
        contract = (
            token_contract()
            if output == "tokens"
            else Contract(TensorSpec(shape=LOGITS, dtype=torch.bfloat16))
        )
        isolations = ["inline", "thread"] if output == "logits" else ["inline"]
        sups = {
            iso: _supervisor(
                model,
                work=work,
                tag=f"{output}-{iso}",
                x=x,
                out_contract=contract,
                isolation=iso,
                **options,
            )
            for iso in isolations
        }
        if not args.skip_process:
            spec = WorkerSpec(factory="_gpu_standin:standin", kwargs={"output": output}, threads=1)
            pool = WorkerPool(spec, standby=False)
            sups["process"] = _supervisor(
                pool,
                work=work,
                tag=f"{output}-process",
                x=x,
                out_contract=contract,
                isolation="process",
                **options,
            )
        names = ["bare", *sups]
        fns: list[Callable[[], object]] = [lambda m=model: m(x)]
        fns += [lambda s=s: s.infer(x) for s in sups.values()]  # type: ignore[misc]
        try:
            interleaved(fns, min(args.calls, 50))  # warm up
            what = f"{LOGITS} bfloat16" if output == "logits" else "next tokens of them"
            out[output] = _report(
                f"GPU-shaped, {output}: {GPU_SECONDS * 1e3:.1f} ms sleep (GIL released) -> "
                f"{what}, {args.calls} calls per case, alternating",
                names,
                interleaved(fns, args.calls),
            )
            assert torch.equal(
                sups["inline"].infer(x).output["tokens"] if output == "tokens" else
                sups["inline"].infer(x).output, answer["tokens"] if output == "tokens" else answer
            )  # fmt: skip
            for iso, s in sups.items():  # a case served by a fallback measures nothing
                st = s.statistics()
                if st.outcomes.get("OK", 0) != st.calls or st.state.name != "NORMAL":
                    print(f"  WARNING {output} {iso}: {st.state.name}, outcomes {st.outcomes}")
        finally:
            for s in sups.values():
                s.close()
    return out


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
    ap.add_argument("--digest-threshold", type=int, default=None, help="bytes; see above")
    ap.add_argument("--skip-process", action="store_true", help="no worker-process cases")
    args = ap.parse_args()
    if args.quick:
        args.calls, args.tiny_calls = 100, 1000
    work = tempfile.mkdtemp(prefix="vigil-bench-gpu-", dir=args.dir)

    options = digest_option(args.digest_threshold)
    big = gpu_shaped(args, work, options)

    # --- part 2: tiny model and pybreaker ------------------------------------------------
    layer = torch.nn.Linear(16, 4).eval()
    x = torch.randn(1, 16)

    def tiny(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = layer(t)
        return out

    sup = _supervisor(
        tiny,
        work=work,
        tag="tiny",
        x=x,
        out_contract=Contract(TensorSpec(shape=(1, 4), dtype=torch.float32)),
        isolation="inline",
        **options,
    )
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

    sup.close()
    shutil.rmtree(work, ignore_errors=True)

    print("\nratios (p50), supervised / bare:")
    verdicts = []
    for output, p50 in big.items():
        for case in p50:
            if case == "bare":
                continue
            ratio = p50[case] / p50["bare"]
            print(f"  GPU-shaped {output:6s} {case:7s}: {ratio:.4f} "
                  f"({p50[case] - p50['bare']:+.1f} us)")  # fmt: skip
            goal = {"inline": 1.01, "process": 1.03}.get(case)
            if goal is not None:
                verdicts.append((ratio <= goal, f"GPU-shaped {output} {case} <= {goal}x bare"))
    inline = small["inline"] - small["bare"]
    breaker_cost = small["pybreaker"] - small["bare"]
    print(f"  tiny inline overhead: {inline:.1f} us (target <= 10 us)")
    print(f"  tiny pybreaker overhead: {breaker_cost:.1f} us")
    ratio = inline / breaker_cost if breaker_cost > 0 else float("inf")
    print(f"  tiny inline overhead / pybreaker overhead: {ratio:.1f}")
    print()
    for ok, label in verdicts:
        print(f"  {'PASS' if ok else 'MISS'}  {label} (p50)")
    print(f"  {'PASS' if inline <= 10 else 'MISS'}  tiny inline overhead <= 10 us (p50)")


if __name__ == "__main__":
    main()
