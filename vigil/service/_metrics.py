"""Prometheus metrics and the health endpoint of ``vigil serve``.

Theory of operation
-------------------
Two kinds of series. Per-request series (a latency histogram, requests by outcome, served_by
and code) are fed by the socket server and the KServe endpoint through
:meth:`ServiceMetrics.observe_call` after every request (the call's trace id, when it has one,
as an exemplar). Everything else is read at scrape time by a custom collector from the
components' own ``statistics()`` snapshots (the supervisor, its off-path digester, its flight
log, the worker pool),
so the service keeps no second set of counters that could drift from the state machine's.

A scrape never raises: each part of the collector (supervisor, digester, log, pool) is built
completely before any of it is yielded, and a part that fails is left out of that scrape and
counted in ``vigil_scrape_errors_total{part=...}``. Everything lives on the metrics' own
``CollectorRegistry``, never on prometheus_client's global one.

Health reports what the state machine says (:class:`Health`): ``/healthz`` is 200 only while
the service can give trustworthy answers -- NORMAL, or DEGRADED/RECOVERING with a fallback
configured (then ``"degraded": true``); SAFE_STOP is 503 always. ``/readyz`` is additionally
503 until the service declares itself ready and while it drains. See ``docs/SERVICE.md``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from vigil import _diagnostics as D
from vigil.errors import (
    InvalidInput,
    ProtocolError,
    ServiceBusy,
    ServiceConfigError,
    Unavailable,
    VigilError,
)
from vigil.schemas import ServedBy, State
from vigil.service._http import BoundedHTTPServer

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Request latency buckets, seconds: 100 µs to 10 s."""

STATES = (State.NORMAL, State.DEGRADED, State.RECOVERING, State.SAFE_STOP)
_FALLBACKS = (ServedBy.FALLBACK.name, ServedBy.LAST_GOOD.name, ServedBy.CONSTANT.name)


