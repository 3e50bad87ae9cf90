"""The worker process: what it builds (:class:`WorkerSpec`) and its main loop.

A worker builds its model from plain data (a factory named by dotted path, or a signed model
directory through the verifying loader), warms it up, says ready with its digest, then serves
calls: read the tensors from shared memory, run, write the output back, answer on the pipe.
A heartbeat thread writes the header's heartbeat; a process-fatal device error ends the
process (the pool replaces it).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import torch

from vigil.errors import (
    ConfigError,
)
from vigil.schemas import Outcome
from vigil.workers._shm import (
    _BUSY,
    _CPU,
    _END,
    _HEADER_SIZE,
    _HEARTBEAT,
    _SEQ,
    _START,
    _U32,
    _flatten,
    _read,
    _SharedArea,
    _unflatten,
    _write,
)

# --- what a worker runs ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker process builds its model: plain data, so that it crosses ``spawn``.

    Exactly one of:

    * ``factory="package.module:function"`` called with ``kwargs`` (a module it returns is
      moved to ``device`` and put in eval mode), or
    * ``model_dir`` (a signed model directory) with ``public_key`` (the trusted key file) and
      ``builder="package.module:function"`` (config -> module; default
      :func:`vigil.testing._models.build_reference`).

    Attributes:
        device: where the model runs in the worker (``cpu``, ``cuda``, ``cuda:N``).
        warmup_input: an input run ``warmup_calls`` times before the worker says ready (CUDA
            kernels, allocator and caches warm before the first real call).
        shm_bytes: the size of each of the worker's two tensor areas (input, output).
        threads: torch's intra-op threads in the worker (None: torch's default). On a small
            host, 1 keeps the worker's OpenMP threads from spinning against the supervisor's.
        output: ``"logits"`` serves what the model returns; ``"tokens"`` wraps it in
            :class:`vigil.model.NextTokens` (the greedy next token and its log-probability,
            computed in the worker, on the device). The model's digest is the same in both.
        spin_us: both sides poll the pipe without sleeping for up to this long before they
            block (the worker after each answer, the supervisor after each request): a
            blocked process's wake-up costs tens of microseconds on bare metal and ~0.4 ms
            on an idle 2-vCPU VM (``bench/bench_wakeups.py``). It trades up to this much CPU
            time per call for latency; 0 turns it off. Above the model's call time (a GPU
            call of a few ms) the supervisor spins through the call, as CUDA's own
            synchronisation does. The pool spins only where a core is free for it: not
            once the calls in flight plus the supervisor outnumber the usable CPUs, and one
            caller thread at a time (:func:`vigil.workers._pool.spin_budget`).
    """

    factory: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    model_dir: str | None = None
    public_key: str | None = None
    builder: str = "vigil.testing._models:build_reference"
    device: str = "cpu"
    warmup_input: Any = None
    warmup_calls: int = 3
    shm_bytes: int = 16 << 20
    threads: int | None = None
    spin_us: int = 300
    output: str = "logits"

    def __post_init__(self) -> None:
        if (self.factory is None) == (self.model_dir is None):
            raise ConfigError("WorkerSpec: give exactly one of factory= and model_dir=")
        for name in ("factory", "builder"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or ":" not in value):
                raise ConfigError(f"WorkerSpec.{name}={value!r}: write 'package.module:function'")
        if self.model_dir is not None and self.public_key is None:
            raise ConfigError("WorkerSpec: a model_dir needs the trusted public_key file")
        if not isinstance(self.device, str) or not (
            self.device == "cpu" or self.device.startswith("cuda")
        ):
            raise ConfigError(f"WorkerSpec.device={self.device!r}: cpu, cuda or cuda:N")
        if not isinstance(self.shm_bytes, int) or not 4096 <= self.shm_bytes <= 1 << 34:
            raise ConfigError(f"WorkerSpec.shm_bytes={self.shm_bytes!r}: 4 KiB .. 16 GiB")
        if not isinstance(self.spin_us, int) or not 0 <= self.spin_us <= 1_000_000:
            raise ConfigError(f"WorkerSpec.spin_us={self.spin_us!r}: 0 .. 1000000")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"WorkerSpec.threads={self.threads!r}: None or >= 1")
        if not isinstance(self.warmup_calls, int) or self.warmup_calls < 0:
            raise ConfigError(f"WorkerSpec.warmup_calls={self.warmup_calls!r}: must be >= 0")
        if self.output not in ("logits", "tokens"):
            raise ConfigError(f"WorkerSpec.output={self.output!r}: logits or tokens")


def _resolve(name: str) -> Callable[..., Any]:
    module, _, attr = name.partition(":")
    target: Any = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{name} is not callable")
    return target  # type: ignore[no-any-return]


def _build(spec: WorkerSpec) -> tuple[Callable[[Any], Any], bytes, dict[str, Any]]:
    """In the worker: the model (serving ``spec.output``), its digest, and what to report."""
    model, digest, about = _build_model(spec)
    if spec.output == "tokens":
        from vigil.model import NextTokens  # noqa: PLC0415

        model = NextTokens(model)
        about = {**about, "output": "tokens"}
    return model, digest, about


