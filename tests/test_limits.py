"""Rate limiting (SOP §2.4): token buckets with an injected clock, classes by name and by
trace-id prefix, state bounded whatever clients send, the [limits] configuration and its
codes, and -- through real sockets and many concurrent clients -- a noisy client that cannot
starve a priority one, each refusal a REJECTED record that the state machine never counts."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from werkzeug.test import Client as WsgiClient

from vigil import _diagnostics as D
from vigil.auditlog import LogReader, RingConfig
from vigil.errors import ServiceBusy, ServiceConfigError
from vigil.schemas import RecordType, State
from vigil.service._calls import Admission
from vigil.service._client import Client
from vigil.service._config import ServeConfig
from vigil.service._kserve import KServeApp
from vigil.service._limits import LimitClass, LimitsSection, RateLimiter
from vigil.service._server import SocketServer
from vigil.supervisor import Supervisor

RING = RingConfig(size=4096 + 64 * 32768, segment_size=32768)
PRIORITY_TRACE = "a1b2c3d4" + "0" * 23 + "1"


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def section(default_burst: int = 20, priority_burst: int = 30) -> LimitsSection:
    return LimitsSection(
        classes=(
            LimitClass("standard", rate=10.0, burst=default_burst),
            LimitClass("priority", rate=100.0, burst=priority_burst, trace_prefixes=("a1b2",)),
            LimitClass("vip", rate=5.0, burst=1, trace_prefixes=("a1b2c3d4",)),
        ),
        default="standard",
    )


# --- the buckets ---------------------------------------------------------------------------


def test_a_bucket_gives_its_burst_then_refuses_with_the_wait_until_the_next_token() -> None:
    clock = Clock()
    limiter = RateLimiter(section(default_burst=3), clock=clock)
    waits = [limiter.admit(None, None)[1] for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] == pytest.approx(0.1)  # 10/s
    clock.now += 0.05  # half a token
    assert limiter.admit(None, None)[1] == pytest.approx(0.05)
    clock.now += 0.0625  # the rest of that token, and a little more
    assert limiter.admit(None, None)[1] == 0.0
    clock.now += 3600  # refills to the burst, never beyond it
    assert [limiter.admit(None, None)[1] == 0.0 for _ in range(4)] == [True] * 3 + [False]
    clock.now -= 100  # a clock that goes back gives nothing
    assert limiter.admit(None, None)[1] > 0
    stats = limiter.statistics()["standard"]
    assert (stats["admitted"], stats["refused"]) == (7, 4)


def test_the_class_is_the_named_one_else_the_longest_prefix_else_the_default() -> None:
    limiter = RateLimiter(section())
    tid = bytes.fromhex(PRIORITY_TRACE)
    assert limiter.classify("priority", None).name == "priority"
    assert limiter.classify("standard", tid).name == "standard"  # a named class wins
    assert limiter.classify(None, tid).name == "vip"  # a1b2c3d4 is longer than a1b2
    assert limiter.classify(None, bytes.fromhex("a1b2ff" + "0" * 26)).name == "priority"
    assert limiter.classify("nobody", bytes(16)).name == "standard"
    assert limiter.classify(None, None).name == "standard"


def _flood(admission: Admission, clock: Clock, ids: range) -> None:
    """One call per id: each a distinct trace id and a distinct (unknown) class name."""
    for i in ids:
        tid = i.to_bytes(16, "big").hex()
        call = admission.begin(f"00-{tid[:-1]}1-00f067aa0ba902b7-01", f"tenant-{i}", "http")
        admission.refusal(call, i.to_bytes(16, "big"))
        clock.now += 0.001


def test_the_state_stays_bounded_under_100k_distinct_ids_and_class_names() -> None:
    clock = Clock()
    limiter = RateLimiter(section(), clock=clock)
    admission = Admission(_Refuser(), limiter=limiter)
    before = (dict(limiter._buckets), [dict(t) for _, t in limiter._prefixes])
    _flood(admission, clock, range(1000))  # warm every code path before measuring
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        _flood(admission, clock, range(1000, 11_000))
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    # one object kept per call would be >= 280 KB here; 64 KiB leaves room for free lists
    assert grown < 64 << 10, f"{grown} bytes kept after 10k distinct ids"
    _flood(admission, clock, range(11_000, 101_000))  # untraced: fast
    assert (dict(limiter._buckets), [dict(t) for _, t in limiter._prefixes]) == before
    assert admission.statistics()["traceparent_ignored"] == 0
    stats = limiter.statistics()
    assert sum(s["admitted"] + s["refused"] for s in stats.values()) == 101_000
    assert stats["standard"]["admitted"] + stats["standard"]["refused"] == 101_000


class _Refuser:
    """Records refusals in memory (a stand-in for Supervisor.refuse)."""

    def __init__(self) -> None:
        self.count = 0

    def refuse(self, rid: Any, reason: str, diagnostic: Any, **_: Any) -> tuple[bytes, int]:
        self.count += 1
        return b"\0" * 16, self.count


# --- the configuration -----------------------------------------------------------------------


def _config(limits: dict[str, Any] | None = None, tracing: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {
        "service": {"socket": "/tmp/x.sock"},
        "log": {"path": "/tmp/x.vlog"},
        "model": {"factory": "vigil.testing._models:double"},
        "supervisor": {"deadline_ms": 100},
    }
    if limits is not None:
        data["limits"] = limits
    if tracing is not None:
        data["tracing"] = tracing
    return ServeConfig.from_dict(data)


def test_limits_are_read_from_the_configuration() -> None:
    cfg = _config(
        {
            "default": "std",
            "class_header": "x-tenant",
            "classes": {
                "std": {"rate": 5, "burst": 2},
                "gold": {"rate": 50.5, "burst": 10, "trace_prefixes": ["ab", "ab", "cd01"]},
            },
        }
    )
    assert cfg.limits == LimitsSection(
        classes=(
            LimitClass("std", 5.0, 2),
            LimitClass("gold", 50.5, 10, ("ab", "cd01")),
        ),
        default="std",
        class_header="x-tenant",
    )
    assert not _config().limits.enabled and not _config().tracing.enabled


@pytest.mark.parametrize(
    ("limits", "code", "key"),
    [
        ({"classes": {"a": {"rate": 1, "burst": 1}}}, D.LIMITS_INVALID, "[limits].default"),
        ({"default": "a"}, D.SERVICE_CONFIG_REQUIRED, "[limits].classes"),
        ({"default": "a", "classes": {}}, D.LIMITS_INVALID, "[limits].classes"),
        ({"default": "a", "classes": {"a": {"burst": 1}}}, D.SERVICE_CONFIG_REQUIRED, None),
        ({"default": "a", "classes": {"a": {"rate": 0, "burst": 1}}}, D.SERVICE_CONFIG_RANGE, None),
        ({"default": "a", "classes": {"a": {"rate": 1, "burst": 0}}}, D.SERVICE_CONFIG_RANGE, None),
        (
            {"default": "a", "classes": {"a": {"rate": "1", "burst": 1}}},
            D.SERVICE_CONFIG_TYPE,
            None,
        ),
        ({"default": "a", "classes": {"a": {"rate": 1, "burst": 1, "brust": 2}}}, None, None),
        ({"default": "a", "classes": {"a b": {"rate": 1, "burst": 1}}}, D.LIMITS_INVALID, None),
        (
            {"default": "a", "classes": {"a": {"rate": 1, "burst": 1, "trace_prefixes": ["AB"]}}},
            D.LIMITS_INVALID,
            None,
        ),
        (
            {
                "default": "a",
                "classes": {
                    "a": {"rate": 1, "burst": 1, "trace_prefixes": ["ab"]},
                    "b": {"rate": 1, "burst": 1, "trace_prefixes": ["ab"]},
                },
            },
            D.LIMITS_INVALID,
            None,
        ),
        (
            {"default": "c0", "classes": {f"c{i}": {"rate": 1, "burst": 1} for i in range(65)}},
            D.LIMITS_INVALID,
            None,
        ),
        (
            {"default": "a", "class_header": "x y", "classes": {"a": {"rate": 1, "burst": 1}}},
            D.LIMITS_INVALID,
            None,
        ),
        ({"defualt": "a"}, D.SERVICE_CONFIG_UNKNOWN_KEY, "[limits].defualt"),
    ],
)
def test_bad_limits_are_refused_with_their_code(
    limits: dict[str, Any], code: D.Diagnostic | None, key: str | None
) -> None:
    with pytest.raises(ServiceConfigError) as exc:
        _config(limits)
    assert exc.value.diagnostic is (code or D.SERVICE_CONFIG_UNKNOWN_KEY), exc.value
    if key is not None:
        assert exc.value.context["key"] == key


def test_tracing_is_read_and_checked() -> None:
    cfg = _config(tracing={"enabled": True, "exporter": "console", "service_name": "car-7"})
    assert cfg.tracing.enabled and cfg.tracing.exporter == "console"
    with pytest.raises(ServiceConfigError) as exc:
        _config(tracing={"exporter": "zipkin"})
    assert exc.value.diagnostic is D.SERVICE_CONFIG_RANGE


# --- through real sockets: fairness under load ------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Supervisor, SocketServer, str, Clock]]:
    d = Path(tempfile.mkdtemp(prefix="vgl-"))
    clock = Clock()
    sup = Supervisor(lambda x: x * 2, log=str(tmp_path / "f.vlog"), isolation="inline", ring=RING)
    admission = Admission(sup, limiter=RateLimiter(section(), clock=clock))
    server = SocketServer(sup, d / "s.sock", read_timeout_s=10.0, admission=admission)
    server.start()
    yield sup, server, str(d / "s.sock"), clock
    server.stop(5.0)
    sup.close()
    shutil.rmtree(d, ignore_errors=True)


def _hammer(path: str, n: int, start: threading.Barrier, **kw: Any) -> tuple[int, list[str]]:
    """``n`` calls on one connection: how many were served, and the codes of the refusals."""
    with Client(path, timeout_s=30.0) as c:
        start.wait()
        codes = [_one(c, kw) for _ in range(n)]
    return codes.count(None), [code for code in codes if code is not None]


def _one(c: Client, kw: dict[str, Any]) -> str | None:
    """None when served, else the refusal's code."""
    try:
        c.infer(torch.ones(2), **kw)
    except ServiceBusy as exc:
        return exc.code
    return None


