"""The operational layer of ``vigil serve``: metrics, health endpoints, systemd notify/watchdog.

No test sleeps: HTTP requests and datagrams are awaited on their sockets, time is a FakeClock,
and the watchdog thread is driven through an injected ``wait``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from vigil import _diagnostics as D
from vigil.errors import InvalidArgument, InvalidInput, ServiceConfigError, Unavailable
from vigil.fsm import Policy
from vigil.schemas import ServedBy, State
from vigil.service._metrics import Health, HealthServer, ServiceMetrics
from vigil.service._systemd import SystemdNotifier, WatchdogPinger, watchdog_interval_s
from vigil.supervisor import Constant, Supervisor

from conftest import SMALL, FakeClock

MS = 1_000_000
POLICY = Policy(
    consecutive_failures=2,
    window=10,
    min_calls=5,
    cooldown_ns=100 * MS,
    probes_required=1,
    probe_mode="live",
    max_failed_recoveries=0,  # the first failed recovery ends in SAFE_STOP
)
X = torch.ones(2)


class Flaky:
    """A primary that doubles its input, or raises while ``fail`` is set."""

    def __init__(self) -> None:
        self.fail = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("primary broke")
        return x * 2


class Rig:
    def __init__(self, tmp_path: Path, *, fallback: bool = True, pool: Any = None) -> None:
        self.clock = FakeClock()
        self.primary = Flaky()
        self.sup = Supervisor(
            self.primary,
            log=str(tmp_path / "flight.vigil"),
            ring=SMALL,
            clock=self.clock,
            policy=POLICY,
            isolation="inline",
            durability="always",  # durable_seq == head_seq at every scrape, no flusher race
            fallback=Constant(torch.zeros(2)) if fallback else None,
        )
        self.fallback = fallback
        self.ready = True
        self.draining = False
        self.metrics = ServiceMetrics(self.sup, pool=pool)
        self.server = HealthServer("127.0.0.1", 0, self.metrics, self.health)

    def health(self) -> Health:
        return Health.of(self.sup, ready=self.ready, draining=self.draining, fallback=self.fallback)

    def call(self) -> Any:
        """One request as the socket server makes it: infer, then observe_call."""
        try:
            result = self.sup.infer(X)
        except Unavailable as exc:
            self.metrics.observe_call(None, exc, 0.002)
            return None
        self.metrics.observe_call(result, None, 0.0003)
        return result

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.server.url + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read()

    def health_json(self, path: str) -> tuple[int, dict[str, Any]]:
        code, body = self.get(path)
        return code, json.loads(body)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, body = self.get("/metrics")
        assert code == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    def close(self) -> None:
        self.server.close()
        self.sup.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Any]:
    made: list[Rig] = []

    def make(**kw: Any) -> Rig:
        r = Rig(tmp_path / str(len(made)), **kw)
        made.append(r)
        return r

    for i in range(3):
        (tmp_path / str(i)).mkdir()
    yield make
    for r in made:
        r.close()


def value(scrape: dict[Any, float], name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


def states(scrape: dict[Any, float]) -> dict[str, float]:
    return {st.name: value(scrape, "vigil_state", state=st.name) or 0.0 for st in State if st}


def trip(r: Rig) -> None:
    """Three good calls, then two failures: NORMAL -> DEGRADED."""
    for _ in range(3):
        assert r.call().served_by is ServedBy.PRIMARY
    r.primary.fail = True
    for _ in range(2):
        res = r.call()
        if r.fallback:
            assert res.served_by is ServedBy.CONSTANT
    assert r.sup.state is State.DEGRADED


def safe_stop(r: Rig) -> None:
    """After trip(): the cooldown passes, the probe fails, recovery gives up."""
    r.clock.advance(100 * MS)
    r.call()
    assert r.sup.state is State.SAFE_STOP


# --- metrics -------------------------------------------------------------------------------


def test_scrape_reflects_real_calls_into_degraded(rig: Any) -> None:
    r = rig()
    s = r.scrape()
    assert states(s) == {"NORMAL": 1.0, "DEGRADED": 0.0, "RECOVERING": 0.0, "SAFE_STOP": 0.0}
    assert value(s, "vigil_calls_total") == 0.0

    trip(r)
    s = r.scrape()
    assert states(s) == {"NORMAL": 0.0, "DEGRADED": 1.0, "RECOVERING": 0.0, "SAFE_STOP": 0.0}
    assert value(s, "vigil_calls_total") == 5.0
    assert value(s, "vigil_calls_by_outcome_total", outcome="OK") == 3.0
    assert value(s, "vigil_calls_by_outcome_total", outcome="ERROR") == 2.0
    assert value(s, "vigil_served_total", served_by="PRIMARY") == 3.0
    assert value(s, "vigil_served_total", served_by="CONSTANT") == 2.0
    assert value(s, "vigil_fallbacks_total") == 2.0
    assert value(s, "vigil_unavailable_total") == 0.0
    assert value(s, "vigil_rejected_total") == 0.0
    assert value(s, "vigil_transitions_total") == 1.0
    assert value(s, "vigil_hung_calls") == 0.0
    assert value(s, "vigil_primary_dead") == 0.0
    assert value(s, "vigil_consecutive_failures") == 2.0
    log = r.sup.log.statistics()
    assert value(s, "vigil_log_head_seq") == float(log.head_seq) == float(r.sup.log.head_seq)
    assert value(s, "vigil_log_durable_seq") == float(log.durable_seq) == float(log.head_seq)
    assert value(s, "vigil_log_wear_min") == float(log.wear_min)
    assert value(s, "vigil_log_wear_max") == float(log.wear_max) >= 1.0
    # the per-request series
    assert value(s, "vigil_requests_total", outcome="ok", served_by="primary", code="") == 3.0
    failed = ("vigil_requests_total", (("code", D.MODEL_ERROR.code), ("outcome", "error")))
    assert s[(failed[0], (*failed[1], ("served_by", "constant")))] == 2.0
    assert value(s, "vigil_request_duration_seconds_count") == 5.0
    assert value(s, "vigil_request_duration_seconds_bucket", le="0.00025") == 0.0
    assert value(s, "vigil_request_duration_seconds_bucket", le="0.0005") == 5.0
    assert value(s, "vigil_scrape_errors_total", part="supervisor") is None


def test_unavailable_and_rejected_requests_are_counted(rig: Any) -> None:
    r = rig(fallback=False)
    trip(r)
    assert r.call() is None  # DEGRADED with no fallback: Unavailable
    r.metrics.observe_call(None, InvalidInput("bad shape"), 0.0001)
    r.metrics.observe_call(None, OSError("peer went away"), 0.0001)
    s = r.scrape()
    assert value(s, "vigil_unavailable_total") == 3.0  # two failed calls and one refused
    assert value(s, "vigil_fallbacks_total") == 0.0
    unavailable = value(
        s, "vigil_requests_total", outcome="unavailable", served_by="none", code="DIA-4009"
    )
    assert unavailable == 3.0
    assert value(s, "vigil_requests_total", outcome="rejected", served_by="none", code="DIA-2047")
    assert value(s, "vigil_requests_total", outcome="error", served_by="none", code="") == 1.0


def test_pool_statistics_are_exported(rig: Any) -> None:
    stats = SimpleNamespace(
        active_pid=4242,
        standby_pid=None,
        standby_ready=False,
        restarts=2,
        failovers=1,
        last_heartbeat_age_ns=250 * MS,
    )
    r = rig(pool=SimpleNamespace(statistics=lambda: stats))
    s = r.scrape()
    assert value(s, "vigil_worker_active_pid") == 4242.0
    assert value(s, "vigil_worker_standby_pid") == 0.0
    assert value(s, "vigil_worker_standby_ready") == 0.0
    assert value(s, "vigil_worker_restarts_total") == 2.0
    assert value(s, "vigil_worker_failovers_total") == 1.0
    assert value(s, "vigil_worker_heartbeat_age_seconds") == 0.25


def test_a_failing_collector_part_does_not_break_the_scrape(rig: Any) -> None:
    def broken() -> Any:
        raise RuntimeError("pool statistics unavailable")

    r = rig(pool=SimpleNamespace(statistics=broken))
    for n in (1.0, 2.0):
        s = r.scrape()
        assert value(s, "vigil_scrape_errors_total", part="pool") == n
        assert states(s)["NORMAL"] == 1.0  # the other parts are all there
        assert value(s, "vigil_log_head_seq") is not None
        assert value(s, "vigil_worker_active_pid") is None


def test_a_failing_supervisor_leaves_the_other_parts() -> None:
    class Broken:
        log = SimpleNamespace(statistics=lambda: 1 / 0)

        def statistics(self) -> Any:
            raise RuntimeError("lock poisoned")

    m = ServiceMetrics(Broken(), registry=CollectorRegistry())
    m.observe_call(None, None, 0.001)
    text = m.generate().decode()
    assert 'vigil_scrape_errors_total{part="supervisor"} 1.0' in text
    assert 'vigil_scrape_errors_total{part="log"} 1.0' in text
    assert "vigil_request_duration_seconds_count 1.0" in text
    assert "vigil_state" not in text


def test_metrics_use_their_own_registry(rig: Any) -> None:
    from prometheus_client import REGISTRY

    r = rig()
    assert r.metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("vigil_calls_total") is None


# --- health ----------------------------------------------------------------------------------


def test_health_follows_the_state_machine(rig: Any) -> None:
    r = rig()
    code, body = r.health_json("/healthz")
    assert code == 200
    assert body == {
        "state": "NORMAL",
        "ready": True,
        "draining": False,
        "fallback": True,
        "primary_dead": False,
        "workers_alive": True,
        "reason": "",
        "status": "ok",
        "degraded": False,
    }
    assert r.health_json("/readyz")[0] == 200

    trip(r)  # DEGRADED, a fallback answers: healthy but degraded
    for path in ("/healthz", "/readyz"):
        code, body = r.health_json(path)
        assert (code, body["state"], body["status"], body["degraded"]) == (
            200,
            "DEGRADED",
            "degraded",
            True,
        )

    safe_stop(r)  # SAFE_STOP: 503 always
    for path in ("/healthz", "/readyz"):
        code, body = r.health_json(path)
        assert (code, body["state"], body["status"]) == (503, "SAFE_STOP", "stopped")
    assert r.health().alive() == (False, "SAFE_STOP: recovery kept failing")


def test_degraded_without_fallback_is_unhealthy(rig: Any) -> None:
    r = rig(fallback=False)
    trip(r)
    code, body = r.health_json("/healthz")
    assert (code, body["status"], body["degraded"]) == (503, "unavailable", True)
    assert r.health().alive()[0]  # it recovers by itself: the watchdog keeps pinging


def test_readiness_waits_for_ready_and_ends_with_draining(rig: Any) -> None:
    r = rig()
    r.ready = False
    assert r.health_json("/healthz")[0] == 200
    code, body = r.health_json("/readyz")
    assert (code, body["status"]) == (503, "not_ready")
    r.ready = True
    assert r.health_json("/readyz")[0] == 200
    r.draining = True
    code, body = r.health_json("/readyz")
    assert (code, body["status"]) == (503, "draining")


def test_dead_worker_pool_and_primary_dead_are_reported() -> None:
    h = Health(State.DEGRADED, ready=True, fallback=True, primary_dead=True, workers_alive=False)
    assert h.trustworthy() == (False, "no model worker is left")
    assert h.alive() == (False, "no model worker is left: the pool is dead")
    code, body = h.to_json(readiness=False)
    assert (code, body["primary_dead"], body["workers_alive"]) == (503, True, False)


def test_a_raising_health_fn_fails_closed_and_404(rig: Any) -> None:
    r = rig()

    def broken() -> Health:
        raise RuntimeError("no verdict")

    with HealthServer("127.0.0.1", 0, r.metrics, broken) as srv:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(srv.url + "/healthz", timeout=5)
        with info.value as err:
            assert err.code == 503
            assert "no verdict" in json.loads(err.read())["reason"]
    assert r.get("/nope")[0] == 404


def test_port_in_use_is_dia_7210(rig: Any) -> None:
    r = rig()
    with pytest.raises(ServiceConfigError) as info:
        HealthServer("127.0.0.1", r.server.port, r.metrics, r.health)
    assert info.value.code == "DIA-7210"
    assert r.server.port > 0


# --- systemd ---------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def notifier(notify_socket: socket.socket) -> Iterator[SystemdNotifier]:
    with SystemdNotifier() as n:
        yield n


def nothing_pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_notifier_sends_exact_datagrams(notify_socket: socket.socket) -> None:
    n = SystemdNotifier()
    assert n.enabled
    n.ready("serving on /run/vigil.sock")
    n.status("state DEGRADED:\nprimary broke")
    n.watchdog()
    n.extend_timeout(1.5)
    n.stopping("draining 3 requests")
    got = [notify_socket.recv(4096) for _ in range(5)]
    assert got == [
        b"READY=1\nSTATUS=serving on /run/vigil.sock",
        b"STATUS=state DEGRADED: primary broke",
        b"WATCHDOG=1",
        b"EXTEND_TIMEOUT_USEC=1500000",
        b"STOPPING=1\nSTATUS=draining 3 requests",
    ]
    n.close()
    n.watchdog()  # closed: a no-op
    assert nothing_pending(notify_socket)


def test_a_reader_that_stops_reading_never_blocks_the_notifier(
    notifier: SystemdNotifier, notify_socket: socket.socket
) -> None:
    # the receiver's queue fills up (nobody reads): each send must return, dropping the ping;
    # a blocking send here would freeze the watchdog thread and with it the shutdown
    done = threading.Event()

    def flood() -> None:
        for _ in range(5000):
            notifier.watchdog()
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(30), "notify blocked on a full socket"
    received = 0
    notify_socket.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while notify_socket.recv(4096):
            received += 1
    assert 0 < received < 5000  # the queue held some; the rest were dropped, not waited for


def test_notifier_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"vigil-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        with SystemdNotifier(True) as n:
            n.ready()
        assert sock.recv(4096) == b"READY=1"


def test_notifier_enablement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    auto = SystemdNotifier("auto")
    assert not auto.enabled
    auto.ready("no systemd: nothing is sent, nothing raises")
    with pytest.raises(ServiceConfigError) as info:
        SystemdNotifier(True)
    assert info.value.code == "DIA-7211"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
    assert not SystemdNotifier("auto").enabled
    assert not SystemdNotifier(False).enabled
    with pytest.raises(ServiceConfigError) as info:
        SystemdNotifier(True)
    assert info.value.code == "DIA-7211"


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert watchdog_interval_s({}) is None
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(InvalidArgument, match="interval_s"):
            WatchdogPinger(SystemdNotifier(False), bad, lambda: (True, ""))
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": me}) == 1.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None


def test_pinger_withholds_pings_while_unhealthy(
    notify_socket: socket.socket, notifier: SystemdNotifier
) -> None:
    verdicts = iter(
        [(True, "NORMAL"), (False, "SAFE_STOP: x"), (False, "SAFE_STOP: x"), (True, "reset")]
    )
    p = WatchdogPinger(notifier, 1.0, lambda: next(verdicts))
    assert p.tick()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert not p.tick()
    assert notify_socket.recv(4096) == (
        b"STATUS=DIA-7212 WATCHDOG_WITHHELD: SAFE_STOP: x; "
        b"systemd restarts the unit after WatchdogSec"
    )
    assert p.withheld == "SAFE_STOP: x"
    assert not p.tick()  # the status is sent once, and still no ping
    assert nothing_pending(notify_socket)
    assert p.tick()  # an operator reset: pings resume
    assert notify_socket.recv(4096) == b"STATUS=watchdog resumed: reset"
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert (p.pings, p.withheld) == (2, None)


def test_pinger_fails_closed_on_a_raising_health_check(
    notify_socket: socket.socket, notifier: SystemdNotifier
) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("deadlock detector fired")

    p = WatchdogPinger(notifier, 1.0, broken)
    assert not p.tick()
    assert b"health check failed" in notify_socket.recv(4096)
    assert p.pings == 0


def test_pinger_thread_ticks_until_told_to_stop(
    notify_socket: socket.socket, notifier: SystemdNotifier
) -> None:
    waits: list[float] = []

    def wait(seconds: float) -> bool:  # the injected sleep: a third wait ends the thread
        waits.append(seconds)
        return len(waits) == 3

    p = WatchdogPinger(notifier, 0.5, lambda: (True, "ok"), wait=wait)
    p.start()
    assert [notify_socket.recv(4096) for _ in range(3)] == [b"WATCHDOG=1"] * 3
    p.close()
    assert waits == [0.5, 0.5, 0.5]
    assert p.pings == 3
    assert nothing_pending(notify_socket)
    with pytest.raises(ValueError, match="interval_s"):
        WatchdogPinger(notifier, 0, lambda: (True, ""))


def test_pinger_stops_in_safe_stop(
    rig: Any, notify_socket: socket.socket, notifier: SystemdNotifier
) -> None:
    r = rig()
    p = WatchdogPinger(notifier, 1.0, lambda: r.health().alive())
    assert p.tick()
    trip(r)
    assert p.tick()  # DEGRADED recovers by itself: keep pinging
    safe_stop(r)
    assert not p.tick()
    got = [notify_socket.recv(4096) for _ in range(3)]
    assert got[:2] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    assert got[2].startswith(b"STATUS=DIA-7212 WATCHDOG_WITHHELD: SAFE_STOP")
    assert not p.tick()
    assert nothing_pending(notify_socket)


def test_every_series_is_documented(rig: Any) -> None:
    stats = SimpleNamespace(
        active_pid=1,
        standby_pid=2,
        standby_ready=True,
        restarts=0,
        failovers=0,
        last_heartbeat_age_ns=1,
    )
    r = rig(pool=SimpleNamespace(statistics=lambda: stats))
    r.call()
    docs = (Path(__file__).resolve().parent.parent / "docs" / "SERVICE.md").read_text()
    names = {name for name, _ in r.scrape()}
    for name in names:
        base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        if not base.endswith("_created"):
            assert f"`{base}" in docs, name
