"""What both fronts (the socket, KServe HTTP) do around one inference call: its trace
context, its rate limit, its span.

Theory of operation
-------------------
:meth:`Admission.begin` takes the call's raw ``traceparent`` and named class as they arrived.
An invalid ``traceparent`` is ignored and counted (the W3C rule: the trace restarts, the call
is served), see :mod:`._trace`. With ``[tracing]`` on, the call's span starts here; its ids are
the ones passed to ``Supervisor.infer`` (``trace_id``: the caller's trace, or the new one the
span began; ``span_id``: the span's). Without spans, ``span_id`` is the caller's parent-id,
the span that sent the call.

:meth:`Admission.refusal` asks the rate limiter. A refused call is recorded first -- a
REJECTED record with DIA-2021 through ``Supervisor.refuse``, never seen by the state
machine -- and only then does the front answer it (429, or an ERROR frame of class BUSY).
:meth:`Admission.end` ends the span with how the call ended.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from vigil import _diagnostics as D
from vigil.errors import ServiceBusy
from vigil.service._limits import RateLimiter
from vigil.service._trace import TraceContext, extract, extract_state
from vigil.service._tracing import Spans

__all__ = ["Admission", "Call", "Refusal"]


@dataclass(slots=True)
class Call:
    """One call's context, from :meth:`Admission.begin` to :meth:`Admission.end`."""

    protocol: str
    parent: TraceContext | None
    trace_id: bytes | None
    span_id: bytes | None
    rate_class: str | None
    span: Any = None
    traceparent_ignored: bool = False
    tracestate: tuple[tuple[str, str], ...] = ()  # the caller's, for its span

    def infer_kwargs(self) -> dict[str, bytes]:
        """The trace keywords for ``Supervisor.infer`` (none without a trace: a supervisor
        or stand-in that knows no trace context is called as before)."""
        if self.trace_id is None:
            return {}
        assert self.span_id is not None
        return {"trace_id": self.trace_id, "span_id": self.span_id}


@dataclass(frozen=True)
class Refusal:
    """A call the rate limiter refused, already recorded."""

    error: ServiceBusy
    rate_class: str
    retry_after_s: float
    seq: int | None  # the REJECTED record; None when it could not be written
    request_id: bytes | None  # the id recorded (generated when the call had none)


class Admission:
    """The per-call context both fronts share (thread-safe).

    Args:
        supervisor: records refusals (``refuse``).
        limiter: the rate limiter, or None (no limits).
        spans: the span emitter, or None (tracing off).
    """

    def __init__(
        self, supervisor: Any, *, limiter: RateLimiter | None = None, spans: Spans | None = None
    ) -> None:
        self.supervisor = supervisor
        self.limiter = limiter
        self.spans = spans
        self._lock = threading.Lock()
        self._counts = {
            "traceparent_ignored": 0,
            "tracestate_ignored": 0,
            "rate_limited": 0,
            "refusal_unrecorded": 0,
        }

    def begin(
        self,
        traceparent: str | None,
        rate_class: str | None,
        protocol: str,
        tracestate: str | None = None,
    ) -> Call:
        """The call's context; starts its span when tracing is on. ``tracestate`` is read only
        next to a valid ``traceparent`` (W3C); an invalid one is ignored and counted."""
        parent, ignored = extract(traceparent)
        state: tuple[tuple[str, str], ...] = ()
        if ignored is not None:
            self._count("traceparent_ignored")
        elif parent is not None and tracestate is not None:
            state, bad = extract_state(tracestate)
            if bad is not None:
                self._count("tracestate_ignored")
        call = Call(
            protocol,
            parent,
            None if parent is None else parent.trace_id,
            None if parent is None else parent.parent_id,
            rate_class,
            traceparent_ignored=ignored is not None,
            tracestate=state,
        )
        if self.spans is not None:
            call.span = self.spans.start(parent, protocol, state)
            call.trace_id, call.span_id = self.spans.ids(call.span)
        return call

    def refusal(self, call: Call, request_id: bytes | None) -> Refusal | None:
        """None when the call may go on; else the refusal, recorded (REJECTED, DIA-2021)."""
        if self.limiter is None:
            return None
        # by the caller's trace id only: a trace our span began is random, not a class
        caller = None if call.parent is None else call.parent.trace_id
        bucket, wait = self.limiter.admit(call.rate_class, caller)
        if wait == 0.0:
            return None
        message = (
            f"rate limited: class {bucket.name!r} allows {bucket.rate:g} calls/s, burst "
            f"{bucket.burst:g}; retry in {wait:.3f} s"
        )
        self._count("rate_limited")
        seq: int | None = None
        rid = request_id
        try:
            rid, seq = self.supervisor.refuse(
                request_id, message, D.RATE_LIMITED, trace_id=call.trace_id, span_id=call.span_id
            )
        except Exception:  # a closed or failing log: the call is refused all the same
            self._count("refusal_unrecorded")
        error = ServiceBusy(message, diagnostic=D.RATE_LIMITED, rate_class=bucket.name, seq=seq)
        return Refusal(error, bucket.name, wait, seq, rid)

    def end(self, call: Call, result: Any, error: BaseException | None) -> None:
        """End the call's span (when tracing is on) with how the call ended; never raises."""
        if call.span is None or self.spans is None:
            return
        try:
            self.spans.end(call.span, _attributes(result, error), error)
        except Exception:  # spans must never break a call
            self._count("span_errors")

    def statistics(self) -> dict[str, int]:
        """``traceparent_ignored``, ``tracestate_ignored``, ``rate_limited``,
        ``refusal_unrecorded`` (and ``span_errors`` once one happened)."""
        with self._lock:
            return dict(self._counts)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1


def _attributes(result: Any, error: BaseException | None) -> dict[str, Any]:
    if result is not None:
        return {
            "vigil.served_by": result.served_by.name,
            "vigil.outcome": result.outcome.name,
            "vigil.code": "" if result.code is None else result.code.code,
            "vigil.state": result.state.name,
            "vigil.seq": result.seq,
            "vigil.request_id": result.request_id.hex(),
        }
    if isinstance(error, ServiceBusy) and error.diagnostic is D.RATE_LIMITED:
        outcome = "RATE_LIMITED"
    else:  # the error's type: InvalidInput, Unavailable, ProtocolError, Refused (HTTP)...
        outcome = type(error).__name__.lstrip("_") if error is not None else "NONE"
    code = getattr(error, "code", "")  # VigilError's, or the HTTP refusal's DIA code
    attributes: dict[str, Any] = {
        "vigil.served_by": "NONE",
        "vigil.outcome": outcome,
        "vigil.code": code if isinstance(code, str) else "",
    }
    state = getattr(error, "context", {}).get("state")
    if state is not None:
        attributes["vigil.state"] = getattr(state, "name", str(state))
    return attributes
