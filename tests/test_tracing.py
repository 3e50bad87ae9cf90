"""OpenTelemetry spans (the otel extra) read back by opentelemetry-sdk's InMemorySpanExporter:
one span per request on both protocols, a child of the caller's traceparent, its ids the ones
the supervisor got; refusals traced too; the trace id on the metrics as an exemplar."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from werkzeug.test import Client as WsgiClient

from vigil import _diagnostics as D
from vigil.auditlog import RingConfig
from vigil.errors import ProtocolError, ServiceBusy
from vigil.service import _protocol as P
from vigil.service._calls import Admission
from vigil.service._client import Client
from vigil.service._config import ServeConfig
from vigil.service._kserve import KServeApp
from vigil.service._limits import LimitClass, LimitsSection, RateLimiter
from vigil.service._metrics import ServiceMetrics
from vigil.service._server import SocketServer
from vigil.service._service import Service
from vigil.service._tracing import Spans, TracingSection
from vigil.supervisor import Supervisor

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.openmetrics.exposition import generate_latest

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
GOOD = f"00-{TRACE}-{SPAN}-01"
RING = RingConfig(size=4096 + 16 * 32768, segment_size=32768)


class Spy(Supervisor):
    """A real supervisor that remembers the trace keywords each call brought."""

    seen: list[dict[str, Any]]

    def infer(self, x: Any, **kw: Any) -> Any:
        self.seen.append({k: v for k, v in kw.items() if k != "request_id"})
        return super().infer(x, **kw)


@pytest.fixture
def traced(
    tmp_path: Path,
) -> Iterator[tuple[Spy, InMemorySpanExporter, Admission, ServiceMetrics, str]]:
    d = Path(tempfile.mkdtemp(prefix="vgo-"))
    sup = Spy(lambda x: x + 1, log=str(tmp_path / "f.vlog"), isolation="inline", ring=RING)
    sup.seen = []
    exporter = InMemorySpanExporter()
    spans = Spans(TracingSection(enabled=True), exporter=exporter)
    clock = [0.0]
    admission = Admission(sup, spans=spans, limiter=RateLimiter(_limits(), clock=lambda: clock[0]))
    metrics = ServiceMetrics(sup)
    server = SocketServer(
        sup, d / "s.sock", read_timeout_s=10.0, admission=admission, on_call=metrics.observe_call
    )
    server.start()
    yield sup, exporter, admission, metrics, str(d / "s.sock")
    server.stop(5.0)
    spans.close()
    sup.close()
    shutil.rmtree(d, ignore_errors=True)


def _limits() -> LimitsSection:
    return LimitsSection(
        classes=(LimitClass("default", 1.0, 1000), LimitClass("tiny", 1.0, 1)), default="default"
    )


def _ids(span: Any) -> tuple[bytes, bytes]:
    return span.context.trace_id.to_bytes(16, "big"), span.context.span_id.to_bytes(8, "big")


def test_each_socket_call_is_one_span_child_of_the_callers_with_the_ids_recorded(
    traced: tuple[Spy, InMemorySpanExporter, Admission, ServiceMetrics, str],
) -> None:
    sup, exporter, _, _, path = traced
    with Client(path, timeout_s=10.0) as c:
        r = c.infer(torch.ones(2), traceparent=GOOD)
        c.infer(torch.ones(2))  # no context: the root of a new trace
        block = P.encode_context(f"00-{'0' * 32}-{SPAN}-01", None)  # invalid: restarts
        body = [block, *P.encode_tensors(torch.ones(2), offset=len(block))]
        c._call(P.FrameType.INFER, P.ZERO_ID, body, P.FrameType.RESULT, flags=P.FLAG_CONTEXT)
    child, root, restarted = exporter.get_finished_spans()
    assert child.name == "vigil.infer" and child.kind is SpanKind.SERVER
    assert child.context.trace_id == int(TRACE, 16)
    assert child.parent is not None and child.parent.span_id == int(SPAN, 16)
    assert child.parent.is_remote
    assert dict(child.attributes or {}) == {
        "vigil.protocol": "socket",
        "vigil.served_by": "PRIMARY",
        "vigil.outcome": "OK",
        "vigil.code": "",
        "vigil.state": "NORMAL",
        "vigil.seq": r.seq,
        "vigil.request_id": r.request_id.hex(),
    }
    assert root.parent is None and restarted.parent is None
    assert len({child.context.trace_id, root.context.trace_id, restarted.context.trace_id}) == 3
    # the supervisor got each span's own ids: the record and the span find each other
    assert sup.seen == [
        {"trace_id": _ids(s)[0], "span_id": _ids(s)[1]} for s in (child, root, restarted)
    ]


def test_an_unsampled_parent_gives_no_recorded_span_but_its_ids_reach_the_record(
    traced: tuple[Spy, InMemorySpanExporter, Admission, ServiceMetrics, str],
) -> None:
    sup, exporter, _, _, path = traced
    with Client(path, timeout_s=10.0) as c:
        c.infer(torch.ones(2), traceparent=GOOD[:-2] + "00")
    assert exporter.get_finished_spans() == ()
    (seen,) = sup.seen
    assert seen["trace_id"] == bytes.fromhex(TRACE) and seen["span_id"] != bytes.fromhex(SPAN)


def test_a_refusal_is_a_span_too_and_the_trace_id_is_an_exemplar(
    traced: tuple[Spy, InMemorySpanExporter, Admission, ServiceMetrics, str],
) -> None:
    _, exporter, _, metrics, path = traced
    with Client(path, timeout_s=10.0) as c:
        c.infer(torch.ones(2), traceparent=GOOD, rate_class="tiny")
        with pytest.raises(ServiceBusy):
            c.infer(torch.ones(2), traceparent=GOOD, rate_class="tiny")
    served, refused = exporter.get_finished_spans()
    assert (refused.attributes or {})["vigil.outcome"] == "RATE_LIMITED"
    assert (refused.attributes or {})["vigil.code"] == D.RATE_LIMITED.code
    assert refused.status.status_code is StatusCode.ERROR
    assert served.status.status_code is StatusCode.UNSET
    text = generate_latest(metrics.registry).decode()
    exemplar = f'# {{trace_id="{TRACE}"}}'
    ok = [line for line in text.splitlines() if line.startswith("vigil_requests_total")]
    assert any('outcome="ok"' in line and exemplar in line for line in ok), ok
    assert any('outcome="rate_limited"' in line and exemplar in line for line in ok), ok
    buckets = [line for line in text.splitlines() if "vigil_request_duration_seconds_b" in line]
    assert any(exemplar in line for line in buckets)


def _traced_http(
    tmp_path: Path,
) -> tuple[Spy, InMemorySpanExporter, Spans, KServeApp, WsgiClient, str]:
    """A KServe HTTP front with spans to memory, around a spy supervisor; a request body."""
    sup = Spy(lambda x: x + 1, log=str(tmp_path / "h.vlog"), isolation="inline", ring=RING)
    sup.seen = []
    exporter = InMemorySpanExporter()
    spans = Spans(TracingSection(enabled=True), exporter=exporter)
    kapp = KServeApp(
        sup, model_name="m", readiness=lambda: True, admission=Admission(sup, spans=spans)
    )
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    )
    return sup, exporter, spans, kapp, WsgiClient(kapp), body


def test_http_calls_are_spans_and_answer_their_trace_id(tmp_path: Path) -> None:
    sup, exporter, spans, kapp, client, body = _traced_http(tmp_path)
    good = client.post("/v2/models/m/infer", data=body, headers={"traceparent": GOOD})
    bad = client.post("/v2/models/m/infer", data=body, headers={"traceparent": GOOD.upper()})
    spans.close()
    sup.close()
    assert good.status_code == bad.status_code == 200
    g, b = (json.loads(r.get_data())["parameters"] for r in (good, bad))
    assert g["vigil_trace_id"] == TRACE and "vigil_traceparent_ignored" not in g
    assert b["vigil_traceparent_ignored"] is True and b["vigil_trace_id"] != TRACE
    child, root = exporter.get_finished_spans()
    assert (child.attributes or {})["vigil.protocol"] == "http"
    assert child.parent is not None and child.parent.span_id == int(SPAN, 16)
    assert root.parent is None
    assert sup.seen[0] == {"trace_id": bytes.fromhex(TRACE), "span_id": _ids(child)[1]}
    assert kapp.admission.statistics()["traceparent_ignored"] == 1


def test_a_valid_tracestate_reaches_the_span_and_an_invalid_one_is_dropped_and_counted(
    tmp_path: Path,
) -> None:
    sup, exporter, spans, kapp, client, body = _traced_http(tmp_path)
    for tp, state in (
        (GOOD, "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),
        (GOOD, "congo=t61rcWkgMzE,Rojo=1"),  # an upper-case key: the whole value is invalid
        (GOOD.upper(), "not=valid=either"),  # no valid traceparent: never read, not counted
    ):
        r = client.post(
            "/v2/models/m/infer", data=body, headers={"traceparent": tp, "tracestate": state}
        )
        assert r.status_code == 200
    spans.close()
    sup.close()
    good, bad, restarted = exporter.get_finished_spans()
    assert list(good.context.trace_state.items()) == [
        ("congo", "t61rcWkgMzE"),
        ("rojo", "00f067aa0ba902b7"),
    ]
    assert good.parent is not None and good.parent.trace_state == good.context.trace_state
    # the invalid tracestate is dropped, its traceparent kept
    assert len(bad.context.trace_state) == 0 and bad.context.trace_id == int(TRACE, 16)
    assert len(restarted.context.trace_state) == 0 and restarted.parent is None
    stats = kapp.admission.statistics()
    assert stats["tracestate_ignored"] == 1 and stats["traceparent_ignored"] == 1


def test_grpc_tracestate_entries_make_one_list_and_reach_the_span() -> None:
    grpc_front = pytest.importorskip("vigil.service._grpc")
    exporter = InMemorySpanExporter()
    spans = Spans(TracingSection(enabled=True), exporter=exporter)
    admission = Admission(None, spans=spans)
    service = grpc_front.KServeGrpc(
        None, model_name="m", readiness=lambda: True, admission=admission
    )

    class Context:
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("traceparent", GOOD), ("tracestate", "a=1"), ("tracestate", "b=2"))

    call = service._admit(Context())
    admission.end(call, None, None)
    spans.close()
    (span,) = exporter.get_finished_spans()
    assert list(span.context.trace_state.items()) == [("a", "1"), ("b", "2")]
    assert admission.statistics()["tracestate_ignored"] == 0


def test_without_spans_the_callers_ids_reach_the_supervisor(tmp_path: Path) -> None:
    sup = Spy(lambda x: x + 1, log=str(tmp_path / "n.vlog"), isolation="inline", ring=RING)
    sup.seen = []
    client = WsgiClient(KServeApp(sup, model_name="m", readiness=lambda: True))
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    )
    client.post("/v2/models/m/infer", data=body, headers={"traceparent": GOOD})
    client.post("/v2/models/m/infer", data=body)
    sup.close()
    assert sup.seen == [{"trace_id": bytes.fromhex(TRACE), "span_id": bytes.fromhex(SPAN)}, {}]


def test_the_service_builds_limits_and_spans_from_its_configuration() -> None:
    cfg = ServeConfig.from_dict(
        {
            "service": {"socket": "/tmp/x.sock"},
            "log": {"path": "/tmp/x.vlog"},
            "model": {"factory": "vigil.model:TinyReference"},
            "supervisor": {"deadline_ms": 100},
            "limits": {"classes": {"default": {"rate": 1, "burst": 1}}},
            "tracing": {"enabled": True, "exporter": "console"},
        }
    )
    admission = Service(cfg)._admission()
    assert admission.limiter is not None and admission.spans is not None
    assert [b.name for b in admission.limiter.buckets] == ["default"]
    admission.spans.close()


def test_a_trace_the_service_began_never_picks_a_class_by_its_prefix() -> None:
    every_prefix = tuple("0123456789abcdef")  # any trace id at all starts with one of these
    limits = LimitsSection(
        classes=(LimitClass("std", 1.0, 1), LimitClass("p", 1.0, 1000, every_prefix)),
        default="std",
    )
    spans = Spans(TracingSection(enabled=True), exporter=InMemorySpanExporter())
    admission = Admission(_Refuser(), limiter=RateLimiter(limits, clock=lambda: 0.0), spans=spans)
    no_context = [admission.refusal(admission.begin(None, None, "http"), None) for _ in range(3)]
    assert no_context[0] is None and all(r is not None for r in no_context[1:])  # std: 1 token
    with_context = [admission.refusal(admission.begin(GOOD, None, "http"), None) for _ in range(3)]
    assert with_context == [None] * 3  # the caller's trace id picks class p
    spans.close()


class _Refuser:
    def refuse(self, *args: Any, **kw: Any) -> tuple[bytes, int]:
        return bytes(16), 0


def test_a_call_refused_before_the_supervisor_still_ends_its_span(
    traced: tuple[Spy, InMemorySpanExporter, Admission, ServiceMetrics, str],
) -> None:
    sup, exporter, _, _, path = traced
    with Client(path, timeout_s=10.0) as c:
        block = P.encode_context(GOOD, None)
        with pytest.raises(ProtocolError):  # a tensor payload that does not parse
            c._call(
                P.FrameType.INFER,
                P.ZERO_ID,
                [block, b"\x07\x00\x00\x00"],
                P.FrameType.RESULT,
                flags=P.FLAG_CONTEXT,
            )
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["vigil.code"] == D.TENSOR_SPEC.code
    assert span.status.status_code is StatusCode.ERROR and sup.seen == []

    http_exporter = InMemorySpanExporter()
    spans = Spans(TracingSection(enabled=True), exporter=http_exporter)
    kapp = KServeApp(
        sup, model_name="m", readiness=lambda: True, admission=Admission(sup, spans=spans)
    )
    r = WsgiClient(kapp).post("/v2/models/m/infer", data=b"not json", headers={"traceparent": GOOD})
    assert r.status_code == 400
    (span,) = http_exporter.get_finished_spans()
    assert (span.attributes or {})["vigil.code"] == D.HTTP_REQUEST_INVALID.code
    assert (span.attributes or {})["vigil.outcome"] == "Refused"
    spans.close()


def test_a_request_no_check_names_is_refused_and_its_span_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformation the front's checks miss (here: the input reader raising TypeError, as
    a JSON list for a datatype once did) is a 400 with a code, not a 500, and the call's span
    ends with the refusal instead of being left open."""
    sup, exporter, spans, kapp, client, body = _traced_http(tmp_path)

    def unreadable(*_: object) -> None:
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(kapp, "_input", unreadable)
    r = client.post("/v2/models/m/infer", data=body, headers={"traceparent": GOOD})
    spans.close()
    sup.close()
    assert r.status_code == 400
    error = json.loads(r.get_data())["error"]
    assert error.startswith(D.HTTP_REQUEST_INVALID.code) and "TypeError" in error
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and sup.seen == []
