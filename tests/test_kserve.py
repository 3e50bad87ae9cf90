"""The KServe v2 HTTP endpoint (``[http]``): a real ``vigil serve`` service answers Triton's own
client (``tritonclient.http``) as Triton would, bit for bit as the socket client gets it; and
hostile requests get a 400 with a code, within bounded memory, never a traceback."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import socket
import threading
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from werkzeug.test import Client as WsgiClient

from vigil import _diagnostics as D
from vigil.errors import InvalidInput, ServiceConfigError, Unavailable
from vigil.schemas import Outcome, Result, ServedBy, State
from vigil.service import _kserve as kserve
from vigil.service._client import Client
from vigil.service._config import ServeConfig
from vigil.service._kserve import KServeApp, KServeServer
from vigil.service._metrics import ServiceMetrics
from vigil.service._service import Service
from vigil.testing._models import TRIGGERS

httpclient = pytest.importorskip("tritonclient.http")
import gevent  # noqa: E402  (tritonclient.http's event loop)
from tritonclient.utils import InferenceServerException  # noqa: E402

START_S = 120.0
# process-global, once per run: the pool's first use starts it (its pipe is not the test's)
resource_tracker.ensure_running()


def _config(tmp: Path, drain_timeout_s: float = 10) -> ServeConfig:
    return ServeConfig.from_dict(
        {
            "service": {"socket": "vigil.sock", "drain_timeout_s": drain_timeout_s},
            "log": {"path": "flight.vigil", "segment_kb": 256, "segments": 8},
            "model": {
                "factory": "vigil.testing._models:triggered_model",
                "input": {"dtype": "float32", "shape": [-1, 4]},
            },
            "workers": {"standby": False, "heartbeat_ms": 50, "heartbeat_timeout_ms": 5000},
            "supervisor": {"deadline_ms": 5000},
            "http": {"listen": "127.0.0.1:0", "model_name": "tiny"},
        },
        source="test",
        base_dir=tmp,
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(_config(tmp_path))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def test_triton_client_gets_answers_errors_and_health_as_from_triton(service: Service) -> None:
    assert service.kserve is not None
    url = service.kserve.url.removeprefix("http://")
    triton = httpclient.InferenceServerClient(url=url)
    try:
        assert triton.is_server_live()
        assert triton.is_server_ready()
        assert triton.is_model_ready("tiny")
        meta = triton.get_model_metadata("tiny")
        assert meta["platform"] == "vigil"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]

        gen = torch.Generator().manual_seed(7)
        x = torch.randn(3, 4, generator=gen)
        with Client(service.config.service.socket) as sock:
            expected = sock.infer(x).output
        for binary_in in (True, False):
            for binary_out in (True, False):
                inp = httpclient.InferInput("input", [3, 4], "FP32")
                inp.set_data_from_numpy(x.numpy(), binary_data=binary_in)
                out = httpclient.InferRequestedOutput("output", binary_data=binary_out)
                answer = triton.infer("tiny", [inp], outputs=[out], request_id="r-1")
                got = answer.as_numpy("output")
                assert got.dtype == np.float32 and got.shape == (3, 4)
                assert got.tobytes() == expected.numpy().tobytes()  # bit for bit
                response = answer.get_response()
                assert response["id"] == "r-1"
                # the record's request id is derived from the KServe id: found in the log
                rid = hashlib.sha256(b"r-1").digest()[:16].hex()
                assert response["parameters"]["vigil_request_id"] == rid
                assert response["parameters"]["vigil_served_by"] == "PRIMARY"

        # a contract breach: 400 with the contract's code, as Triton reports a bad input
        bad = httpclient.InferInput("input", [3, 5], "FP32")
        bad.set_data_from_numpy(np.zeros((3, 5), np.float32))
        with pytest.raises(InferenceServerException) as err:
            triton.infer("tiny", [bad])
        assert err.value.status() == "400"
        assert D.SHAPE_MISMATCH.code in err.value.message()
        wrong_type = httpclient.InferInput("input", [3, 4], "INT64")
        wrong_type.set_data_from_numpy(np.zeros((3, 4), np.int64))
        with pytest.raises(InferenceServerException) as err:
            triton.infer("tiny", [wrong_type])
        assert err.value.status() == "400"
        assert D.DTYPE_MISMATCH.code in err.value.message()
        # an unknown model: 404
        with pytest.raises(InferenceServerException) as err:
            triton.get_model_metadata("other")
        assert err.value.status() == "404"
        assert D.HTTP_UNKNOWN_MODEL.code in err.value.message()
        assert not triton.is_model_ready("other")

        # after the calls, the metadata names the output as served
        outputs = triton.get_model_metadata("tiny")["outputs"]
        assert outputs == [{"name": "output", "datatype": "FP32", "shape": [3, 4]}]
    finally:
        triton.close()
        gevent.get_hub().destroy(destroy_loop=True)  # the client's event loop (its pipe)
    assert service.kserve.stop(1.0) == 0  # drained first, as Service.stop does
    assert service.kserve.app.draining


@pytest.mark.parametrize(("drain_timeout_s", "cut_off"), [(10, 0), (0.2, 1)])
def test_drain_finishes_the_http_call_in_flight_and_refuses_new_ones(
    tmp_path: Path, drain_timeout_s: float, cut_off: int
) -> None:
    """SIGTERM's drain stops the HTTP endpoint first: a call in flight is answered (the
    supervisor still runs), a new connection is refused, and Service.stop returns 0 (nothing
    cut off); a call longer than ``drain_timeout_s`` is counted as cut off (exit status 1).
    A new call on a connection accepted before the drain gets 503 DIA-7144 (the application
    test below)."""
    svc = Service(_config(tmp_path, drain_timeout_s))
    svc.start()
    stopped: list[int] = []
    try:
        assert svc.kserve is not None
        app, port = svc.kserve.app, svc.kserve.port
        busy = http.client.HTTPConnection("127.0.0.1", port, timeout=START_S)
        slow = {"name": "input", "datatype": "FP32", "shape": [1, 4]}
        # 1.5 s inside the model: still running when the drain starts, and past the 0.2 s
        # drain_timeout_s of the cut-off case by more than a second
        slow["data"] = [TRIGGERS["slow"], 1500.0, 0.0, 0.0]
        answer: dict[str, Any] = {}

        def call() -> None:
            busy.request("POST", "/v2/models/tiny/infer", json.dumps({"inputs": [slow]}))
            try:
                r = busy.getresponse()
                answer.update(status=r.status, body=json.loads(r.read()))
            except (OSError, http.client.HTTPException) as exc:  # cut off: the second case
                answer.update(status=None, error=exc)

        caller = threading.Thread(target=call)
        caller.start()
        assert app.wait_for(lambda s: s["in_flight"] == 1, START_S)
        stopper = threading.Thread(target=lambda: stopped.append(svc.stop()))
        stopper.start()
        assert app.wait_for(lambda s: s["draining"] == 1, START_S)
        caller.join(START_S)
        stopper.join(START_S)
        if not cut_off:
            assert answer["status"] == 200, answer
            assert answer["body"]["parameters"]["vigil_served_by"] == "PRIMARY"
        assert stopped == [cut_off]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=START_S).close()
        busy.close()
    finally:
        if not stopped:
            svc.stop()


# --- the application alone: hostile requests, 503s (a stand-in supervisor) -------------


class _Supervisor:
    """Answers ``2 * x``; or raises what ``raises`` holds."""

    def __init__(self) -> None:
        self.raises: Exception | None = None
        self.calls = 0

    def infer(self, x: Any) -> Result:
        self.calls += 1
        if self.raises is not None:
            raise self.raises
        return Result(
            2 * x, State.NORMAL, ServedBy.PRIMARY, Outcome.OK, 1, None, "", 0, 0, b"\0" * 16
        )


@pytest.fixture
def app() -> tuple[WsgiClient, _Supervisor, KServeApp]:
    sup = _Supervisor()
    kapp = KServeApp(
        sup,
        model_name="m",
        readiness=lambda: True,
        input_shape=(-1, 2),
        input_dtype="float32",
        max_request_bytes=1 << 16,
        max_json_bytes=1 << 12,
    )
    return WsgiClient(kapp), sup, kapp


def _infer(client: WsgiClient, body: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
    r = client.post("/v2/models/m/infer", data=body, headers=headers)
    return r.status_code, json.loads(r.get_data())


def _tensor(**fields: Any) -> bytes:
    spec = {"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2], **fields}
    return json.dumps({"inputs": [spec]}).encode()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", D.HTTP_REQUEST_INVALID),
        (b"[" * 100_000 + b"]" * 100_000, D.HTTP_REQUEST_TOO_LARGE),
        (b"[" * 2000 + b"]" * 2000, D.HTTP_REQUEST_INVALID),
        (b'"a string"', D.HTTP_REQUEST_INVALID),
        (b'{"inputs": []}', D.HTTP_REQUEST_INVALID),
        (b"\xff\xfe", D.HTTP_REQUEST_INVALID),
        (_tensor(datatype="COMPLEX64"), D.HTTP_TENSOR_INVALID),
        (_tensor(datatype=[0, 2]), D.HTTP_TENSOR_INVALID),  # fuzz: was a 500 (unhashable)
        (_tensor(datatype="BYTES"), D.HTTP_TENSOR_INVALID),
        (_tensor(name="x"), D.HTTP_TENSOR_INVALID),
        (_tensor(shape=[1, -2]), D.HTTP_TENSOR_INVALID),
        (_tensor(shape=[1] * 40), D.HTTP_TENSOR_INVALID),
        (_tensor(shape=[1, 3]), D.HTTP_TENSOR_INVALID),
        (_tensor(data=[1, 2, 3]), D.HTTP_TENSOR_INVALID),
        (_tensor(data=[[1], [2, [3]]]), D.HTTP_TENSOR_INVALID),
        (_tensor(data=[1, "2"]), D.HTTP_TENSOR_INVALID),
        (_tensor(datatype="INT32", data=[1, 2.5]), D.HTTP_TENSOR_INVALID),
        (_tensor(datatype="INT32", data=[1, 2**40]), D.HTTP_TENSOR_INVALID),
        (_tensor(datatype="INT8", data=[1, 2**70]), D.HTTP_TENSOR_INVALID),  # fuzz: ValueError
        (_tensor(datatype="BOOL", data=[1, 0]), D.HTTP_TENSOR_INVALID),
        (_tensor(data=None), D.HTTP_TENSOR_INVALID),
        (_tensor(shape=[10**9, 10**9], data=[]), D.HTTP_TENSOR_INVALID),
        # no element, yet torch's strides overflow (was a 500): refused before torch sees it
        (_tensor(shape=[0, 2**62, 2**62], data=[]), D.HTTP_TENSOR_INVALID),
        (_tensor(shape=[0, 2**64], data=[]), D.HTTP_TENSOR_INVALID),
        (_tensor(parameters={"binary_data_size": 8}), D.HTTP_TENSOR_INVALID),
        (_tensor(parameters={"binary_data_size": 2**60}), D.HTTP_TENSOR_INVALID),
    ],
)
def test_a_malformed_request_is_a_400_with_a_code_and_never_reaches_the_model(
    app: tuple[WsgiClient, _Supervisor, KServeApp], body: bytes, code: D.Diagnostic
) -> None:
    client, sup, _ = app
    status, doc = _infer(client, body)
    assert status == 400, doc
    assert doc["error"].startswith(f"{code.code} {code.name}: "), doc
    assert sup.calls == 0


def test_binary_parts_must_add_up_and_huge_declarations_are_refused_unread(
    app: tuple[WsgiClient, _Supervisor, KServeApp],
) -> None:
    client, sup, _ = app
    head = _tensor(data=None, parameters={"binary_data_size": 8})
    raw = np.array([[1.5, -2.0]], np.float32).tobytes()
    n = str(len(head))
    # the right bytes: served, the answer in binary when asked
    status_ok = client.post(
        "/v2/models/m/infer", data=head + raw, headers={"Inference-Header-Content-Length": n}
    )
    assert status_ok.status_code == 200
    assert json.loads(status_ok.get_data())["outputs"][0]["data"] == [3.0, -4.0]
    for body, header in (
        (head + raw[:4], n),  # short
        (head + raw + b"x", n),  # trailing garbage
        (head + raw, str(len(head) + 100)),  # header length beyond the body
        (head + raw, "-1"),
        (head + raw, "1e3"),
    ):
        status, doc = _infer(client, body, **{"Inference-Header-Content-Length": header})
        assert status == 400 and doc["error"].startswith("DIA-714"), doc
    # a body declared over the cap is refused from its Content-Length, before it is read
    r = client.post(
        "/v2/models/m/infer", data=b"{}", environ_overrides={"CONTENT_LENGTH": str(1 << 40)}
    )
    assert r.status_code == 400 and D.HTTP_REQUEST_TOO_LARGE.code in r.get_data(as_text=True)
    assert sup.calls == 1


class _Trickle:
    """A WSGI input with ``read`` only (PEP 3333 asks no more), at most 4 KiB a call."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._data.read(min(n, 4096))