def _build_model(spec: WorkerSpec) -> tuple[Callable[[Any], Any], bytes, dict[str, Any]]:
    """The model as loaded or built, its digest, and what to report about it."""
    from vigil.supervisor import _tensors as T  # noqa: PLC0415

    if spec.model_dir is not None:
        from vigil import keys as _keys  # noqa: PLC0415
        from vigil.model import load_model  # noqa: PLC0415

        assert spec.public_key is not None
        loaded = load_model(
            spec.model_dir, _keys.load_public(spec.public_key), _resolve(spec.builder)
        )
        model = loaded.module.to(spec.device).eval()
        about = {"model_dir": spec.model_dir, "version": loaded.artifact.version}
        return model, loaded.digest, about
    assert spec.factory is not None
    model = _resolve(spec.factory)(**dict(spec.kwargs))
    if not callable(model):
        raise ConfigError(f"{spec.factory} returned {type(model).__name__}, not a model")
    if isinstance(model, torch.nn.Module):
        model = model.to(spec.device).eval()
    if isinstance(model, torch.nn.Module):
        state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        digest = T.digest({"factory": spec.factory, "state": state})
    else:
        digest = T.digest({"factory": spec.factory, "kwargs": repr(sorted(spec.kwargs.items()))})
    return model, digest, {"factory": spec.factory}


# --- the worker process ----------------------------------------------------------------------


def _worker_main(spec: WorkerSpec, path: str, conn: Connection, heartbeat_ns: int) -> None:
    """Entry point of a worker process (spawned): load, warm up, say ready, serve calls."""
    from vigil.supervisor import _tensors as T  # noqa: PLC0415

    shm = _SharedArea(path, spec.shm_bytes * 2 + _HEADER_SIZE, create=False)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_ns / 1e9):
            shm.put(_HEARTBEAT, time.monotonic_ns())

    shm.put(_HEARTBEAT, time.monotonic_ns())  # before "ready", whenever the thread first runs

    threading.Thread(target=beat, name="vigil-heartbeat", daemon=True).start()
    spin_ns = 0  # the supervisor says with each call how long to spin for the next one
    try:
        t0 = time.monotonic_ns()
        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        model, digest, about = _build(spec)
        with torch.inference_mode():
            for _ in range(spec.warmup_calls if spec.warmup_input is not None else 0):
                model(_to(spec.warmup_input, spec.device))
        if spec.device.startswith("cuda"):
            torch.cuda.synchronize()
        ready = {**about, "start_ns": time.monotonic_ns() - t0, "device": spec.device}
        conn.send_bytes(pickle.dumps(("ready", os.getpid(), digest, ready)))
    except BaseException as exc:  # any failure to start is reported, then the process ends
        with contextlib.suppress(OSError):  # nobody to tell: the supervisor is gone
            conn.send_bytes(pickle.dumps(("failed", os.getpid(), T.describe(exc, 2000), None)))
        return
    while True:
        try:
            _spin_poll(conn, spin_ns)  # the next call often comes at once: stay awake
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the supervisor is gone: so are we
            return
        seq, kind, specs, spin_ns = pickle.loads(message)
        shm.put(_START, time.monotonic_ns())  # before the seq: a reader that sees the seq
        shm.put(_CPU, time.thread_time_ns())  # sees this call's start and CPU time
        shm.put(_SEQ, seq)
        _U32.pack_into(shm.mm, _BUSY, 1)
        fatal = False
        try:
            x = _to(_read(shm.inputs, kind, specs, copy=False), spec.device)
            with torch.inference_mode():
                y = model(x)
            reply: tuple[Any, ...] = (seq, "ok", *_write(shm.outputs, y, "the output"))
        except BaseException as exc:  # every failure of the model is the supervisor's to judge
            outcome, code = T.classify(exc)
            fatal = outcome is Outcome.DEVICE_FATAL
            reply = (seq, "error", (int(outcome), code.code, T.describe(exc)), None)
        shm.put(_END, time.monotonic_ns())
        _U32.pack_into(shm.mm, _BUSY, 0)
        conn.send_bytes(pickle.dumps(reply))
        if fatal:  # the device context is poisoned: nothing more runs in this process
            stop.set()
            os._exit(70)


def _spin_poll(conn: Connection, spin_ns: int) -> bool:
    """Poll ``conn`` without sleeping for up to ``spin_ns``: a blocked process's wake-up
    costs tens of microseconds on a VM, more than a short call itself."""
    end = time.monotonic_ns() + spin_ns
    while spin_ns and time.monotonic_ns() < end:
        if conn.poll(0):
            return True
    return False


def _to(value: Any, device: str) -> Any:
    if device == "cpu":
        return value
    kind, items = _flatten(value)
    return _unflatten(kind, [(k, v.to(device, non_blocking=True)) for k, v in items])
