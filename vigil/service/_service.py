"""``vigil serve``: the supervisor as a long-lived service.

Theory of operation
-------------------
:class:`Service` assembles the parts in this order, and takes them down in the reverse one:

1. the flight log (created with the configured ring, or opened and continued; sealed when
   ``[log.seal]`` says so);
2. the worker pool (:class:`~vigil.workers.WorkerPool`): ``[workers] active`` workers and a
   hot standby, spawned, loaded and warmed up. This process never initialises CUDA: the model
   and every device byte live in the workers;
3. the :class:`~vigil.supervisor.Supervisor` in process isolation, with the configured policy,
   deadline, input contract and fallback chain;
4. the metrics and health endpoint (when ``[metrics].listen`` is set), the socket server, and
   the KServe v2 HTTP and gRPC endpoints (when ``[http].listen``, ``[grpc].listen`` are set;
   stopped first on drain);
5. READY to systemd, and the watchdog pinger, which pings only while the state machine says
   the service can still help itself (not in SAFE_STOP, not without a worker).

SIGTERM (or SIGINT) drains: STOPPING to systemd, readiness goes 503, the socket stops
accepting, calls in flight finish (up to ``drain_timeout_s``), the workers are stopped, the log
gets its CLOSED record and is made durable, and :meth:`Service.run` returns 0.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import os
import select
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from vigil import _diagnostics as D
from vigil import keys as _keys
from vigil.auditlog import (
    FlightRecorder,
    ForwardSecureKey,
    PosixClock,
    Sealer,
    SystemClock,
    clock_from_config,
)
from vigil.errors import ServiceConfigError
from vigil.service._calls import Admission
from vigil.service._config import ServeConfig
from vigil.service._limits import RateLimiter
from vigil.service._metrics import Health, HealthServer, ServiceMetrics
from vigil.service._server import SocketServer
from vigil.service._systemd import SystemdNotifier, WatchdogPinger, watchdog_interval_s
from vigil.service._tracing import Spans
from vigil.supervisor._supervisor import Supervisor
from vigil.workers._pool import WorkerPool, WorkerSpec

__all__ = ["Service"]

_MB = 1 << 20


class Service:
    """One ``vigil serve`` process, built from a validated :class:`ServeConfig`.

    Use :meth:`start` then :meth:`wait_stopped` / :meth:`stop` (embedding, tests), or
    :meth:`run` (the CLI: blocks until SIGTERM).
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.supervisor: Supervisor | None = None
        self.pool: WorkerPool | None = None
        self.server: SocketServer | None = None
        self.health_server: HealthServer | None = None
        self.kserve: Any = None  # a KServeServer when [http] is on (vigil[http])
        self.grpc: Any = None  # a KServeGrpcServer when [grpc] is on (vigil[grpc])
        self.metrics: ServiceMetrics | None = None
        self.log: FlightRecorder | None = None
        self._clock: SystemClock | PosixClock | None = None
        self.admission: Admission | None = None  # trace context, [limits], [tracing]
        self._ready = False
        self._draining = False
        self._stop_requested = threading.Event()
        self._wake_w: int | None = None  # run()'s wake-up pipe, while it waits
        self._notifier = SystemdNotifier(config.systemd.notify)
        self._watchdog_s = watchdog_interval_s()
        self._pinger: WatchdogPinger | None = None

    # --- life --------------------------------------------------------------------------

    def start(self) -> None:
        """Open the log, start the workers, serve. Raises what the parts raise (a
        ``VigilError`` with its code); whatever had started is stopped again."""
        cfg = self.config
        # NotifyAccess=main: the workers must not talk to systemd in our name
        os.environ.pop("NOTIFY_SOCKET", None)
        torch.set_num_threads(1)  # this process copies bytes; the workers compute
        try:
            cfg.check_paths()  # before anything starts: what the paths name on this machine
            known = cfg.known_answer()  # and a bad known-answer file is a config error
            self.log = self._open_log()
            self.pool = WorkerPool(
                self._spec(),
                standby=cfg.workers.standby,
                active=cfg.workers.active,
                max_queue=cfg.workers.max_queue,
                heartbeat_ns=cfg.workers.heartbeat_ms * 1_000_000,
                heartbeat_timeout_ns=cfg.workers.heartbeat_timeout_ms * 1_000_000,
                start_timeout_ns=round(cfg.workers.start_timeout_s * 1e9),
            )
            self._notifier.status("starting the model workers")
            self.supervisor = Supervisor(
                self.pool,
                isolation="process",
                log=self.log,
                fallback=cfg.fallback_chain(),
                policy=cfg.to_policy(),
                deadline_ns=cfg.supervisor.deadline_ns,
                input_contract=cfg.input_contract(),
                output_contract=cfg.output_contract(),
                known_answer=None if known is None else known[0],
                digest_threshold=cfg.supervisor.digest_inline_max_kb * 1024,
                digest_queue=cfg.supervisor.digest_queue,
            )  # the workers are ready from here on
            if known is not None:
                _check_same_model(cfg, known[1], self.pool.digest)
            self.metrics = ServiceMetrics(self.supervisor, pool=self.pool)
            self.admission = self._admission()
            if cfg.metrics.enabled:
                self.health_server = HealthServer(
                    cfg.metrics.host,
                    cfg.metrics.port,
                    self.metrics,
                    self.health,
                    timeout_s=cfg.metrics.timeout_s,
                    max_threads=cfg.metrics.max_connections,
                )
            self.server = SocketServer(
                self.supervisor,
                str(cfg.service.socket),
                max_request_bytes=cfg.service.max_request_mb * _MB,
                max_clients=cfg.service.max_clients,
                read_timeout_s=cfg.service.read_timeout_s,
                max_buffered_bytes=_mib(cfg.service.max_buffered_mb),
                on_call=self.metrics.observe_call,
                on_refused=self._refusals("socket"),
                admission=self.admission,
            )
            self.server.start()
            if cfg.http.enabled:
                self.kserve = self._kserve()
                self.kserve.start()
            if cfg.grpc.enabled:
                self.grpc = self._grpc()
                self.grpc.start()
        except BaseException:
            self._teardown()
            raise
        self._ready = True
        pool = self.pool.statistics()
        about = (
            f"serving on {cfg.service.socket}; workers: active "
            f"{','.join(map(str, pool.active_pids)) or None}, standby "
            f"{pool.standby_pid}"
            + (f"; kserve v2 on {self.kserve.url}" if self.kserve else "")
            + (f"; kserve v2 grpc on {self.grpc.address}" if self.grpc else "")
            + (f"; metrics on {self.health_server.url}" if self.health_server else "")
        )
        self.log.annotate("vigil.service", about)
        print(f"vigil serve: {about}", flush=True)
        self._notifier.ready(about)
        if self._watchdog_s is not None:
            self._pinger = WatchdogPinger(
                self._notifier, self._watchdog_s, lambda: self.health().alive()
            )
            self._pinger.start()

    def run(self) -> int:
        """Start, serve until SIGTERM or SIGINT, drain and stop. Returns the exit status.

        The kernel may deliver SIGTERM to any thread of the process (the server's, the
        pool's...), and Python runs the handler only when the main thread next runs bytecode:
        a main thread blocked in ``Event.wait()`` would sleep through it. So the main thread
        waits in ``select`` on the signal wakeup fd, which the C-level handler writes in
        whichever thread the signal lands, and on a pipe :meth:`request_stop` writes.
        """
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every stack
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        self._wake_w = wake_w
        previous = {
            sig: signal.signal(sig, lambda *_: self._stop_requested.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        try:
            self.start()
            while not self._stop_requested.is_set():
                select.select([wake_r], [], [], 5.0)  # the timeout only bounds a lost byte
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            return self.stop()
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._wake_w = None
            os.close(wake_r)
            os.close(wake_w)

    def request_stop(self) -> None:
        """Ask :meth:`run` to drain and stop (what SIGTERM does); from any thread."""
        self._stop_requested.set()
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
                os.write(wake, b"\0")

    def stop(self) -> int:
        """Drain and stop: returns 0, or 1 when calls were still in flight at the timeout."""
        self._draining = True
        self._notifier.stopping("draining in-flight calls")
        if self._pinger is not None:
            self._pinger.close()
        left = 0
        if self.kserve is not None:  # first: its calls finish while the supervisor runs
            left += self.kserve.stop(self.config.service.drain_timeout_s)
        if self.grpc is not None:
            left += self.grpc.stop(self.config.service.drain_timeout_s)
        if self.server is not None:
            left += self.server.stop(self.config.service.drain_timeout_s)
        if self.log is not None and self.supervisor is not None:
            self.log.annotate("vigil.service", f"stopped; {left} call(s) cut off by the drain")
        self._teardown()
        return 0 if left == 0 else 1

    def _teardown(self) -> None:
        if self.kserve is not None:
            self.kserve.stop(0)
        if self.grpc is not None:
            self.grpc.stop(0)
        if self.server is not None:
            self.server.stop(0)
        if self.health_server is not None:
            self.health_server.close()
        if self.supervisor is not None:
            self.supervisor.close()  # stops the workers
        elif self.pool is not None:
            self.pool.close()
        if self.admission is not None and self.admission.spans is not None:
            self.admission.spans.close()  # flush the spans of the last calls
        if self.log is not None:
            self.log.close()  # the CLOSED record, synced
        if isinstance(self._clock, PosixClock):
            self._clock.close()  # a PTP device stays open while the log is
        self._notifier.close()

    # --- parts -------------------------------------------------------------------------

    def health(self) -> Health:
        """What ``/healthz``, ``/readyz`` and the watchdog judge."""
        assert self.supervisor is not None
        assert self.pool is not None
        return Health.of(
            self.supervisor,
            ready=self._ready,
            draining=self._draining,
            fallback=bool(self.config.supervisor.fallback),
            workers_alive=self.pool.alive(),
            reason=self.supervisor.statistics().machine.state.name,
        )

    def _kserve(self) -> Any:
        """The KServe v2 HTTP server for ``[http]`` (docs/SERVICE.md, "KServe v2")."""
        h = self.config.http
        try:
            from vigil.service._kserve import (  # noqa: PLC0415  (vigil[http] only)
                KServeApp,
                KServeServer,
            )
        except ImportError as exc:
            raise self._extra_missing("http", "werkzeug and waitress", exc) from exc
        app = KServeApp(
            self.supervisor,
            model_name=h.model_name,
            max_request_bytes=h.max_request_mb * _MB,
            max_json_bytes=h.max_json_mb * _MB,
            on_call=None if self.metrics is None else self.metrics.observe_call,
            on_refused=self._refusals("http"),
            **self._front(),
        )
        return KServeServer(
            app, h.host, h.port, max_connections=h.max_connections, timeout_s=h.timeout_s
        )

    def _grpc(self) -> Any:
        """The KServe v2 gRPC server for ``[grpc]`` (docs/SERVICE.md, "KServe v2 over gRPC")."""
        g = self.config.grpc
        try:
            from vigil.service._grpc import (  # noqa: PLC0415  (vigil[grpc] only)
                KServeGrpc,
                KServeGrpcServer,
            )
        except ImportError as exc:
            raise self._extra_missing("grpc", "grpcio and tritonclient[grpc]", exc) from exc
        service = KServeGrpc(
            self.supervisor,
            model_name=g.model_name,
            max_concurrency=g.max_concurrency,
            on_call=None if self.metrics is None else self.metrics.observe_call,
            on_refused=self._refusals("grpc"),
            **self._front(),
        )
        return KServeGrpcServer(
            service,
            g.host,
            g.port,
            max_request_bytes=g.max_request_mb * _MB,
            max_concurrency=g.max_concurrency,
            idle_timeout_s=g.idle_timeout_s,
        )

    def _refusals(self, front: str) -> Any:
        """``on_refused`` for a front: refusals that never became a call, in the metrics."""
        if self.metrics is None:
            return None
        return functools.partial(self.metrics.observe_refusal, front)

    def _front(self) -> dict[str, Any]:
        """What both KServe fronts take from the service: readiness, the input contract's
        shape and dtype for the metadata, and the admission (trace context, limits, spans)."""
        spec = self.config.model.input
        return {
            "readiness": lambda: self.health().to_json(readiness=True)[0] == 200,
            "input_shape": None if spec is None else spec.shape,
            "input_dtype": None if spec is None else spec.dtype,
            "admission": self.admission,
            "class_header": self.config.limits.class_header,
        }

    def _extra_missing(self, section: str, needs: str, exc: ImportError) -> ServiceConfigError:
        code = D.HTTP_EXTRA_MISSING if section == "http" else D.GRPC_EXTRA_MISSING
        return ServiceConfigError(
            f"{self.config.source}: [{section}].listen: the KServe {section} endpoint needs "
            f"{needs} ({exc}); pip install 'vigil[{section}]', or remove the key",
            diagnostic=code,
            file=self.config.source,
            key=f"[{section}].listen",
        )

    def _admission(self) -> Admission:
        """Trace context, the ``[limits]`` rate limiter and ``[tracing]`` spans, shared by
        both fronts (docs/SERVICE.md, "Trace context and rate limiting")."""
        cfg = self.config
        limiter = RateLimiter(cfg.limits) if cfg.limits.enabled else None
        spans = None
        if cfg.tracing.enabled:  # opentelemetry is imported by Spans, on use
            spans = Spans(cfg.tracing)
        return Admission(self.supervisor, limiter=limiter, spans=spans)

    def _open_log(self) -> FlightRecorder:
        cfg = self.config.log
        options: dict[str, Any] = {
            "durability": cfg.durability,
            "policy_digest": self.config.to_policy().digest(),
        }
        if cfg.seal is not None:
            key = _keys.load_private(cfg.seal.key) if cfg.seal.key is not None else None
            fss = ForwardSecureKey(cfg.seal.fss) if cfg.seal.fss is not None else None
            options["sealer"] = Sealer(
                key, fss=fss, every_records=cfg.seal.every_records, every_ms=cfg.seal.every_ms
            )
        device = None if cfg.clock_device is None else str(cfg.clock_device)
        self._clock = options["clock"] = clock_from_config(cfg.clock, device)
        if Path(cfg.path).exists():
            return FlightRecorder.open(cfg.path, **options)
        return FlightRecorder.create(cfg.path, cfg.ring(), **options)

    def _spec(self) -> WorkerSpec:
        m, w = self.config.model, self.config.workers
        warmup = None if m.input is None else m.input.warmup_input()
        return WorkerSpec(
            factory=m.factory,
            kwargs=dict(m.kwargs),
            model_dir=None if m.dir is None else str(m.dir),
            public_key=None if m.public_key is None else str(m.public_key),
            device=m.device,
            warmup_input=warmup,
            warmup_calls=w.warmup_calls,
            shm_bytes=w.shm_mb * _MB,
            threads=1 if m.device == "cpu" else None,
            spin_us=w.spin_us,
            output=m.output,
        )


def _mib(mb: int | None) -> int | None:
    return None if mb is None else mb * _MB


def _check_same_model(cfg: ServeConfig, read: bytes | None, loaded: bytes) -> None:
    """Refuse a known answer read from another model than the one the workers loaded (the
    signed directory changed in between); ``read`` is None for a factory model."""
    if read is None or read == loaded:
        return
    raise ServiceConfigError(
        f"{cfg.source}: [supervisor.known_answer].file: the known answer was read from model "
        f"{read.hex()[:16]}…, the workers loaded {loaded.hex()[:16]}…: {cfg.model.dir} "
        "changed meanwhile; start again",
        diagnostic=D.KNOWN_ANSWER_INVALID,
        file=cfg.source,
        key="[supervisor.known_answer].file",
    )
