"""What the KServe v2 endpoints (HTTP and gRPC) cost per call, against the Unix socket, in one
run.

Cases (calls interleaved, each timed with ``perf_counter_ns``; medians), one supervisor
(inline isolation, durability ``batch``) behind every server:

- ``direct``: ``Supervisor.infer(x)`` in-process;
- ``socket``: ``vigil.service.Client.infer(x)`` through a :class:`SocketServer`;
- ``http-binary``: ``tritonclient.http`` ``infer`` through :class:`KServeServer` (waitress),
  input and output with the binary-data extension (the client's default), one kept-alive
  connection;
- ``http-json``: the same with JSON ``data`` both ways (small tensor only);
- ``grpc``: ``tritonclient.grpc`` ``infer`` through :class:`KServeGrpcServer` (raw contents).

Sizes: ``small`` = 1x16 float32 (64 bytes) and ``1MiB`` = 1x262144 float32, through ``x * 1``;
``decoder`` = 8 token ids through the tiny reference decoder (``DecoderConfig.tiny()``, 8x256
float32 logits back). Nothing here asserts on timing.

    python bench/bench_kserve.py [--quick] [--small-calls 2000] [--large-calls 200] [--dir D]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import gevent
import numpy as np
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from _common import interleaved
from _serving import bench_args, identity, served

from vigil.model import DecoderConfig
from vigil.service._grpc import KServeGrpc, KServeGrpcServer
from vigil.service._kserve import KServeApp, KServeServer
from vigil.testing._models import build_reference

torch.set_num_threads(1)
_TYPES = {torch.float32: "FP32", torch.int64: "INT64"}


def over(client: Any, lib: Any, x: torch.Tensor, binary: bool = True) -> Callable[[], object]:
    """One ``infer`` of ``x`` by a Triton client (``lib``: tritonclient.http or .grpc)."""
    inp = lib.InferInput("input", list(x.shape), _TYPES[x.dtype])
    if lib is httpclient:
        inp.set_data_from_numpy(x.numpy(), binary_data=binary)
        out = [lib.InferRequestedOutput("output", binary_data=binary)]
    else:
        inp.set_data_from_numpy(x.numpy())
        out = [lib.InferRequestedOutput("output")]
    return lambda: client.infer("m", [inp], outputs=out).as_numpy("output")


def run(model: Any, sizes: dict[str, tuple[torch.Tensor, int]], scratch: str | None) -> None:
    with served(model, scratch) as s:
        app = KServeApp(s.sup, model_name="m", readiness=lambda: True)
        http = KServeServer(app, "127.0.0.1", 0)
        http.start()
        gsvc = KServeGrpc(s.sup, model_name="m", readiness=lambda: True)
        grpc = KServeGrpcServer(gsvc, "127.0.0.1", 0)
        grpc.start()
        hc = httpclient.InferenceServerClient(url=f"127.0.0.1:{http.port}")
        gc = grpcclient.InferenceServerClient(url=grpc.address)
        try:
            for size, (x, calls) in sizes.items():
                cases: dict[str, Callable[[], object]] = {
                    "direct": lambda x=x: s.sup.infer(x),  # type: ignore[misc]
                    "socket": lambda x=x: s.client.infer(x),  # type: ignore[misc]
                    "http-binary": over(hc, httpclient, x),
                    "grpc": over(gc, grpcclient, x),
                }
                if size == "small":
                    cases["http-json"] = over(hc, httpclient, x, binary=False)
                for fn in cases.values():  # warm up each path
                    for _ in range(20):
                        fn()
                times = interleaved(list(cases.values()), calls)
                med = {n: statistics.median(t) / 1000 for n, t in zip(cases, times, strict=True)}
                print(f"{size} ({calls} calls each, medians):")
                for name, us in med.items():
                    print(f"  {name:12s} {us:9.1f} us")
                for name in ("http-binary", "grpc"):
                    print(
                        f"  {name} / socket: x{med[name] / med['socket']:.2f}; "
                        f"{name} - socket: {med[name] - med['socket']:+.1f} us"
                    )
        finally:
            hc.close()
            gc.close()
            gevent.get_hub().destroy(destroy_loop=True)
            grpc.stop(5.0)
            http.stop(5.0)


def main() -> None:
    args = bench_args(__doc__)
    run(
        identity,
        {
            "small": (torch.randn(1, 16), args.small_calls),
            "1MiB": (torch.randn(1, 1 << 18), args.large_calls),
        },
        args.dir,
    )
    config = {"model": "decoder", "decoder": DecoderConfig.tiny().to_dict()}
    decoder = build_reference(config).eval()
    tokens = torch.from_numpy(np.arange(8, dtype=np.int64).reshape(1, 8))

    def model(t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # in whichever server thread calls it
            return decoder(t)  # type: ignore[no-any-return]

    for _ in range(20):  # warm: the first calls take longer than the deadline
        model(tokens)
    run(model, {"decoder": (tokens, args.small_calls)}, args.dir)


if __name__ == "__main__":
    main()