def test_the_infer_path_read_from_the_environ_answers_as_the_routed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sup = _Supervisor()
    client = WsgiClient(KServeApp(sup, model_name="mödel", readiness=lambda: True))
    built: list[object] = []
    real = kserve.Request
    monkeypatch.setattr(kserve, "Request", lambda environ: built.append(1) or real(environ))
    x = np.arange(50_000, dtype=np.float32).reshape(1, -1)  # 200 kB: the buffer grows twice
    spec = {"name": "input", "datatype": "FP32", "shape": [1, 50_000]}
    head = json.dumps(
        {
            "inputs": [{**spec, "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = head + x.tobytes()
    answers = []
    for path, routed in (
        ("/v2/models/mödel/infer", False),
        ("/v2/models/mödel/versions/1/infer", False),
        ("/v2/models/m%C3%B6del/infer/", True),  # another spelling: werkzeug routes it
    ):
        for stream in (io.BytesIO(body), _Trickle(body)):
            built.clear()
            r = client.post(
                path,
                data=body,
                headers={"Inference-Header-Content-Length": str(len(head))},
                environ_overrides={"wsgi.input": stream},
            )
            assert r.status_code == 200, r.get_data()
            assert bool(built) is routed
            n = int(r.headers["Inference-Header-Content-Length"])
            assert r.headers["Content-Length"] == str(len(r.get_data()))
            assert r.get_data()[n:] == (2 * x).tobytes()
            answers.append((r.headers["Content-Type"], r.get_data()))
    assert answers == [answers[0]] * 6
    assert sup.calls == 6


def test_contract_breach_is_400_unavailable_and_draining_are_503(
    app: tuple[WsgiClient, _Supervisor, KServeApp],
) -> None:
    client, sup, kapp = app
    sup.raises = InvalidInput("input: dim 1 is 3", diagnostic=D.SHAPE_MISMATCH, field="input")
    status, doc = _infer(client, _tensor())
    # the code once (it was twice: "DIA-2101 SHAPE_MISMATCH: DIA-2101 SHAPE_MISMATCH: input...")
    assert (status, doc["error"]) == (
        400,
        f"{D.SHAPE_MISMATCH.code} SHAPE_MISMATCH: input: dim 1 is 3",
    )
    sup.raises = Unavailable("SAFE_STOP: no fallback", reason="safe_stop")
    status, doc = _infer(client, _tensor())
    code = Unavailable.diagnostic
    assert (status, doc["error"]) == (503, f"{code.code} {code.name}: SAFE_STOP: no fallback")
    sup.raises = None
    assert client.get("/v2/health/ready").status_code == 200
    kapp.draining = True
    status, doc = _infer(client, _tensor())
    assert status == 503 and D.HTTP_DRAINING.code in doc["error"]
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/m/ready").status_code == 503
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/models/m/infer").status_code == 405
    assert client.get("/v2/nothing").status_code == 404


def test_a_port_in_use_is_a_config_error_with_its_code(
    app: tuple[WsgiClient, _Supervisor, KServeApp],
) -> None:
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ServiceConfigError) as err:
            KServeServer(app[2], "127.0.0.1", taken.getsockname()[1])
        assert err.value.diagnostic is D.HTTP_BIND
    finally:
        taken.close()


# --- the server: keep-alive, idle and stalled connections, the connection bound ----------


@pytest.fixture
def server(app: tuple[WsgiClient, _Supervisor, KServeApp]) -> Iterator[KServeServer]:
    srv = KServeServer(app[2], "127.0.0.1", 0, max_connections=2, timeout_s=1)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(5.0)


def _post(conn: http.client.HTTPConnection) -> int:
    conn.request("POST", "/v2/models/m/infer", _tensor())
    r = conn.getresponse()
    r.read()
    return r.status


def test_kept_alive_connections_serve_many_calls_and_idle_ones_are_closed(
    server: KServeServer,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=START_S)
    try:
        assert _post(conn) == 200
        first = conn.sock
        assert _post(conn) == 200
        assert conn.sock is first  # the same TCP connection: kept alive
        assert server.connections() == 1
        # idle past timeout_s: the server closes it (the client reads the end of the stream)
        assert first.recv(1) == b""
        assert server.wait_for(lambda n: n == 0, START_S)
    finally:
        conn.close()
    # a request that stalls half-way (slowloris) is closed the same way
    with socket.create_connection(("127.0.0.1", server.port), timeout=START_S) as slow:
        slow.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Le")
        assert slow.recv(1) == b""
    assert server.wait_for(lambda n: n == 0, START_S)


def test_concurrent_kept_alive_clients_are_bounded_by_max_connections(
    app: tuple[WsgiClient, _Supervisor, KServeApp],
) -> None:
    server = KServeServer(app[2], "127.0.0.1", 0, max_connections=2, timeout_s=START_S)
    server.start()
    conns = [
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=START_S) for _ in range(4)
    ]
    try:
        for conn in conns[:2]:
            assert _post(conn) == 200
        assert server.connections() == 2
        # two more connect (the kernel's backlog) and send; the server does not take them
        waiting = []
        for conn in conns[2:]:
            conn.request("POST", "/v2/models/m/infer", _tensor())
            waiting.append(conn)
        assert not server.wait_for(lambda n: n > 2, 1.5)  # never more than max_connections
        conns[0].close()  # one leaves: the next waiting client is taken and answered
        r = waiting[0].getresponse()
        assert (r.status, json.loads(r.read())["outputs"][0]["data"]) == (200, [2.0, 4.0])
        assert server.connections() <= 2
        conns[1].close()
        r = waiting[1].getresponse()
        assert r.status == 200
        r.read()
    finally:
        for conn in conns:
            conn.close()
        server.stop(5.0)


def test_an_oversized_body_is_refused_unread_and_a_vanished_client_frees_its_slot(
    server: KServeServer,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=START_S) as big:
        big.sendall(
            b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n"
        )  # 1 TiB declared, none sent: answered at once from the header
        head = big.recv(4096)
        assert head.startswith(b"HTTP/1.1 413 "), head
    with socket.create_connection(("127.0.0.1", server.port), timeout=START_S) as gone:
        gone.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    assert server.wait_for(lambda n: n == 0, START_S)  # half a body, then gone
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=START_S)
    try:
        assert _post(conn) == 200
    finally:
        conn.close()


def test_a_request_refused_before_it_became_a_call_is_counted_as_refused(
    app: tuple[WsgiClient, _Supervisor, KServeApp],
) -> None:
    """SERVICE.md: vigil_refused_total{front,code} counts the refusals vigil_requests_total
    does not (unknown model or endpoint, too large, no Content-Length, draining): an operator
    once saw none of them."""
    client, sup, kapp = app
    metrics = ServiceMetrics(sup)
    kapp.on_call = metrics.observe_call
    kapp.on_refused = lambda code: metrics.observe_refusal("http", code)
    assert client.post("/v2/models/other/infer", data=_tensor()).status_code == 404
    assert client.get("/v2/nowhere").status_code == 404
    assert _infer(client, b"x" * (1 << 17))[0] == 400  # over max_request_bytes
    assert _infer(client, _tensor(), **{"Content-Encoding": "gzip"})[0] == 400
    kapp.drain()
    assert _infer(client, _tensor())[0] == 503

    def refused(code: str) -> float | None:
        return metrics.registry.get_sample_value(
            "vigil_refused_total", {"front": "http", "code": code}
        )

    assert refused(D.HTTP_UNKNOWN_MODEL.code) == 2.0
    assert refused(D.HTTP_REQUEST_TOO_LARGE.code) == 1.0
    assert refused(D.HTTP_REQUEST_INVALID.code) == 1.0
    assert refused(D.HTTP_DRAINING.code) == 1.0
    text = metrics.generate().decode()
    assert "vigil_requests_total{" not in text  # none of them was a call
    assert sup.calls == 0


def test_a_malformed_request_is_counted_as_a_protocol_error(
    app: tuple[WsgiClient, _Supervisor, KServeApp],
) -> None:
    """SERVICE.md: vigil_requests_total counts a request that raised as protocol_error; a
    malformed infer request was once not counted at all."""
    client, sup, kapp = app
    metrics = ServiceMetrics(sup)
    kapp.on_call = metrics.observe_call
    for body in (_tensor(data=[1, 2, 3]), _tensor(data=[1, 2, 3]), b"{not json"):
        assert _infer(client, body)[0] == 400
    assert _infer(client, _tensor())[0] == 200

    def count(outcome: str, served_by: str, code: str) -> float | None:
        labels = {"outcome": outcome, "served_by": served_by, "code": code}
        return metrics.registry.get_sample_value("vigil_requests_total", labels)

    assert count("protocol_error", "none", D.HTTP_TENSOR_INVALID.code) == 2.0
    assert count("protocol_error", "none", D.HTTP_REQUEST_INVALID.code) == 1.0
    assert count("ok", "primary", "") == 1.0
    assert sup.calls == 1


def test_the_service_counts_refusals_on_both_fronts(service: Service) -> None:
    """`vigil serve` wires every front to vigil_refused_total: a frame that loses the stream
    on the socket and an unknown model over HTTP show up with their codes."""
    assert service.kserve is not None and service.metrics is not None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10.0)
    s.connect(str(service.config.service.socket))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(8))  # not a vigil frame
    assert s.recv(1 << 16)  # the ERROR frame, then EOF
    s.close()
    conn = http.client.HTTPConnection(service.kserve.url.removeprefix("http://"), timeout=10)
    conn.request("POST", "/v2/models/other/infer", _tensor())
    assert conn.getresponse().status == 404
    conn.close()
    text = service.metrics.generate().decode()
    assert f'vigil_refused_total{{code="{D.BAD_MAGIC.code}",front="socket"}} 1.0' in text
    assert f'vigil_refused_total{{code="{D.HTTP_UNKNOWN_MODEL.code}",front="http"}} 1.0' in text
