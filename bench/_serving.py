"""The service set-up the socket and KServe benchmarks share: the arguments they take, and one
supervisor (inline isolation, durability ``batch``) behind a Unix-socket server, with a client."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from vigil.service._client import Client
from vigil.service._server import SocketServer
from vigil.supervisor import Supervisor


def bench_args(doc: str) -> argparse.Namespace:
    """``--quick``, ``--small-calls``, ``--large-calls`` and ``--dir``, as both scripts take."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--small-calls", type=int, default=2000)
    ap.add_argument("--large-calls", type=int, default=200)
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    args = ap.parse_args()
    if args.quick:
        args.small_calls, args.large_calls = 300, 30
    return args


def identity(t: torch.Tensor) -> torch.Tensor:
    """The benchmarks' model: ``x * 1`` (a copy; no compute to speak of)."""
    return t * 1


@dataclass
class Served:
    """A supervisor behind a socket server, a client of it, and the scratch folder."""

    sup: Supervisor
    server: SocketServer
    client: Client
    work: str


@contextlib.contextmanager
def served(
    model: Callable[[torch.Tensor], torch.Tensor] = identity, scratch: str | None = None
) -> Iterator[Served]:
    """``model`` supervised in process (5 s deadline) and served on a Unix socket; all of it
    closed after."""
    work = tempfile.mkdtemp(prefix="vgb-", dir=scratch)
    # a deadline far above any call: a loaded machine must not turn a slow call into a failure
    sup = Supervisor(
        model, log=os.path.join(work, "f.vlog"), isolation="inline", deadline_ns=5_000_000_000
    )
    server = SocketServer(sup, os.path.join(work, "s.sock"), max_request_bytes=8 << 20)
    server.start()
    client = Client(server.path)
    try:
        yield Served(sup, server, client, work)
    finally:
        client.close()
        server.stop(1.0)
        sup.close()
        shutil.rmtree(work, ignore_errors=True)
