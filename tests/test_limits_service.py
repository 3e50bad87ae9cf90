"""`vigil serve` end to end with [limits]: Triton's own HTTP client sends a traceparent and a
class header, gets 429 when its class is spent, and the socket client's class and the metrics
agree -- the Service builds and wires the limiter from its configuration."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import numpy as np
import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import LogReader
from vigil.cli import main
from vigil.errors import ServiceBusy
from vigil.schemas import RecordType
from vigil.service._client import Client
from vigil.service._config import ServeConfig
from vigil.service._service import Service

httpclient = pytest.importorskip("tritonclient.http")
import gevent  # noqa: E402, F401  (tritonclient.http's event loop)
from tritonclient.utils import InferenceServerException  # noqa: E402

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GOOD = f"00-{TRACE}-00f067aa0ba902b7-01"
SOCKET = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
REFUSED = "00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-01"
resource_tracker.ensure_running()  # process-global, once per run (see test_kserve.py)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    config = ServeConfig.from_dict(
        {
            "service": {"socket": "vigil.sock"},
            "log": {"path": "flight.vigil", "segment_kb": 256, "segments": 8},
            "model": {
                "factory": "vigil.testing._models:triggered_model",
                "input": {"dtype": "float32", "shape": [-1, 4]},
            },
            "workers": {"standby": False, "heartbeat_ms": 50, "heartbeat_timeout_ms": 5000},
            "supervisor": {"deadline_ms": 5000},
            "http": {"listen": "127.0.0.1:0", "model_name": "tiny"},
            "limits": {  # rates so low that no token comes back during the test
                "default": "standard",
                "class_header": "x-tenant",
                "classes": {
                    "standard": {"rate": 0.001, "burst": 2},
                    "priority": {"rate": 0.001, "burst": 4},
                },
            },
        },
        source="test",
        base_dir=tmp_path,
    )
    svc = Service(config)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def test_triton_clients_are_limited_by_class_and_traced(service: Service) -> None:
    assert service.kserve is not None and service.metrics is not None
    triton = httpclient.InferenceServerClient(url=service.kserve.url.removeprefix("http://"))
    inp = httpclient.InferInput("input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    try:
        answer = triton.infer("tiny", [inp], headers={"traceparent": GOOD})
        assert answer.get_response()["parameters"]["vigil_trace_id"] == TRACE
        triton.infer("tiny", [inp])  # the standard class's second and last token
        with pytest.raises(InferenceServerException) as err:
            triton.infer("tiny", [inp])
        assert err.value.status() == "429" and "DIA-2021" in err.value.message()
        for _ in range(3):  # the priority class is untouched by the standard class's spending
            triton.infer("tiny", [inp], headers={"X-Tenant": "priority"})
    finally:
        triton.close()
    with Client(service.config.service.socket) as c:
        # its 4th token, over the socket, with a trace context of its own
        c.infer(torch.ones(1, 4), rate_class="priority", traceparent=SOCKET)
        with pytest.raises(ServiceBusy) as busy:
            c.infer(torch.ones(1, 4), rate_class="priority", traceparent=REFUSED)
        assert busy.value.diagnostic is D.RATE_LIMITED
    text = service.metrics.generate().decode()
    assert 'vigil_requests_total{code="DIA-2021",outcome="rate_limited",served_by="none"} 2.0' in (
        text
    )
    stats = service.supervisor.statistics() if service.supervisor else None
    assert stats is not None and stats.machine.state.name == "NORMAL"


def _traced(path: Path) -> dict[str, list[tuple[str, int]]]:
    """trace id (hex) -> the (type, code) of each record that carries it."""
    out: dict[str, list[tuple[str, int]]] = {}
    with LogReader(str(path)) as r:
        for rec in r.records(types=[RecordType.INFERENCE, RecordType.REJECTED]):
            trace = rec.body.get("trace_id")
            if trace is not None:
                out.setdefault(bytes(trace).hex(), []).append((rec.type.name, rec.body["code"]))
    return out


def test_trace_ids_reach_the_records_from_both_protocols(service: Service) -> None:
    """The W3C trace id a caller sends (HTTP header, socket context block) is in the call's
    INFERENCE record, and in the REJECTED record of a call the limiter refused (format
    1.2); `vigil dump --trace` finds them."""
    assert service.kserve is not None
    triton = httpclient.InferenceServerClient(url=service.kserve.url.removeprefix("http://"))
    inp = httpclient.InferInput("input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    try:
        triton.infer("tiny", [inp], headers={"traceparent": GOOD, "x-tenant": "priority"})
    finally:
        triton.close()
    with Client(service.config.service.socket) as c:
        for _ in range(3):  # the priority class's last three tokens, then a refusal
            c.infer(torch.ones(1, 4), rate_class="priority", traceparent=SOCKET)
        with pytest.raises(ServiceBusy):
            c.infer(torch.ones(1, 4), rate_class="priority", traceparent=REFUSED)
    traced = _traced(service.config.log.path)
    assert traced[TRACE] == [("INFERENCE", 0)]
    assert traced[SOCKET.split("-")[1]] == [("INFERENCE", 0)] * 3
    assert traced[REFUSED.split("-")[1]] == [("REJECTED", D.RATE_LIMITED.number)]
    dumped = io.StringIO()
    with contextlib.redirect_stdout(dumped):
        main(["dump", str(service.config.log.path), "--trace", TRACE, "--format", "jsonl"])
    rows = [json.loads(line) for line in dumped.getvalue().splitlines()]
    assert [(r["type"], r["trace_id"]) for r in rows] == [("INFERENCE", TRACE)]
