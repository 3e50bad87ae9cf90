"""Silent wrong answers: detection coverage as a function of the known-answer probe interval.

    python bench/probe_coverage.py --trials 200 --write

A model that answers finitely, in contract and wrongly passes every per-call check; only a
known-answer probe (``Policy.probe_interval_ns``: the first call after each interval runs the
probe first) sees it. This script runs the real :class:`~vigil.supervisor.Supervisor` (inline,
an injected clock: one call every millisecond of simulated time) around a model that answers
wrongly during a window of ``d`` ms starting at a random phase of the probe schedule (seeded),
and counts, per (probe interval P, fault duration d):

* *coverage*: the fraction of faults that a probe caught (a TRIP_KNOWN_ANSWER) before the
  window ended -- to compare with ``min(1, d / P)``, the chance that a probe falls inside it;
* the wrong answers *served* per fault (mean, max): the calls the primary answered inside the
  window before the trip (after it the fallback answers).

``--write`` rewrites the ``probe-coverage`` section of docs/SAFETY.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

import safety_matrix  # noqa: E402

from vigil.auditlog import RingConfig  # noqa: E402
from vigil.fsm import Policy  # noqa: E402
from vigil.schemas import ClockSource, ServedBy, State  # noqa: E402
from vigil.supervisor import Constant, KnownAnswer, Supervisor  # noqa: E402

MS = 1_000_000
CALL_NS = MS  # one call per simulated millisecond
INTERVALS_MS = (10, 20, 50, 100)
DURATIONS_MS = (1, 5, 10, 20, 50, 100)
KA_INPUT = torch.full((1, 4), 0.25)
X = torch.ones(1, 4)


class ManualClock:
    """Simulated time: it moves only when the script moves it."""

    source = ClockSource.INJECTED
    boot_uuid = b"probe-coverage-0"

    def __init__(self) -> None:
        self.mono = 1_000_000_000
        self.real = 1_700_000_000_000_000_000

    def monotonic_ns(self) -> int:
        return self.mono

    def realtime_ns(self) -> int:
        return self.real

    def advance(self, ns: int) -> None:
        self.mono += ns
        self.real += ns


class SilentlyWrong:
    """``2x``, or ``2x + 0.5`` while :attr:`wrong` (finite, in contract, wrong)."""

    def __init__(self) -> None:
        self.wrong = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + (0.5 if self.wrong else 0.0)


def measure(
    interval_ms: int, duration_ms: int, trials: int, seed: int, root: Path
) -> dict[str, Any]:
    clock = ManualClock()
    model = SilentlyWrong()
    sup = Supervisor(
        model,
        log=root / f"p{interval_ms}-d{duration_ms}.vigil",
        fallback=Constant(torch.zeros(1, 4)),
        policy=Policy(probe_interval_ns=interval_ms * MS),
        known_answer=KnownAnswer(KA_INPUT, KA_INPUT * 2),
        isolation="inline",
        clock=clock,
        ring=RingConfig(size=4096 + 16 * 65536, segment_size=65536),
        durability="none",
    )
    rng = random.Random(seed)
    caught, served = 0, []
    try:
        for _ in range(trials):
            for _ in range(rng.randrange(interval_ms)):  # a random phase of the schedule
                sup.infer(X)
                clock.advance(CALL_NS)
            model.wrong = True
            wrong = 0
            for _ in range(duration_ms):
                wrong += sup.infer(X).served_by is ServedBy.PRIMARY
                clock.advance(CALL_NS)
            model.wrong = False
            served.append(wrong)
            if sup.state is not State.NORMAL:
                caught += 1
                sup.reset("probe coverage: the next trial")
    finally:
        sup.close()
    return {
        "coverage": caught / trials,
        "expected": min(1.0, duration_ms / interval_ms),
        "served_mean": sum(served) / trials,
        "served_max": max(served),
    }


def table(results: dict[tuple[int, int], dict[str, Any]], trials: int, took: float) -> str:
    head = "| probe interval P | " + " | ".join(f"d = {d} ms" for d in DURATIONS_MS) + " |"
    rows = [
        f"`python bench/probe_coverage.py --trials {trials}` ({took:.0f} s): {trials} faults "
        "per cell, one call per simulated millisecond. Each cell: coverage measured "
        "(min(1, d/P) expected) · wrong answers served per fault, mean / max.",
        "",
        head,
        "|---|" + "---|" * len(DURATIONS_MS),
    ]
    for p in INTERVALS_MS:
        cells = []
        for d in DURATIONS_MS:
            r = results[(p, d)]
            cells.append(
                f"{100 * r['coverage']:.0f} % ({100 * r['expected']:.0f} %) · "
                f"{r['served_mean']:.1f} / {r['served_max']}"
            )
        rows.append(f"| {p} ms | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--write", action="store_true", help="rewrite docs/SAFETY.md's section")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="vigil-probes-") as tmp:
        for p in INTERVALS_MS:
            for d in DURATIONS_MS:
                results[(p, d)] = measure(p, d, args.trials, args.seed, Path(tmp))
    text = table(results, args.trials, time.monotonic() - t0)
    print(text)
    if args.write:
        doc = safety_matrix.DOC
        doc.write_text(
            safety_matrix.replace_section(doc.read_text("utf-8"), "probe-coverage", text),
            "utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