def test_a_noisy_class_cannot_starve_a_priority_client_under_load(
    limited: tuple[Supervisor, SocketServer, str, Clock],
) -> None:
    sup, server, path, clock = limited
    noisy_clients, per_noisy, priority_calls = 8, 40, 30
    results: dict[str, list[tuple[int, list[str]]]] = {"noisy": [], "priority": []}
    lock = threading.Lock()
    start = threading.Barrier(noisy_clients + 2)

    def run(kind: str, n: int, **kw: Any) -> None:
        out = _hammer(path, n, start, **kw)
        with lock:
            results[kind].append(out)

    threads = [threading.Thread(target=run, args=("noisy", per_noisy)) for _ in range(8)]
    threads.append(
        threading.Thread(target=run, args=("priority", 15), kwargs={"rate_class": "priority"})
    )
    threads.append(
        threading.Thread(
            target=run,  # the same class, chosen by the trace id's prefix a1b2
            args=("priority", 15),
            kwargs={"traceparent": "00-a1b2ffff" + "0" * 23 + "1-00f067aa0ba902b7-01"},
        )
    )
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    noisy_served = sum(s for s, _ in results["noisy"])
    noisy_refused = [c for _, r in results["noisy"] for c in r]
    assert sum(s for s, _ in results["priority"]) == priority_calls  # every one served
    assert not any(r for _, r in results["priority"])
    assert noisy_served == 20  # the default class's burst, exactly: the clock stood still
    assert noisy_refused == [D.RATE_LIMITED.code] * (noisy_clients * per_noisy - 20)
    # time passes: one second of the standard class's rate comes back, no more
    clock.now += 1.0
    again = _hammer(path, 15, threading.Barrier(1))
    assert again == (10, [D.RATE_LIMITED.code] * 5)
    stats = sup.statistics()
    assert stats.machine.state is State.NORMAL
    assert server.statistics()["rate_limited"] == noisy_clients * per_noisy - 20 + 5
    server.stop(5.0)
    sup.close()
    with LogReader(sup.log.path) as r:
        assert r.verify().intact
        records = list(r.records())
    rejected = [x for x in records if x.type is RecordType.REJECTED]
    inferences = [x for x in records if x.type is RecordType.INFERENCE]
    assert len(inferences) == 20 + priority_calls + 10
    assert len(rejected) == noisy_clients * per_noisy - 20 + 5
    assert {x.body["code"] for x in rejected} == {D.RATE_LIMITED.number}
    assert not [x for x in records if x.type is RecordType.TRANSITION]  # never a model failure