# --- health ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What the service says about itself; the service fills it, the endpoints judge it.

    Attributes:
        state: the state machine's state.
        ready: the service finished starting (workers warm, socket listening).
        draining: the service is shutting down and takes no new requests.
        fallback: a fallback chain is configured (DEGRADED can still answer).
        primary_dead: the primary's process is lost (the machine's ``primary_dead``).
        workers_alive: False when no model worker is left and none can be started.
        reason: why, in words (the last transition's reason, or the service's).
    """

    state: State
    ready: bool = False
    draining: bool = False
    fallback: bool = False
    primary_dead: bool = False
    workers_alive: bool = True
    reason: str = ""

    @classmethod
    def of(cls, supervisor: Any, **fields: Any) -> Health:
        """Read state and ``primary_dead`` from ``supervisor.statistics()``; ``fields`` set
        the rest (``ready``, ``draining``, ``fallback``, ``workers_alive``, ``reason``)."""
        stats = supervisor.statistics()
        return cls(stats.state, primary_dead=stats.machine.primary_dead, **fields)

    @property
    def degraded(self) -> bool:
        """Answers come, or may come, from a fallback rather than the primary."""
        return self.state in (State.DEGRADED, State.RECOVERING)

    def trustworthy(self) -> tuple[bool, str]:
        """``(True, status)`` when every answer the service gives can be trusted: ``/healthz``."""
        if not self.workers_alive:
            return False, "no model worker is left"
        if self.state is State.NORMAL:
            return True, "ok"
        if self.degraded:
            if self.fallback:
                return True, "degraded"
            return False, "unavailable"
        return False, "stopped" if self.state is State.SAFE_STOP else "unknown"

    def alive(self) -> tuple[bool, str]:
        """``(False, reason)`` when only a restart can help (SAFE_STOP, no worker left): the
        systemd watchdog pinger's test (a DEGRADED service recovers by itself)."""
        if self.state is State.SAFE_STOP:
            return False, f"SAFE_STOP: {self.reason or 'recovery kept failing'}"
        if not self.workers_alive:
            return False, f"no model worker is left: {self.reason or 'the pool is dead'}"
        return True, self.reason or self.state.name

    def to_json(self, *, readiness: bool) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of ``/readyz`` (``readiness``) or ``/healthz``."""
        ok, status = self.trustworthy()
        if readiness and ok and self.draining:
            ok, status = False, "draining"
        elif readiness and ok and not self.ready:
            ok, status = False, "not_ready"
        body = {
            **asdict(self),
            "state": self.state.name,
            "status": status,
            "degraded": self.degraded,
        }
        return (200 if ok else 503), body


# --- metrics ---------------------------------------------------------------------------------


class ServiceMetrics:
    """The service's metrics on their own registry.

    Args:
        supervisor: a :class:`~vigil.supervisor.Supervisor` (``statistics()`` and ``log``).
        pool: the worker pool, or None; duck-typed: ``statistics()`` with ``active_pid``,
            ``standby_pid``, ``standby_ready``, ``restarts``, ``failovers``,
            ``last_heartbeat_age_ns`` (missing fields are left out).
        registry: where to register; a new ``CollectorRegistry`` by default.
    """

    def __init__(
        self, supervisor: Any, *, pool: Any = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.supervisor = supervisor
        self.pool = pool
        self.registry = registry if registry is not None else CollectorRegistry()
        self.latency = Histogram(
            "vigil_request_duration_seconds",
            "Time to answer one request (service socket or KServe HTTP).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "vigil_requests",
            "Requests answered (socket or HTTP), by outcome, who served and code.",
            ["outcome", "served_by", "code"],
            registry=self.registry,
        )
        self.refused = Counter(
            "vigil_refused",
            "Requests and connections refused without a supervised call (not in "
            "vigil_requests_total), by front and code.",
            ["front", "code"],
            registry=self.registry,
        )
        self._collector = _StatisticsCollector(self)
        self.registry.register(self._collector)

    def observe_call(
        self,
        result: Any,
        error: BaseException | None,
        seconds: float,
        trace_id: bytes | None = None,
    ) -> None:
        """Count one request. Called by both fronts after every request; never raises.

        Args:
            result: the :class:`~vigil.supervisor.Result`, or None when the call raised.
            error: the exception the request ended with, or None.
            seconds: time to answer, as the server measured it.
            trace_id: the call's W3C trace id (16 bytes), or None; when given, the latency
                and the request count carry it as an exemplar (``{trace_id="<32 hex>"}``,
                shown in the OpenMetrics exposition).
        """
        try:
            outcome, served_by, code = _labels(result, error)
            exemplar = None if trace_id is None else {"trace_id": trace_id.hex()}
            self.latency.observe(max(0.0, seconds), exemplar)
            self.requests.labels(outcome, served_by, code).inc(1, exemplar)
        except Exception:  # metrics must never break a request
            self._collector.failed("observe")

    def observe_refusal(self, front: str, code: str) -> None:
        """Count one refusal that ``vigil_requests_total`` does not: a connection or request
        turned away before it became a call (busy, draining, too large, unknown model, a
        frame that loses the stream). ``front``: ``socket``, ``http`` or ``grpc``. Never
        raises."""
        try:
            self.refused.labels(front, code).inc()
        except Exception:  # metrics must never break a request
            self._collector.failed("observe")

    def generate(self) -> bytes:
        """The Prometheus text exposition of every series (never raises)."""
        try:
            return generate_latest(self.registry)
        except Exception:  # a metric family that cannot be rendered
            self._collector.failed("exposition")
            return generate_latest(_ErrorsOnly(self._collector))


def _labels(result: Any, error: BaseException | None) -> tuple[str, str, str]:
    if result is not None:
        code = result.code.code if result.code is not None else ""
        return result.outcome.name.lower(), result.served_by.name.lower(), code
    code = error.code if isinstance(error, VigilError) else ""
    if isinstance(error, InvalidInput):
        outcome = "rejected"
    elif isinstance(error, Unavailable):
        outcome = "unavailable"
    elif isinstance(error, ProtocolError):
        outcome = "protocol_error"
    elif isinstance(error, ServiceBusy) and error.diagnostic is D.RATE_LIMITED:
        outcome = "rate_limited"
    else:
        outcome = "error"
    return outcome, "none", code


class _ErrorsOnly:
    """A stand-in registry that exposes only the scrape error counter."""

    def __init__(self, collector: _StatisticsCollector) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        yield self._collector.errors_family()


class _StatisticsCollector(Collector):
    """Reads the components' statistics at scrape time (see the module docstring)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()

    def failed(self, part: str) -> None:
        with self._lock:
            self._errors[part] = self._errors.get(part, 0) + 1

    def errors_family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "vigil_scrape_errors",
            "Parts of the metrics that failed to be read (left out of that scrape).",
            labels=["part"],
        )
        with self._lock:
            for part, n in sorted(self._errors.items()):
                family.add_metric([part], n)
        return family

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: its series depend on what the parts return

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        stats = None
        try:
            stats = m.supervisor.statistics()
            families = _supervisor_families(stats)
        except Exception:
            self.failed("supervisor")
            families = []
        yield from families
        try:  # the off-path digest (None: every output is hashed inline)
            digester = getattr(stats, "digester", None)
            families = [] if digester is None else _digester_families(digester)
        except Exception:
            self.failed("digester")
            families = []
        yield from families
        try:
            families = _log_families(m.supervisor.log.statistics())
        except Exception:
            self.failed("log")
            families = []
        yield from families
        if m.pool is not None:
            try:
                families = _pool_families(m.pool.statistics())
            except Exception:
                self.failed("pool")
                families = []
            yield from families
        yield self.errors_family()


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))


