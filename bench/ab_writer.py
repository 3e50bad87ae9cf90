"""The flight recorder's writer of another commit against this checkout's, in one process:
records/s of the appending thread's CPU time, alternating round by round (issue 16, run P).

Two checkouts benchmarked one after the other on a shared machine differ by more than the code
does; here both writers (the old ``vigil/auditlog/_writer.py`` loaded from ``git show``, on
this checkout's other modules) append the same records in the same process, in alternating
rounds, timed with ``time.thread_time`` (blind to time the thread waited for a CPU). Cases:
``plain`` (``record_inference``, no payload), ``traced`` (with a trace context: body_version
2), ``many`` (``record_inferences``, 1000 rows a call). The ring is written once first, so
that no case pays first-touch page faults. Nothing here asserts on timing.

    python bench/ab_writer.py [--old main] [--rounds 41] [--records 3000] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import ModuleType

import vigil.auditlog._writer as new
from vigil.auditlog import RingConfig

RID, MD, IND, OUTD = bytes(range(16)), b"m" * 32, b"i" * 32, b"o" * 32
TRACE, SPAN = bytes(range(1, 17)), bytes(range(8))
ROW = (RID, MD, IND, OUTD, 1, 1, 0, 123_456, 10_000_000, 0, 0, 0, b"")
RING = 16 << 20


def load_old(ref: str, work: str) -> ModuleType:
    """``vigil/auditlog/_writer.py`` as of ``ref``, imported beside this checkout's modules."""
    src = subprocess.run(
        ["git", "show", f"{ref}:vigil/auditlog/_writer.py"], check=True, capture_output=True
    ).stdout
    path = os.path.join(work, "writer_old.py")
    with open(path, "wb") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("vigil.auditlog._writer_old", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


Cases = dict[str, tuple[Callable[[], object], int]]  # name: (one call, records it appends)


# fmt: off
def cases(module: ModuleType, path: str) -> tuple[Cases, object]:
    w = module.FlightRecorder.create(path, RingConfig(size=RING), durability="none")
    one, many = w.record_inference, w.record_inferences
    for _ in range(RING // 1000 // 240):  # one lap: every page mapped and dirty
        many([ROW] * 1000)
    return {
        "plain": (lambda: one(request_id=RID, model_digest=MD, input_digest=IND,
                              output_digest=OUTD, state=1, served_by=1, outcome=0,
                              latency_ns=123_456, deadline_ns=10_000_000), 1),
        "traced": (lambda: one(request_id=RID, model_digest=MD, input_digest=IND,
                               output_digest=OUTD, state=1, served_by=1, outcome=0,
                               latency_ns=123_456, deadline_ns=10_000_000, trace_id=TRACE,
                               span_id=SPAN), 1),
        "many": (lambda: many([(*ROW[:9], 0, 0, 0, b"") for _ in itertools.repeat(None, 1000)]),
                 1000),
    }, w
# fmt: on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="main", help="the commit to compare with (default main)")
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--records", type=int, default=3000, help="records per case and round")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds")
    a = ap.parse_args()
    rounds = 3 if a.quick else a.rounds
    work = tempfile.mkdtemp(prefix="vigil-ab-writer-")
    writers = []
    try:
        sides = {"old": load_old(a.old, work), "new": new}
        fns: Cases = {}
        for side, module in sides.items():
            made, w = cases(module, os.path.join(work, side))
            writers.append(w)
            fns.update({f"{side} {name}": fn for name, fn in made.items()})
        res: dict[str, list[float]] = {k: [] for k in fns}
        order = list(fns)
        for r in range(rounds):
            for k in order if r % 2 else order[::-1]:
                fn, per = fns[k]
                calls = max(a.records // per, 3)
                t = time.thread_time_ns()
                for _ in itertools.repeat(None, calls):
                    fn()
                res[k].append((time.thread_time_ns() - t) / (calls * per))
    finally:
        for w in writers:
            w.close()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)
    print(f"writer of {a.old} (old) vs this checkout (new): CPU ns per record, median of "
          f"{rounds} alternating rounds")  # fmt: skip
    for k, v in res.items():
        print(f"  {k:<12} {statistics.median(v):7.0f} ns  (min {min(v):.0f})")
    for name in ("plain", "traced", "many"):
        ratio = statistics.median(res[f"new {name}"]) / statistics.median(res[f"old {name}"])
        print(f"  new/old {name}: {ratio:.3f}")


if __name__ == "__main__":
    main()
