"""``vigil serve`` end to end, as real processes: the service, its workers, clients, systemd.

The service runs as ``python -m vigil serve --config FILE`` with ``NOTIFY_SOCKET`` pointing
at a datagram socket this test reads (READY, WATCHDOG, STOPPING arrive as systemd would get
them). The model is :func:`vigil.testing._models.triggered_model`, whose input selects a fault.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil.auditlog import LogReader
from vigil.cli import main
from vigil.schemas import LifecycleEvent, Outcome, RecordType, ServedBy
from vigil.service._client import Client
from vigil.testing._models import TRIGGERS

START_S = 120.0

CONFIG = """
[service]
socket = "vigil.sock"
drain_timeout_s = 10

[log]
path = "flight.vigil"
segment_kb = 256
segments = 8
durability = "batch"

[model]
factory = "vigil.testing._models:triggered_model"

[model.input]
dtype = "float32"
shape = [-1, 4]

[workers]
heartbeat_ms = 50
heartbeat_timeout_ms = 5000

[supervisor]
deadline_ms = 2000
fallback = ["constant"]
constant_value = 0.0
constant_shape = [1, 4]

[supervisor.policy]
cooldown_ms = 60000

[metrics]
listen = "127.0.0.1:0"
"""


class Service:
    """A ``vigil serve`` process and what it told systemd."""

    def __init__(self, tmp: Path, config: str = CONFIG) -> None:
        self.dir = tmp
        (tmp / "vigil.toml").write_text(config)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp / "notify"))
        # read continuously, as systemd does: a full queue would drop the service's messages
        self.messages: list[str] = []
        self._arrived = threading.Condition()
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp / "notify"), "WATCHDOG_USEC": "200000"}
        env["WATCHDOG_PID"] = ""  # set below, once the pid is known; '' = any
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vigil", "serve", "--config", str(tmp / "vigil.toml")],
            stdout=subprocess.PIPE,
            text=True,
            env={k: v for k, v in env.items() if k != "WATCHDOG_PID"},
            cwd=tmp,
        )
        try:
            assert self.proc.stdout is not None
            self.banner = self.proc.stdout.readline()
            assert "serving on" in self.banner, self.banner
            self.metrics_url = self.banner.rsplit("metrics on ", 1)[1].strip()
            self.wait_for("READY=1")
        except BaseException:
            self.close()
            raise

    def _listen(self) -> None:
        while True:
            try:
                message = self.notify.recv(4096).decode()
            except OSError:  # closed
                return
            if not message:  # shut down by close()
                return
            with self._arrived:
                self.messages.append(message)
                self._arrived.notify_all()

    def wait_for(self, text: str, *, whole_line: bool = True) -> None:
        def seen() -> bool:
            return any(text in m.split("\n") if whole_line else text in m for m in self.messages)

        with self._arrived:
            assert self._arrived.wait_for(seen, START_S), f"systemd never got {text!r}"

    def pings_within(self, seconds: float) -> int:
        """WATCHDOG=1 messages that arrive within the next ``seconds``."""
        with self._arrived:
            start = len(self.messages)
            self._arrived.wait_for(lambda: False, seconds)
            return sum("WATCHDOG=1" in m for m in self.messages[start:])

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=10) as r:
            for row in r.read().decode().splitlines():
                if row.startswith(name + " ") or row.startswith(name + "{"):
                    return float(row.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not exported")

    def healthz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.metrics_url + "/healthz", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(START_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        with contextlib.suppress(OSError):
            self.notify.shutdown(socket.SHUT_RDWR)  # wakes the listener's recv
        self._listener.join(START_S)
        self.notify.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_serve_answers_fails_over_and_drains_on_sigterm(service: Service) -> None:
    sock = service.dir / "vigil.sock"
    with Client(sock) as client:
        good = client.infer(torch.ones(1, 4))
        assert good.served_by is ServedBy.PRIMARY and torch.equal(good.output, torch.ones(1, 4) * 2)
        assert client.health()["state"] == "NORMAL"
        assert service.healthz()[0] == 200
        service.wait_for("WATCHDOG=1")  # healthy: systemd's watchdog is fed
        active = int(service.metric("vigil_worker_active_pid"))
        standby = int(service.metric("vigil_worker_standby_pid"))
        # a hung call: the worker is SIGKILLed from outside while it runs the call
        answers: list[Any] = []
        hang = torch.full((1, 4), TRIGGERS["hang"])
        caller = threading.Thread(target=lambda: answers.append(client.infer(hang)))
        caller.start()
        _wait_busy(service)
        os.kill(active, signal.SIGKILL)
        caller.join(START_S)
        (lost,) = answers
        assert lost.outcome is Outcome.WORKER_LOST and lost.served_by is ServedBy.CONSTANT
        assert lost.latency_ns < 2_000_000_000  # within the deadline
        assert int(service.metric("vigil_worker_active_pid")) == standby
        status, body = service.healthz()
        assert (status, body["state"], body["degraded"]) == (200, "DEGRADED", True)
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(START_S) == 0
    service.wait_for("STOPPING=1")
    with LogReader(service.dir / "flight.vigil") as r:
        report = r.verify()
        assert report.intact, report.findings
        recs = list(r.records())
    assert recs[-1].type is RecordType.LIFECYCLE
    assert recs[-1].body["event"] is LifecycleEvent.CLOSED
    events = [x.body["event"] for x in recs if x.type is RecordType.LIFECYCLE]
    assert LifecycleEvent.WORKER_LOST in events and LifecycleEvent.WORKER_PROMOTED in events
    outcomes = [x.body["outcome"] for x in recs if x.type is RecordType.INFERENCE]
    assert outcomes == [Outcome.OK, Outcome.WORKER_LOST]


def _wait_busy(service: Service) -> None:
    """Wait until the serving worker is inside a call (the pool's shared-memory flag)."""
    ready = threading.Event()
    for _ in range(int(START_S / 0.005)):
        if service.metric("vigil_worker_busy") == 1:
            return
        ready.wait(0.005)
    raise AssertionError("the worker never started the call")


def _client_process(sock: str, n: int, index: int, out: Any) -> None:
    with Client(sock) as client:
        seqs = []
        for i in range(n):
            r = client.infer(torch.full((1, 4), float(index * 1000 + i)))
            assert r.served_by is ServedBy.PRIMARY
            assert float(r.output[0, 0]) == 2.0 * (index * 1000 + i)
            seqs.append(r.seq)
        out.put((index, seqs))


@pytest.mark.slow
def test_four_client_processes_every_request_answered_and_logged(service: Service) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    n = 50
    procs = [
        ctx.Process(target=_client_process, args=(str(service.dir / "vigil.sock"), n, i, out))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=START_S) for _ in procs)
    for p in procs:
        p.join(START_S)
        assert p.exitcode == 0
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(START_S) == 0
    with LogReader(service.dir / "flight.vigil") as r:
        assert r.verify().intact
        seqs = {x.seq for x in r.records() if x.type is RecordType.INFERENCE}
    answered = {s for v in results.values() for s in v}
    assert len(answered) == 4 * n and answered == seqs