def test_a_refusal_keeps_the_connection_and_names_its_record(
    limited: tuple[Supervisor, SocketServer, str, Clock],
) -> None:
    sup, _, path, _ = limited
    rid = bytes(range(16))
    with Client(path, timeout_s=10.0) as c:
        for _ in range(section().classes[2].burst):
            c.infer(torch.ones(1), traceparent=f"00-{PRIORITY_TRACE}-00f067aa0ba902b7-01")
        with pytest.raises(ServiceBusy) as exc:
            c.infer(torch.ones(1), request_id=rid, rate_class="vip")
        assert exc.value.diagnostic is D.RATE_LIMITED and "'vip'" in exc.value.message
        c.infer(torch.ones(1))  # the same connection serves on
    sup.close()
    with LogReader(sup.log.path) as r:
        rejected = [x for x in r.records() if x.type is RecordType.REJECTED]
    assert len(rejected) == 1 and rejected[0].body["request_id"] == rid


# --- over HTTP ---------------------------------------------------------------------------------


def test_http_answers_429_with_retry_after_and_the_refusal_is_recorded(tmp_path: Path) -> None:
    clock = Clock()
    sup = Supervisor(lambda x: x * 2, log=str(tmp_path / "h.vlog"), isolation="inline", ring=RING)
    limiter = RateLimiter(section(default_burst=1), clock=clock)
    kapp = KServeApp(
        sup,
        model_name="m",
        readiness=lambda: True,
        admission=Admission(sup, limiter=limiter),
        class_header="x-tenant",
    )
    client = WsgiClient(kapp)
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    )
    assert client.post("/v2/models/m/infer", data=body).status_code == 200
    r = client.post("/v2/models/m/infer", data=body)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert json.loads(r.get_data())["error"].startswith("DIA-2021 RATE_LIMITED: rate limited")
    r = client.post("/v2/models/m/infer", data=body, headers={"X-Tenant": "priority"})
    assert r.status_code == 200
    sup.close()
    with LogReader(sup.log.path) as rd:
        kinds = [(x.type, x.body.get("code")) for x in rd.records()]
    assert kinds.count((RecordType.REJECTED, D.RATE_LIMITED.number)) == 1


