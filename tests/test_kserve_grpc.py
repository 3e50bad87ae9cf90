"""The KServe v2 gRPC endpoint (``[grpc]``): a real ``vigil serve`` process answers Triton's own
gRPC client (``tritonclient.grpc``) bit for bit as the socket client gets it, with health and
errors as gRPC statuses carrying the DIA code; bad clients (garbage bytes, a truncated HTTP/2
stream, a client killed mid-call) leave it serving. The status mapping and the bounds are
checked against the servicer alone, with a stand-in supervisor."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vigil import _diagnostics as D
from vigil.errors import InvalidInput, ServiceConfigError, Unavailable
from vigil.schemas import Outcome, Result, ServedBy, State
from vigil.service._client import Client
from vigil.service._config import ServeConfig
from vigil.testing._models import TRIGGERS

grpc = pytest.importorskip("grpc")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from vigil.service._calls import Admission  # noqa: E402
from vigil.service._grpc import KServeGrpc, KServeGrpcServer  # noqa: E402
from vigil.service._limits import LimitClass, LimitsSection, RateLimiter  # noqa: E402
from vigil.service._metrics import ServiceMetrics  # noqa: E402
from vigil.service._v2 import request_id_of  # noqa: E402

START_S = 120.0

CONFIG = """
[service]
socket = "vigil.sock"
drain_timeout_s = 10

[log]
path = "flight.vigil"
segment_kb = 256
segments = 8

[model]
factory = "vigil.testing._models:triggered_model"

[model.input]
dtype = "float32"
shape = [-1, 4]

[workers]
standby = false
heartbeat_ms = 50
heartbeat_timeout_ms = 5000

[supervisor]
deadline_ms = 5000

[grpc]
listen = "127.0.0.1:0"
model_name = "tiny"
"""


class Served:
    """A ``vigil serve`` process with ``[grpc]`` on, and the address it printed."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "vigil.toml").write_text(CONFIG)
        self.socket = tmp / "vigil.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vigil", "serve", "--config", str(tmp / "vigil.toml")],
            stdout=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
            cwd=tmp,
        )
        assert self.proc.stdout is not None
        banner = self.proc.stdout.readline()
        if "kserve v2 grpc on " not in banner:
            self.close()
            raise AssertionError(banner)
        self.address = banner.rsplit("kserve v2 grpc on ", 1)[1].split(";")[0].strip()

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(START_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(START_S)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    try:
        yield s
    finally:
        assert s.close() == 0  # drained: nothing cut off


def _triton_infer(client: Any, x: np.ndarray, model: str = "tiny", **kw: Any) -> Any:
    datatype = {np.float32: "FP32", np.int64: "INT64"}[x.dtype.type]
    inp = grpcclient.InferInput("input", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp], **kw)


def test_triton_grpc_client_gets_answers_errors_and_health_as_from_triton(
    served: Served,
) -> None:
    triton = grpcclient.InferenceServerClient(url=served.address)
    try:
        assert triton.is_server_live()
        assert triton.is_server_ready()
        assert triton.is_model_ready("tiny")
        assert not triton.is_model_ready("other")
        meta = triton.get_model_metadata("tiny", as_json=True)
        assert meta["platform"] == "vigil"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]

        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(11))
        with Client(served.socket) as sock:
            expected = sock.infer(x).output
        answer = _triton_infer(triton, x.numpy(), request_id="g-1")
        got = answer.as_numpy("output")
        assert got.dtype == np.float32 and got.shape == (3, 4)
        assert got.tobytes() == expected.numpy().tobytes()  # bit for bit
        response = answer.get_response(as_json=True)
        assert response["id"] == "g-1"
        rid = response["parameters"]["vigil_request_id"]["string_param"]
        assert rid == hashlib.sha256(b"g-1").digest()[:16].hex()  # the record's request id
        assert response["parameters"]["vigil_served_by"]["string_param"] == "PRIMARY"

        # a contract breach: INVALID_ARGUMENT with the contract's code
        with pytest.raises(InferenceServerException) as err:
            _triton_infer(triton, np.zeros((3, 5), np.float32))
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert err.value.message().startswith(f"{D.SHAPE_MISMATCH.code} SHAPE_MISMATCH: ")
        with pytest.raises(InferenceServerException) as err:
            _triton_infer(triton, np.zeros((3, 4), np.int64))
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert D.DTYPE_MISMATCH.code in err.value.message()
        with pytest.raises(InferenceServerException) as err:
            _triton_infer(triton, np.zeros((3, 4), np.float32), model="other")
        assert err.value.status() == "StatusCode.NOT_FOUND"
        assert D.GRPC_UNKNOWN_MODEL.code in err.value.message()
        outputs = triton.get_model_metadata("tiny", as_json=True)["outputs"]
        assert outputs == [{"name": "output", "datatype": "FP32", "shape": ["3", "4"]}]
    finally:
        triton.close()


