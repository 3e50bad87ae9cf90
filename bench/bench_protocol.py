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

import statistics
from collections.abc import Callable

import torch
from _common import timed
from _serving import bench_args, served

torch.set_num_threads(1)


def main() -> None:
    args = bench_args(__doc__)
    sizes = {
        "small": (torch.randn(1, 16), args.small_calls),
        "1MiB": (torch.randn(1, 1 << 18), args.large_calls),
    }
    med: dict[tuple[str, str], float] = {}
    with served(scratch=args.dir) as s:
        for size, (x, calls) in sizes.items():
            cases: dict[str, Callable[[], object]] = {
                "direct": lambda x=x: s.sup.infer(x),
                "socket": lambda x=x: s.client.infer(x),
            }
            for name, fn in cases.items():
                timed(fn, max(10, calls // 10))  # warm up
                med[(size, name)] = statistics.median(timed(fn, calls)) / 1000

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
