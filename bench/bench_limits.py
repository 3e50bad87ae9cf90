"""What the rate limiter ([limits], issue 18) costs per call, against the bare socket call.

Cases, all in one run:

- ``admit``: ``RateLimiter.admit(None, None)`` alone -- classify (default class) and take a
  token from an ample bucket (it always admits, so the cost is the full check);
- ``admit+prefix``: the same with a trace id classified by a configured prefix (the
  longest-prefix tables walked, the trace id hexed);
- ``admission``: what a front does per call with limits on: ``Admission.begin`` with a valid
  ``traceparent`` (parsed) and a class name, then ``Admission.refusal`` (the limiter);
- ``socket`` and ``socket+limits``: ``Client.infer`` of a 1x16 float32 tensor through two
  :class:`SocketServer` on the same supervisor, without and with the limiter (and a
  traceparent and class sent in the context block), alternating call by call;
- ``socket+traceparent``: the bare server's call with a traceparent only (the traced call's
  own cost: the context block both ways, the parse, the trace id recorded), in the same
  alternation.

The first three are timed as loops of ``--batch`` calls (per-call cost = loop time / batch,
no timer in the loop), repeated; the socket cases call by call. Medians throughout; the
ratio that matters is ``admission`` over ``socket``, both from this run. Nothing here asserts
on timing.

    python bench/bench_limits.py [--quick] [--calls 2000] [--repeats 31] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from _common import interleaved

from vigil.service._calls import Admission
from vigil.service._client import Client
from vigil.service._limits import LimitClass, LimitsSection, RateLimiter
from vigil.service._server import SocketServer
from vigil.supervisor import Supervisor

torch.set_num_threads(1)
TRACEPARENT = "00-a1b2c3d4e5f60718293a4b5c6d7e8f90-00f067aa0ba902b7-01"
AMPLE = LimitsSection(
    classes=(
        LimitClass("standard", rate=1e9, burst=1_000_000),
        LimitClass("priority", rate=1e9, burst=1_000_000, trace_prefixes=("a1b2", "ffff0000")),
    ),
    default="standard",
)


def per_call_ns(fn: Callable[[], object], batch: int, repeats: int) -> float:
    """Median over ``repeats`` of (time of ``batch`` calls) / ``batch``, in ns."""
    clock = time.perf_counter_ns
    out = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(batch):
            fn()
        out.append((clock() - t0) / batch)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=2000, help="socket calls per case")
    ap.add_argument("--batch", type=int, default=10_000, help="limiter calls per loop")
    ap.add_argument("--repeats", type=int, default=31, help="loops per limiter case")
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    args = ap.parse_args()
    if args.quick:
        args.calls, args.batch, args.repeats = 300, 2000, 5
    work = tempfile.mkdtemp(prefix="vgl-", dir=args.dir)

    limiter = RateLimiter(AMPLE)
    tid = bytes.fromhex(TRACEPARENT[3:35])
    admission = Admission(None, limiter=RateLimiter(AMPLE))

    def full() -> object:
        return admission.refusal(admission.begin(TRACEPARENT, "priority", "socket"), None)

    floor = per_call_ns(lambda: None, args.batch, args.repeats)
    loops = {
        "admit": per_call_ns(lambda: limiter.admit(None, None), args.batch, args.repeats),
        "admit+prefix": per_call_ns(lambda: limiter.admit(None, tid), args.batch, args.repeats),
        "admission": per_call_ns(full, args.batch, args.repeats),
    }

    sup = Supervisor(lambda t: t * 1, log=os.path.join(work, "f.vlog"), isolation="inline")
    bare = SocketServer(sup, os.path.join(work, "a.sock"))
    limited = SocketServer(
        sup, os.path.join(work, "b.sock"), admission=Admission(sup, limiter=RateLimiter(AMPLE))
    )
    bare.start()
    limited.start()
    x = torch.randn(1, 16)
    with Client(bare.path) as c0, Client(limited.path) as c1:
        cases = [
            lambda: c0.infer(x),
            lambda: c1.infer(x, traceparent=TRACEPARENT, rate_class="priority"),
            lambda: c0.infer(x, traceparent=TRACEPARENT),
        ]
        interleaved(cases, max(10, args.calls // 10))  # warm up
        socket_ns, limited_ns, traced_ns = (
            statistics.median(t) for t in interleaved(cases, args.calls)
        )
    bare.stop(1.0)
    limited.stop(1.0)
    sup.close()
    shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nlimiter per call (loops of {args.batch}, median of {args.repeats}; loop floor "
        f"{floor:.0f} ns subtracted) against the socket call (median of {args.calls}, "
        "alternating)\n"
    )
    print(f"{'case':18s} {'ns/call':>10s} {'/ socket':>10s}")
    for name, ns in loops.items():
        cost = ns - floor
        print(f"{name:18s} {cost:10.0f} {cost / socket_ns:10.4f}")
    print(f"{'socket':18s} {socket_ns:10.0f} {1.0:10.4f}")
    added = limited_ns - socket_ns
    print(f"{'socket+limits':18s} {limited_ns:10.0f} {limited_ns / socket_ns:10.4f}")
    print(f"{'socket+traceparent':18s} {traced_ns:10.0f} {traced_ns / socket_ns:10.4f}")
    print(f"\nsocket+limits - socket: {added / 1000:.2f} us a call (includes the context block)")
    print(f"socket+traceparent - socket: {(traced_ns - socket_ns) / 1000:.2f} us a call")


if __name__ == "__main__":
    main()