_KILLED_CLIENT = """
import sys, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(url=sys.argv[1])
i = g.InferInput("input", [1, 4], "FP32")
i.set_data_from_numpy(np.array([[{slow}, 3000.0, 0.0, 0.0]], np.float32))
print("calling", flush=True)
c.infer("tiny", [i])
"""


def test_garbage_a_torn_stream_and_a_killed_client_leave_the_service_serving(
    served: Served,
) -> None:
    host, port = served.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=START_S) as raw:
        raw.sendall(os.urandom(4096))  # not HTTP/2: the server closes the connection
        while raw.recv(65536):  # (after a GOAWAY, perhaps): the end of the stream comes
            pass
    with socket.create_connection((host, int(port)), timeout=START_S) as raw:
        # the HTTP/2 preface and half a frame header, then gone
        raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x40\x01")
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CLIENT.format(slow=TRIGGERS["slow"]), served.address],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "calling\n"
        child.send_signal(signal.SIGKILL)  # gone mid-call (or before it arrived)
    finally:
        child.wait(START_S)
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    triton = grpcclient.InferenceServerClient(url=served.address)
    try:
        x = torch.ones(2, 4)
        with Client(served.socket) as sock:
            expected = sock.infer(x).output.numpy().tobytes()
        assert _triton_infer(triton, x.numpy()).as_numpy("output").tobytes() == expected
        assert triton.is_server_ready()
    finally:
        triton.close()


# --- the servicer alone: status mapping, bounds (a stand-in supervisor) ---------------------


class _Supervisor:
    """Answers ``2 * x``; raises what ``raises`` holds; blocks while ``gate`` is clear."""

    def __init__(self) -> None:
        self.raises: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def infer(self, x: Any) -> Result:
        self.calls += 1
        self.gate.wait(START_S)
        if self.raises is not None:
            raise self.raises
        return Result(
            2 * x, State.NORMAL, ServedBy.PRIMARY, Outcome.OK, 1, None, "", 0, 0, b"\0" * 16
        )


@pytest.fixture
def local() -> Iterator[tuple[Any, _Supervisor, KServeGrpcServer]]:
    sup = _Supervisor()
    service = KServeGrpc(
        sup, model_name="m", readiness=lambda: True, input_shape=(-1, 2), max_concurrency=1
    )
    server = KServeGrpcServer(service, "127.0.0.1", 0, max_request_bytes=4096, max_concurrency=1)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield pb_grpc.GRPCInferenceServiceStub(channel), sup, server
    finally:
        channel.close()
        server.stop(5.0)


def _request(**fields: Any) -> Any:
    raw = fields.pop("raw", [np.array([1.5, -2.0], np.float32).tobytes()])
    spec = {"name": "input", "datatype": "FP32", "shape": [1, 2], **fields}
    return pb.ModelInferRequest(
        model_name="m",
        inputs=[pb.ModelInferRequest.InferInputTensor(**spec)],
        raw_input_contents=raw,
    )


def _status(stub: Any, request: Any) -> tuple[Any, str]:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=START_S)
    return err.value.code(), err.value.details()