def test_refuse_records_from_many_threads_and_the_state_machine_never_sees_it(
    tmp_path: Path,
) -> None:
    sup = Supervisor(lambda x: x, log=str(tmp_path / "r.vlog"), isolation="inline", ring=RING)
    before = sup.statistics().machine
    results: list[tuple[bytes, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def refuse(k: int) -> None:
        start.wait()
        for i in range(50):
            rid = None if i % 2 else bytes([k, i]) * 8
            got = sup.refuse(rid, f"t{k} #{i}", D.RATE_LIMITED, trace_id=bytes(16))
            with lock:
                results.append(got)

    threads = [threading.Thread(target=refuse, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = sup.statistics()
    assert after.machine == before  # no call, no failure, no transition counted
    assert after.rejected == 400 and after.calls == 0
    assert len({seq for _, seq in results}) == 400 and len({r for r, _ in results}) == 400
    sup.close()
    with LogReader(sup.log.path) as r:
        assert r.verify().intact
        rejected = {x.seq: x.body for x in r.records() if x.type is RecordType.REJECTED}
    assert set(rejected) == {seq for _, seq in results}
    assert all(b["code"] == D.RATE_LIMITED.number for b in rejected.values())
    assert all(b["input_digest"] == bytes(32) for b in rejected.values())
    assert {b["request_id"] for b in rejected.values()} == {r for r, _ in results}


def test_tracing_without_opentelemetry_is_refused_with_its_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from vigil.service._tracing import Spans, TracingSection

    for name in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.trace"):
        monkeypatch.setitem(sys.modules, name, None)
    assert not _config().tracing.enabled  # off: nothing is imported, nothing needed
    with pytest.raises(ServiceConfigError) as exc:
        _config(tracing={"enabled": True})
    assert exc.value.diagnostic is D.TRACING_EXTRA_MISSING
    with pytest.raises(ServiceConfigError) as exc:
        Spans(TracingSection(enabled=True))
    assert exc.value.diagnostic is D.TRACING_EXTRA_MISSING
