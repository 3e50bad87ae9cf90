"""What a wait does to the code that runs after it: why the fixed cost reads larger around a call.

Python code run right after itself finds the CPU's caches and branch predictors holding its
code and data; code run after the thread waited -- as a supervisor's checks, digests and
record run after a GPU call's 2.5 ms -- may find them cleared by whatever the machine did
meanwhile (other processes, other virtual machines on the same physical core, the hypervisor).
This bench measures that decay on the machine it runs on, for three pieces of code:

* ``noop``: a Python call that does nothing (the interpreter alone);
* ``linear``: ``Linear(16, 4)`` under ``no_grad`` at batch 1 (torch's dispatch);
* ``supervision``: what ``Supervisor.infer`` (inline; input and token-output contracts, both
  digests, a sealed record, durability ``batch``) adds to a stand-in model that waits and then
  answers next tokens -- supervised p50 minus the stand-in's own p50, the two alternating.

Each is timed after a wait of 0, 20, 100, 500 and 2500 µs, the wait either a busy spin of
this thread (``spin``: the CPU stays with the process, as a CUDA host thread spins in its
synchronisation by default) or ``time.sleep`` (``sleep``: the thread blocks and the CPU may
run anything else). The figures are per-call p50s in µs; the last column of each table is the
2500 µs figure over the 0 µs one. On a machine whose caches and predictors survive a 2.5 ms
wait, every row stays near its 0 µs figure and the fixed cost measured in a tight loop is the
cost around a GPU call; where they do not, the cost around a call is the loop's times the
ratio, for vigil and for any other code alike. Nothing here asserts on timing.

    python bench/bench_wait.py [--quick] [--calls 400] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import interleaved

from vigil.fsm import Policy
from vigil.model import next_tokens, token_contract
from vigil.schemas import Contract, TensorSpec
from vigil.supervisor import LastGood, Supervisor

torch.set_num_threads(1)

WAITS_US = (0, 20, 100, 500, 2500)


def waiter(how: str, wait_ns: list[int]) -> Callable[[], None]:
    """A function that waits ``wait_ns[0]`` ns, by spinning or sleeping."""
    clock = time.perf_counter_ns

    def spin() -> None:
        end = clock() + wait_ns[0]
        while clock() < end:
            pass

    def sleep() -> None:
        if wait_ns[0]:
            time.sleep(wait_ns[0] / 1e9)

    return spin if how == "spin" else sleep


def after_wait(fn: Callable[[], object], wait: Callable[[], None], calls: int) -> float:
    """p50 ns of ``fn`` called right after ``wait()``."""
    clock = time.perf_counter_ns
    out = []
    for _ in range(calls):
        wait()
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return statistics.median(out)


def supervision_after_wait(
    sup: Supervisor, model: Callable[[Any], Any], x: torch.Tensor, calls: int
) -> float:
    """p50 ns of ``sup.infer(x)`` minus p50 of ``model(x)``, the two alternating (the model
    does the wait)."""
    bare, supervised = interleaved([lambda: model(x), lambda: sup.infer(x)], calls)
    return statistics.median(supervised) - statistics.median(bare)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=400, help="calls per figure")
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    args = ap.parse_args()
    calls = 30 if args.quick else args.calls
    work = tempfile.mkdtemp(prefix="vigil-bench-wait-", dir=args.dir)
    layer = torch.nn.Linear(16, 4).eval()
    x = torch.randn(1, 16)
    answer = next_tokens(torch.randn(1, 16, 32000).to(torch.bfloat16))

    def noop() -> int:
        return 1

    def linear() -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = layer(x)
        return out

    print(
        f"the cost of code after a wait: p50 us of {calls} calls per figure, "
        f"{os.cpu_count()} CPUs visible\n"
    )
    try:
        for how in ("spin", "sleep"):
            wait_ns = [0]
            wait = waiter(how, wait_ns)

            def model(_x: torch.Tensor, wait: Callable[[], None] = wait) -> Any:
                wait()  # the device's time
                return answer

            sup = Supervisor(
                model,
                log=os.path.join(work, f"{how}.vigil"),
                isolation="inline",
                input_contract=Contract(TensorSpec(shape=(1, 16), dtype=torch.float32)),
                output_contract=token_contract(),
                fallback=[LastGood(10**12)],
                policy=Policy(),
                deadline_ns=1_000_000_000,  # a stalled VM must not time a call out
            )
            rows: dict[str, list[float]] = {"noop": [], "linear": [], "supervision": []}
            try:
                supervision_after_wait(sup, model, x, min(calls, 50))  # warm up
                for us in WAITS_US:
                    wait_ns[0] = us * 1000
                    rows["noop"].append(after_wait(noop, wait, calls))
                    rows["linear"].append(after_wait(linear, wait, calls))
                    rows["supervision"].append(supervision_after_wait(sup, model, x, calls))
            finally:
                sup.close()
            print(f"after a {how} of (us):")
            head = "".join(f"{w:>10}" for w in WAITS_US)
            print(f"  {'code':12s}{head}{'2500/0':>10}")
            for name, p50s in rows.items():
                cells = "".join(f"{v / 1e3:10.2f}" for v in p50s)
                ratio = p50s[-1] / p50s[0] if p50s[0] > 0 else float("nan")
                print(f"  {name:12s}{cells}{ratio:10.1f}")
            print()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