def test_raw_and_typed_contents_are_served_the_same(
    local: tuple[Any, _Supervisor, KServeGrpcServer],
) -> None:
    stub, _, _ = local
    raw = stub.ModelInfer(_request(), timeout=START_S)
    typed = stub.ModelInfer(
        _request(raw=[], contents=pb.InferTensorContents(fp32_contents=[1.5, -2.0])),
        timeout=START_S,
    )
    for answer in (raw, typed):
        assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == [3.0, -4.0]
        assert (answer.outputs[0].name, list(answer.outputs[0].shape)) == ("output", [1, 2])
    ints = stub.ModelInfer(
        _request(raw=[], datatype="INT8", contents=pb.InferTensorContents(int_contents=[3, -4])),
        timeout=START_S,
    )
    assert np.frombuffer(ints.raw_output_contents[0], np.int8).tolist() == [6, -8]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"name": "x"}, D.GRPC_TENSOR_INVALID),
        ({"datatype": "BYTES"}, D.GRPC_TENSOR_INVALID),
        ({"shape": [1, 3]}, D.GRPC_TENSOR_INVALID),
        ({"shape": [1, -2]}, D.GRPC_TENSOR_INVALID),
        ({"shape": [1] * 40}, D.GRPC_TENSOR_INVALID),
        ({"shape": [10**9, 10**9]}, D.GRPC_TENSOR_INVALID),
        # no element, yet torch's strides overflow: refused before torch sees it
        ({"shape": [0, 2**62, 2**62], "raw": [b""]}, D.GRPC_TENSOR_INVALID),
        ({"shape": [0, 2**33], "raw": [b""]}, D.GRPC_TENSOR_INVALID),
        ({"raw": [b"", b""]}, D.GRPC_REQUEST_INVALID),
        ({"raw": []}, D.GRPC_TENSOR_INVALID),  # no contents either
        ({"raw": [], "datatype": "FP16"}, D.GRPC_TENSOR_INVALID),
        (
            {
                "raw": [],
                "datatype": "INT8",
                "contents": pb.InferTensorContents(int_contents=[1, 300]),
            },
            D.GRPC_TENSOR_INVALID,
        ),
    ],
)
def test_a_malformed_request_is_invalid_argument_with_a_code_and_never_reaches_the_model(
    local: tuple[Any, _Supervisor, KServeGrpcServer], fields: dict[str, Any], code: D.Diagnostic
) -> None:
    stub, sup, _ = local
    status, details = _status(stub, _request(**fields))
    assert status == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"{code.code} {code.name}: "), details
    assert sup.calls == 0


def test_status_mapping_unavailable_not_found_draining_and_too_large(
    local: tuple[Any, _Supervisor, KServeGrpcServer],
) -> None:
    stub, sup, server = local
    sup.raises = InvalidInput("input: dim 1 is 3", diagnostic=D.SHAPE_MISMATCH, field="input")
    status, details = _status(stub, _request())  # the code once (it was twice)
    assert (status, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{D.SHAPE_MISMATCH.code} SHAPE_MISMATCH: input: dim 1 is 3",
    )
    sup.raises = Unavailable("SAFE_STOP: no fallback", reason="safe_stop")
    status, details = _status(stub, _request())
    code = Unavailable.diagnostic
    assert (status, details) == (
        grpc.StatusCode.UNAVAILABLE,
        f"{code.code} {code.name}: SAFE_STOP: no fallback",
    )
    sup.raises = None
    status, details = _status(stub, pb.ModelInferRequest(model_name="other"))
    assert status == grpc.StatusCode.NOT_FOUND and D.GRPC_UNKNOWN_MODEL.code in details
    big = _request(raw=[b"\0" * 8192], shape=[1, 2048])
    assert _status(stub, big)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED  # over 4096 bytes
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=START_S).ready
    server.service.drain()
    status, details = _status(stub, _request())
    assert status == grpc.StatusCode.UNAVAILABLE and D.GRPC_DRAINING.code in details
    assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=START_S).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="m"), timeout=START_S).ready
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=START_S).live


def test_over_max_concurrency_is_resource_exhausted_and_a_vanished_client_frees_its_slot(
    local: tuple[Any, _Supervisor, KServeGrpcServer],
) -> None:
    stub, sup, server = local
    sup.gate.clear()  # the first call blocks inside the model
    first = stub.ModelInfer.future(_request(), timeout=START_S)
    assert server.service.wait_for(lambda s: s["in_flight"] == 1, START_S)
    status, details = _status(stub, _request())
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith(f"{D.GRPC_BUSY.code} GRPC_BUSY: ")
    first.cancel()  # the client goes away mid-call; the model's call still ends
    sup.gate.set()
    assert server.service.wait_for(lambda s: s["in_flight"] == 0, START_S)
    answer = stub.ModelInfer(_request(), timeout=START_S)
    assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == [3.0, -4.0]


