"""What the service socket costs per call: client -> server -> supervisor -> client, against
calling ``Supervisor.infer`` in-process, for a small and a 1 MiB tensor.

Cases (each call timed with ``perf_counter_ns``; medians):

- ``direct``: ``Supervisor.infer(x)`` in-process (inline isolation, identity-ish model
  ``x * 1``, default finite output check, sealed INFERENCE record, durability ``batch``);
- ``socket``: ``Client.infer(x)`` through a :class:`SocketServer` on a Unix socket, same
  supervisor: encode, send, frame checks and CRC32C both ways, ``torch.frombuffer`` decode.

Sizes: ``small`` = 1x16 float32 (64 bytes), ``1MiB`` = 1x262144 float32. Nothing here asserts
on timing.

    python bench/bench_protocol.py [--quick] [--small-calls 2000] [--large-calls 200] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable

import torch
from _common import timed

from vigil.service._client import Client
from vigil.service._server import SocketServer
from vigil.supervisor import Supervisor

torch.set_num_threads(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--small-calls", type=int, default=2000)
    ap.add_argument("--large-calls", type=int, default=200)
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    args = ap.parse_args()
    if args.quick:
        args.small_calls, args.large_calls = 300, 30
    work = tempfile.mkdtemp(prefix="vgb-", dir=args.dir)

    def model(t: torch.Tensor) -> torch.Tensor:
        return t * 1

    sup = Supervisor(model, log=os.path.join(work, "f.vlog"), isolation="inline")
    server = SocketServer(sup, os.path.join(work, "s.sock"), max_request_bytes=8 << 20)
    server.start()
    client = Client(server.path)
    sizes = {
        "small": (torch.randn(1, 16), args.small_calls),
        "1MiB": (torch.randn(1, 1 << 18), args.large_calls),
    }
    med: dict[tuple[str, str], float] = {}
    for size, (x, calls) in sizes.items():
        cases: dict[str, Callable[[], object]] = {
            "direct": lambda x=x: sup.infer(x),
            "socket": lambda x=x: client.infer(x),
        }
        for name, fn in cases.items():
            timed(fn, max(10, calls // 10))  # warm up
            med[(size, name)] = statistics.median(timed(fn, calls)) / 1000
    client.close()
    server.stop(1.0)
    sup.close()
    shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nround trip per call, median us (small: {args.small_calls} calls of 1x16 float32; "
        f"1MiB: {args.large_calls} calls of 1x262144 float32)\n"
    )
    print(f"{'size':8s} {'direct us':>10s} {'socket us':>10s} {'added us':>10s} {'ratio':>7s}")
    for size in sizes:
        d, s = med[(size, "direct")], med[(size, "socket")]
        print(f"{size:8s} {d:10.1f} {s:10.1f} {s - d:10.1f} {s / d:7.2f}")


if __name__ == "__main__":
    main()