@pytest.mark.slow
def test_safe_stop_withholds_the_watchdog_and_health_says_why(tmp_path: Path) -> None:
    config = CONFIG.replace("cooldown_ms = 60000", "cooldown_ms = 1\nmax_failed_recoveries = 0")
    service = Service(tmp_path, config)
    try:
        service.wait_for("WATCHDOG=1")
        crash = torch.full((1, 4), TRIGGERS["crash"])
        with Client(service.dir / "vigil.sock") as client:
            first = client.infer(crash)  # NORMAL -> DEGRADED
            assert first.outcome is Outcome.WORKER_LOST
            for _ in range(50):  # a probe on the promoted worker crashes it too: SAFE_STOP
                if client.health()["state"] == "SAFE_STOP":
                    break
                _wait_standby(service)
                client.infer(crash)
            assert client.health()["state"] == "SAFE_STOP"
            answer = client.infer(torch.ones(1, 4))  # still answered, by the fallback
            assert answer.served_by is ServedBy.CONSTANT
        status, body = service.healthz()
        assert (status, body["status"]) == (503, "stopped")
        service.wait_for("DIA-7212 WATCHDOG_WITHHELD: SAFE_STOP", whole_line=False)
        assert service.pings_within(0.5) == 0  # five pinger periods: not one ping
    finally:
        service.close()


def _wait_standby(service: Service) -> None:
    ready = threading.Event()
    for _ in range(int(START_S / 0.01)):
        if service.metric("vigil_worker_standby_ready") == 1:
            return
        ready.wait(0.01)
    raise AssertionError("no standby came back")


def test_serve_check_validates_without_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).parent.parent / "examples" / "vigil.toml"
    assert main(["serve", "--check", "--config", str(example)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.replace("deadline_ms = 2000", "deadline_ms = -3"))
    assert main(["serve", "--check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "DIA-7206" in err and "[supervisor].deadline_ms" in err
    assert not (tmp_path / "flight.vigil").exists()  # nothing was opened