def test_a_port_in_use_is_a_config_error_with_its_code() -> None:
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service = KServeGrpc(_Supervisor(), model_name="m", readiness=lambda: True)
        with pytest.raises(ServiceConfigError) as err:
            KServeGrpcServer(service, "127.0.0.1", taken.getsockname()[1])
        assert err.value.diagnostic is D.GRPC_BIND
    finally:
        taken.close()


def _config(grpc_table: dict[str, Any], tmp: Path) -> ServeConfig:
    return ServeConfig.from_dict(
        {
            "service": {"socket": "vigil.sock"},
            "log": {"path": "flight.vigil"},
            "model": {"factory": "vigil.testing._models:triggered_model"},
            "supervisor": {"deadline_ms": 100},
            "grpc": grpc_table,
        },
        source="test",
        base_dir=tmp,
    )


def test_the_grpc_section_is_off_by_default_and_validated(tmp_path: Path) -> None:
    assert not _config({}, tmp_path).grpc.enabled
    on = _config({"listen": "[::1]:0", "max_concurrency": 4}, tmp_path).grpc
    assert (on.enabled, on.host, on.port, on.max_concurrency) == (True, "::1", 0, 4)
    for bad in (
        {"listen": "nowhere"},
        {"listen": "127.0.0.1:70000"},
        {"model_name": "a/b"},
        {"max_concurrency": 0},
        {"max_request_mb": 4096},
        {"idle_timeout_s": -1},
    ):
        with pytest.raises(ServiceConfigError) as err:
            _config(bad, tmp_path)
        assert err.value.diagnostic is D.SERVICE_CONFIG_RANGE, bad
    with pytest.raises(ServiceConfigError):
        _config({"listen": "127.0.0.1:0", "port": 1}, tmp_path)  # an unknown key


# --- trace context and rate limits: the same Admission as the HTTP and socket fronts --------

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class _TracedSupervisor(_Supervisor):
    """Also takes the trace keywords, and records refusals as the real one does."""

    def __init__(self) -> None:
        super().__init__()
        self.traces: list[tuple[bytes | None, bytes | None]] = []
        self.refused: list[tuple[str, bytes | None]] = []

    def infer(self, x: Any, **kw: Any) -> Result:  # type: ignore[override]
        self.traces.append((kw.get("trace_id"), kw.get("span_id")))
        return super().infer(x)

    def refuse(self, request_id: Any, reason: str, diagnostic: Any, **kw: Any) -> Any:
        self.refused.append((diagnostic.code, kw.get("trace_id")))
        return b"\1" * 16, 7


def test_grpc_calls_carry_trace_context_and_are_rate_limited_by_class() -> None:
    sup = _TracedSupervisor()
    limits = LimitsSection(
        classes=(LimitClass("standard", 0.001, 1), LimitClass("priority", 0.001, 2)),
        default="standard",
        class_header="x-tenant",
    )
    admission = Admission(sup, limiter=RateLimiter(limits, clock=lambda: 0.0))  # frozen
    counted: list[tuple[bool, Any, bytes | None]] = []  # what the metrics are fed
    service = KServeGrpc(
        sup,
        model_name="m",
        readiness=lambda: True,
        input_shape=(-1, 2),
        admission=admission,
        class_header="X-Tenant",
        on_call=lambda res, err, s, trace: counted.append((res is not None, err, trace)),
    )
    server = KServeGrpcServer(service, "127.0.0.1", 0, max_request_bytes=4096, max_concurrency=4)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    traced = (("traceparent", f"00-{TRACE}-{PARENT}-01"), ("x-tenant", "priority"))
    try:
        answer = stub.ModelInfer(_request(), metadata=traced, timeout=START_S)
        assert answer.parameters["vigil_trace_id"].string_param == TRACE
        assert sup.traces == [(bytes.fromhex(TRACE), bytes.fromhex(PARENT))]
        stub.ModelInfer(_request(), timeout=START_S)  # the standard class's one token
        status, details = _status(stub, _request())
        assert status == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith(f"{D.RATE_LIMITED.code} RATE_LIMITED: "), details
        stub.ModelInfer(_request(), metadata=(("x-tenant", "priority"),), timeout=START_S)
        # an invalid traceparent is ignored (W3C): the call goes on, to the limiter; an
        # unknown class counts against the default class, which is spent
        bad = (("traceparent", "00-not-a-traceparent"), ("x-tenant", "nobody"))
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(_request(), metadata=bad, timeout=START_S)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert sup.refused == [(D.RATE_LIMITED.code, None)] * 2
    finally:
        channel.close()
        server.stop(5.0)
    assert sup.calls == 3 and admission.statistics()["traceparent_ignored"] == 1
    # every request reaches the per-request metrics, refusals with their code
    assert [ok for ok, _, _ in counted] == [True, True, False, True, False]
    assert counted[0][2] == bytes.fromhex(TRACE)
    assert {getattr(err, "diagnostic", None) for ok, err, _ in counted if not ok} == {
        D.RATE_LIMITED
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a8098c1a-f86e-11da-bd1a-00112444be1e", "a8098c1af86e11dabd1a00112444be1e"),
        ("{A8098C1A-F86E-11DA-BD1A-00112444BE1E}", "a8098c1af86e11dabd1a00112444be1e"),
        ("a8098c1af86e11dabd1a00112444be1e", "a8098c1af86e11dabd1a00112444be1e"),
        ("order-17", hashlib.sha256(b"order-17").digest()[:16].hex()),
        ("x" * 5000, hashlib.sha256(b"x" * 5000).digest()[:16].hex()),
        ("", None),
        (None, None),
        (17, None),
    ],
)
def test_a_kserve_request_id_maps_to_the_records_request_id(given: Any, expected: Any) -> None:
    got = request_id_of(given)
    assert (got.hex() if got is not None else None) == expected