def _supervisor_families(s: Any) -> list[Metric]:
    state = GaugeMetricFamily(
        "vigil_state", "The state machine's state: 1 for the current one.", labels=["state"]
    )
    for st in STATES:
        state.add_metric([st.name], 1.0 if s.state is st else 0.0)
    outcomes = CounterMetricFamily(
        "vigil_calls_by_outcome",
        "Supervised calls by how the primary's attempt ended.",
        labels=["outcome"],
    )
    for name, n in sorted(s.outcomes.items()):
        outcomes.add_metric([name], n)
    served = CounterMetricFamily(
        "vigil_served", "Supervised calls by who produced the answer.", labels=["served_by"]
    )
    for name, n in sorted(s.served.items()):
        served.add_metric([name], n)
    mach = s.machine
    return [
        state,
        _counter("vigil_calls", "Supervised calls (INFERENCE records).", s.calls),
        outcomes,
        served,
        _counter(
            "vigil_fallbacks",
            "Calls answered by a fallback (model, last good output or constant).",
            sum(s.served.get(k, 0) for k in _FALLBACKS),
        ),
        _counter("vigil_unavailable", "Calls with no trustworthy answer.", s.unavailable),
        _counter("vigil_rejected", "Inputs refused by the input contract.", s.rejected),
        _counter("vigil_transitions", "State changes of the state machine.", mach.transitions),
        _gauge("vigil_hung_calls", "Primary calls past their deadline, still running.", s.hung),
        _gauge("vigil_primary_dead", "1 while the primary's process is lost.", mach.primary_dead),
        _gauge(
            "vigil_consecutive_failures",
            "Primary failures in a row.",
            mach.consecutive_failures,
        ),
        _gauge(
            "vigil_failed_recoveries_in_a_row",
            "Failed recoveries in a row (the cooldown grows with them).",
            mach.failed_recoveries_in_a_row,
        ),
    ]


def _digester_families(d: Any) -> list[Metric]:
    """The off-path output digest, from the digester's own statistics (it counts on its
    thread; the caller's path pays nothing for these series)."""
    lag = HistogramMetricFamily(
        "vigil_digest_lag_seconds",
        "Time from a call's INFERENCE record to the digest of its output (off the caller's "
        "path), by digest recorded.",
        buckets=_cumulative(d.lag_bounds_s, d.lag_buckets),
        sum_value=d.lag_sum_ns / 1e9,
    )
    return [
        lag,
        _counter(
            "vigil_digest_deferred",
            "Outputs whose digest was deferred to the digester thread.",
            d.deferred,
        ),
        _counter("vigil_digest_recorded", "OUTPUT_DIGEST records appended.", d.digested),
        _counter(
            "vigil_digest_inline_when_full",
            "Outputs hashed on the caller's path because the digest queue was full.",
            d.inline_when_full,
        ),
        _counter(
            "vigil_digest_failed",
            "Deferred digests that could not be recorded (the log closed or failed).",
            d.failed,
        ),
        _gauge("vigil_digest_pending", "Deferred outputs not yet digested.", d.pending),
        _gauge("vigil_digest_queue_bound", "Deferred outputs outstanding at most.", d.max_pending),
    ]


