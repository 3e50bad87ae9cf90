"""What the KServe v2 HTTP endpoint costs per call, against the Unix socket, in one run.

Cases (calls interleaved, each timed with ``perf_counter_ns``; medians), one supervisor
(inline isolation, model ``x * 1``, durability ``batch``) behind both servers:

- ``direct``: ``Supervisor.infer(x)`` in-process;
- ``socket``: ``vigil.service.Client.infer(x)`` through a :class:`SocketServer`;
- ``http-binary``: ``tritonclient.http`` ``infer`` through :class:`KServeServer`, input and
  output with the binary-data extension (the client's default), one kept-alive connection;
- ``http-json``: the same with JSON ``data`` both ways (small tensor only).

Sizes: ``small`` = 1x16 float32 (64 bytes), ``1MiB`` = 1x262144 float32. Nothing here asserts
on timing.

    python bench/bench_kserve.py [--quick] [--small-calls 2000] [--large-calls 200] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable

import gevent
import torch
import tritonclient.http as httpclient
from _common import interleaved

from vigil.service._client import Client
from vigil.service._kserve import KServeApp, KServeServer
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
    app = KServeApp(sup, model_name="m", readiness=lambda: True, input_shape=(-1, -1))
    http = KServeServer(app, "127.0.0.1", 0)
    http.start()
    client = Client(server.path)
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{http.port}")

    def over_http(x: torch.Tensor, binary: bool) -> Callable[[], object]:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x.numpy(), binary_data=binary)
        out = [httpclient.InferRequestedOutput("output", binary_data=binary)]
        return lambda: triton.infer("m", [inp], outputs=out).as_numpy("output")

    sizes = {
        "small": (torch.randn(1, 16), args.small_calls),
        "1MiB": (torch.randn(1, 1 << 18), args.large_calls),
    }
    try:
        for size, (x, calls) in sizes.items():
            cases: dict[str, Callable[[], object]] = {
                "direct": lambda x=x: sup.infer(x),  # type: ignore[misc]
                "socket": lambda x=x: client.infer(x),  # type: ignore[misc]
                "http-binary": over_http(x, True),
            }
            if size == "small":
                cases["http-json"] = over_http(x, False)
            for fn in cases.values():  # warm up each path
                for _ in range(20):
                    fn()
            times = interleaved(list(cases.values()), calls)
            med = {name: statistics.median(t) / 1000 for name, t in zip(cases, times, strict=True)}
            print(f"{size} ({calls} calls each, medians):")
            for name, us in med.items():
                print(f"  {name:12s} {us:9.1f} us")
            print(
                f"  http-binary / socket: x{med['http-binary'] / med['socket']:.2f}; "
                f"http-binary - socket: {med['http-binary'] - med['socket']:+.1f} us"
            )
    finally:
        triton.close()
        gevent.get_hub().destroy(destroy_loop=True)
        client.close()
        http.stop(5.0)
        server.stop(5.0)
        sup.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