def test_a_request_refused_before_it_became_a_call_is_counted_as_refused() -> None:
    """SERVICE.md: vigil_refused_total{front="grpc"} counts an unknown model, a draining
    service and a full max_concurrency, which vigil_requests_total does not."""
    sup = _Supervisor()
    metrics = ServiceMetrics(sup)
    service = KServeGrpc(
        sup,
        model_name="m",
        readiness=lambda: True,
        input_shape=(-1, 2),
        max_concurrency=1,
        on_call=metrics.observe_call,
        on_refused=lambda code: metrics.observe_refusal("grpc", code),
    )
    server = KServeGrpcServer(service, "127.0.0.1", 0, max_request_bytes=4096)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        other = _request()
        other.model_name = "other"
        assert _status(stub, other)[0] == grpc.StatusCode.NOT_FOUND
        assert service._slots.acquire(blocking=False)  # the one slot, taken
        try:
            assert _status(stub, _request())[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            service._slots.release()
        service.drain()
        assert _status(stub, _request())[0] == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
        server.stop(5.0)

    def refused(code: str) -> float | None:
        labels = {"front": "grpc", "code": code}
        return metrics.registry.get_sample_value("vigil_refused_total", labels)

    assert refused(D.GRPC_UNKNOWN_MODEL.code) == 1.0
    assert refused(D.GRPC_BUSY.code) == 1.0
    assert refused(D.GRPC_DRAINING.code) == 1.0
    assert sup.calls == 0


def test_a_malformed_request_is_counted_as_a_protocol_error() -> None:
    """SERVICE.md: every gRPC request, refusals included, is counted in vigil_requests_total;
    a malformed one (DIA-7171) was once not counted at all."""
    sup = _Supervisor()
    service = KServeGrpc(sup, model_name="m", readiness=lambda: True, input_shape=(-1, 2))
    metrics = ServiceMetrics(sup)
    service.on_call = metrics.observe_call
    server = KServeGrpcServer(service, "127.0.0.1", 0, max_request_bytes=4096)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(2):
            status, _ = _status(stub, _request(shape=[1, 3]))
            assert status == grpc.StatusCode.INVALID_ARGUMENT
        stub.ModelInfer(_request(), timeout=START_S)
    finally:
        channel.close()
        server.stop(5.0)

    def count(outcome: str, served_by: str, code: str) -> float | None:
        labels = {"outcome": outcome, "served_by": served_by, "code": code}
        return metrics.registry.get_sample_value("vigil_requests_total", labels)

    assert count("protocol_error", "none", D.GRPC_TENSOR_INVALID.code) == 2.0
    assert count("ok", "primary", "") == 1.0
    assert sup.calls == 1