def _cumulative(bounds: tuple[float, ...], counts: tuple[int, ...]) -> list[tuple[str, float]]:
    """Prometheus histogram buckets (``le`` labels, cumulative counts, ``+Inf`` last) from
    per-bucket counts whose last entry counts what lies above every bound."""
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} bucket counts for {len(bounds)} bounds")
    out, total = [], 0
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        total += n
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(total)))
    return out


def _log_families(w: Any) -> list[Metric]:
    return [
        _gauge("vigil_log_head_seq", "Sequence number of the last record appended.", w.head_seq),
        _gauge(
            "vigil_log_durable_seq", "Highest sequence number on stable storage.", w.durable_seq
        ),
        _gauge("vigil_log_wear_min", "Fewest times any log segment was written.", w.wear_min),
        _gauge("vigil_log_wear_max", "Most times any log segment was written.", w.wear_max),
        _counter("vigil_log_syncs", "Syncs of the flight log since open.", w.syncs),
        _counter("vigil_log_segment_switches", "Segment switches since open.", w.segment_switches),
    ]


def _pool_families(p: Any) -> list[Metric]:
    families: list[Metric] = []
    for attr, name, doc in (
        ("active_pid", "vigil_worker_active_pid", "PID of the worker serving (0: none)."),
        ("standby_pid", "vigil_worker_standby_pid", "PID of the hot standby (0: none)."),
    ):
        if hasattr(p, attr):
            families.append(_gauge(name, doc, getattr(p, attr) or 0))
    if hasattr(p, "busy"):
        families.append(
            _gauge("vigil_worker_busy", "1 while the serving worker runs a call.", bool(p.busy))
        )
    if hasattr(p, "standby_ready"):
        families.append(
            _gauge(
                "vigil_worker_standby_ready",
                "1 while the standby can take over.",
                bool(p.standby_ready),
            )
        )
    for attr, name, doc in (
        ("restarts", "vigil_worker_restarts", "Worker processes restarted."),
        ("failovers", "vigil_worker_failovers", "Failovers to the standby worker."),
    ):
        if hasattr(p, attr):
            families.append(_counter(name, doc, getattr(p, attr)))
    age = getattr(p, "last_heartbeat_age_ns", None)
    if age is not None:
        families.append(
            _gauge(
                "vigil_worker_heartbeat_age_seconds",
                "Time since the serving worker's last heartbeat.",
                age / 1e9,
            )
        )
    return families


# --- the HTTP endpoint ----------------------------------------------------------------------


class HealthServer:
    """``GET /metrics``, ``/healthz`` and ``/readyz`` on a daemon thread.

    Args:
        host, port: where to listen; port 0 picks a free port (see :attr:`port`).
        metrics: the :class:`ServiceMetrics` to expose.
        health_fn: returns the service's current :class:`Health`; if it raises, both health
            endpoints answer 503 (fail closed).
        timeout_s, max_threads: a connection silent this long is closed; at most this many
            are handled at once: one more evicts the connection waiting longest for its
            request, or is answered 503 when every one is handling a request (:mod:`._http`).

    Raises:
        ServiceConfigError: DIA-7210, the address cannot be bound.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: ServiceMetrics,
        health_fn: Callable[[], Health],
        *,
        timeout_s: float = 10.0,
        max_threads: int = 8,
    ) -> None:
        handler = type("_Handler", (_Handler,), {"metrics": metrics, "health_fn": health_fn})
        try:
            self._server = BoundedHTTPServer(
                (host, port), handler, timeout_s=timeout_s, max_threads=max_threads
            )
        except OSError as exc:
            raise ServiceConfigError(
                f"[metrics].listen: cannot listen on {host}:{port}: {exc.strerror or exc}",
                diagnostic=D.METRICS_BIND,
                host=host,
                port=port,
            ) from exc
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(0.05,),  # poll interval: close() returns within 50 ms
            name="vigil-health",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    metrics: ServiceMetrics
    health_fn: Callable[[], Health]
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.metrics.generate(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            try:
                code, body = type(self).health_fn().to_json(readiness=path == "/readyz")
            except Exception as exc:  # fail closed: no verdict is an unhealthy verdict
                code, body = 503, {"status": "error", "reason": f"health check failed: {exc!r}"}
            self._send(code, json.dumps(body).encode() + b"\n", "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood stderr: stay quiet."""
