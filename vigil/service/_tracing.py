"""OpenTelemetry spans for ``vigil serve`` (the optional extra ``vigil[otel]``).

Theory of operation
-------------------
With ``[tracing] enabled = true`` the service emits one SERVER span per inference request, on
either protocol, named ``vigil.infer``: a child of the caller's ``traceparent`` when it sent a
valid one (carrying its ``tracestate`` when that is valid too), else the root of a new trace.
Its attributes say how the call ended --
``vigil.served_by``, ``vigil.outcome``, ``vigil.code``, ``vigil.state``, ``vigil.seq`` -- and
its ids are the ones the flight log records with the call, so a span and its record find each
other. The spans go through a ``TracerProvider`` of the service's own (never the process's
global one) to the configured exporter: ``otlp`` (OTLP over HTTP, batched), ``console``
(stdout), or ``none`` (spans and ids, nothing exported). Sampling follows the parent's sampled
flag (a parent that is not sampled gives a span that is not recorded, but has its ids).

opentelemetry-sdk is imported here only, when tracing is enabled: the base install never
needs it (:class:`~vigil.errors.ServiceConfigError` DIA-7221 when it is missing).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from vigil import _diagnostics as D
from vigil.errors import ServiceConfigError
from vigil.service._trace import TraceContext

__all__ = ["EXPORTERS", "Spans", "TracingSection"]

EXPORTERS = ("none", "console", "otlp")


@dataclass(frozen=True)
class TracingSection:
    """``[tracing]``: spans through opentelemetry-sdk, off by default."""

    enabled: bool = False
    exporter: str = "none"
    endpoint: str | None = None  # the OTLP/HTTP endpoint; the exporter's default when None
    service_name: str = "vigil"


def _missing(what: str, exc: ImportError) -> ServiceConfigError:
    return ServiceConfigError(
        f"[tracing]: {what} is not installed ({exc}); pip install 'vigil[otel]', or set "
        "enabled = false",
        diagnostic=D.TRACING_EXTRA_MISSING,
        key="[tracing].enabled",
    )


class Spans:
    """Starts and ends the service's spans.

    Args:
        section: the ``[tracing]`` settings (``enabled`` is not checked here).
        exporter: a span exporter to use instead of the configured one (tests pass
            opentelemetry-sdk's ``InMemorySpanExporter``); exported synchronously.

    Raises:
        ServiceConfigError: DIA-7221, opentelemetry-sdk (or the OTLP exporter) is missing.
    """

    def __init__(self, section: TracingSection, *, exporter: Any = None) -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 - vigil[otel] only
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SimpleSpanProcessor,
            )
        except ImportError as exc:
            raise _missing("opentelemetry-sdk", exc) from exc
        self._trace = trace
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": section.service_name})
        )
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif section.exporter == "console":
            self.provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif section.exporter == "otlp":
            try:  # by name: an optional package of the optional extra
                otlp = importlib.import_module(
                    "opentelemetry.exporter.otlp.proto.http.trace_exporter"
                ).OTLPSpanExporter
            except ImportError as exc:
                raise _missing("opentelemetry-exporter-otlp-proto-http", exc) from exc
            kwargs = {} if section.endpoint is None else {"endpoint": section.endpoint}
            self.provider.add_span_processor(BatchSpanProcessor(otlp(**kwargs)))
        self._tracer = self.provider.get_tracer("vigil.service")

    def start(
        self,
        parent: TraceContext | None,
        protocol: str,
        tracestate: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """A started span, child of ``parent`` (a new trace's root when None), carrying the
        caller's ``tracestate`` members (checked by :func:`._trace.parse_state`)."""
        trace = self._trace
        context = None
        if parent is not None:
            remote = trace.SpanContext(
                int.from_bytes(parent.trace_id, "big"),
                int.from_bytes(parent.parent_id, "big"),
                is_remote=True,
                trace_flags=trace.TraceFlags(parent.flags & 0xFF),
                trace_state=trace.TraceState(list(tracestate)) if tracestate else None,
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        return self._tracer.start_span(
            "vigil.infer",
            context=context,
            kind=trace.SpanKind.SERVER,
            attributes={"vigil.protocol": protocol},
        )

    @staticmethod
    def ids(span: Any) -> tuple[bytes, bytes]:
        """The span's ``(trace_id, span_id)`` as 16 and 8 bytes."""
        ctx = span.get_span_context()
        return ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big")

    def end(self, span: Any, attributes: dict[str, Any], error: BaseException | None) -> None:
        """Set how the call ended and end the span."""
        span.set_attributes(attributes)
        if error is not None:
            code = getattr(error, "code", None)
            code = code if isinstance(code, str) else type(error).__name__
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, code))
        span.end()

    def close(self) -> None:
        """Flush and stop the exporters."""
        self.provider.shutdown()
