"""The worker pool under load and loss: a worker is judged on its own run time, overload is
refused before any worker sees it, N active workers serve side by side, losing every worker
reaches the state machine and health, and the monitor's and close()'s races.

Tests with real workers start spawned processes (about 2 s each for torch to import); the
model is :func:`vigil.testing._models.triggered_model` (``slow`` runs for ``x[1]`` ms).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import LogReader
from vigil.errors import RemoteModelError, WorkerBusy, WorkerLost, WorkerUnavailable
from vigil.fsm import Policy
from vigil.schemas import Outcome, RecordType, ServedBy, State
from vigil.service._config import ServeConfig
from vigil.service._metrics import Health
from vigil.service._service import Service
from vigil.supervisor import Constant, Supervisor
from vigil.supervisor._replay import replay
from vigil.testing._models import TRIGGERS
from vigil.workers import _pool as W
from vigil.workers._pool import WorkerEvent, WorkerPool, WorkerSpec
from vigil.workers._shm import _HEADER_SIZE, _SharedArea

from conftest import FakeClock

SPEC = WorkerSpec(
    factory="vigil.testing._models:triggered_model",
    warmup_input=torch.ones(1, 4),
    threads=1,
)
GOOD = torch.ones(1, 4)
START_S = 120.0
POLICY = Policy(consecutive_failures=1, cooldown_ns=1_000_000_000, probes_required=1)


def slow(ms: float) -> torch.Tensor:
    x = torch.zeros(1, 4)
    x[0, 0], x[0, 1] = TRIGGERS["slow"], ms
    return x


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


# --- item 9: the deadline counts the worker's run only ----------------------------------------


def test_a_call_queued_behind_another_gets_its_whole_deadline_and_no_worker_is_killed() -> None:
    with WorkerPool(SPEC, standby=False) as pool:
        pool.start(START_S)
        first, out = _in_thread(lambda: pool.call(slow(1200), 2_000_000_000))
        assert pool.wait_running(START_S) is not None
        # queued ~1.2 s behind the first call, then runs 1.2 s of its own 2 s: the old pool
        # counted the queueing against the worker and killed it at 0.8 s
        result, latency = pool.call(slow(1200), 2_000_000_000)
        first.join(START_S)
        assert not isinstance(out[0], BaseException)
        assert latency >= 1_200_000_000 and result.shape == (1, 4)
        stats = pool.statistics()
        assert stats.restarts == 0 and stats.calls == 2 and stats.overloads == 0


def test_a_worker_that_had_not_started_the_call_by_its_deadline_is_not_killed() -> None:
    """A starved worker (here: stopped) never took the message: not hung, not killed. The
    call is overload; the worker runs it later and is judged on that run, then serves on."""
    with WorkerPool(SPEC, standby=False, heartbeat_timeout_ns=60_000_000_000) as pool:
        pool.start(START_S)
        pid = pool.statistics().active_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(WorkerBusy, match="had not started the call"):
                pool.call(GOOD, 200_000_000)
        finally:
            os.kill(pid, signal.SIGCONT)
        # queued until the late call was answered and the worker handed back
        result, _ = pool.call(GOOD, 5_000_000_000, wait_ns=round(START_S * 1e9))
        assert torch.equal(result, GOOD * 2)
        stats = pool.statistics()
        assert stats.restarts == 0 and stats.active_pid == pid and stats.overloads == 1


def test_overload_is_refused_before_any_worker_sees_it() -> None:
    with WorkerPool(SPEC, standby=False, max_queue=1) as pool:
        pool.start(START_S)
        first, _ = _in_thread(lambda: pool.call(slow(1500), 5_000_000_000))
        assert pool.wait_running(START_S) is not None
        with pytest.raises(WorkerBusy) as waited:  # no worker came free in time
            pool.call(GOOD, 5_000_000_000, wait_ns=20_000_000)
        assert waited.value.diagnostic is D.WORKER_OVERLOADED
        with pool._lock:  # the queue is full: a second waiter is refused at once
            pool._queue.append(W._Waiter(pool._lock))
        try:
            with pytest.raises(WorkerBusy, match="max_queue 1"):
                pool.call(GOOD, 5_000_000_000)
        finally:
            with pool._lock:
                pool._queue.clear()
        first.join(START_S)
        stats = pool.statistics()
        assert stats.overloads == 2 and stats.calls == 1 and stats.restarts == 0
        assert pool._seq == 1  # neither refused call reached a worker


def test_overload_is_answered_by_the_fallback_recorded_and_not_counted(tmp_path: Path) -> None:
    pool = WorkerPool(SPEC, standby=False, max_queue=0)
    with Supervisor(
        pool,
        isolation="process",
        log=tmp_path / "log.vigil",
        fallback=Constant(torch.zeros(1, 4)),
        policy=POLICY,  # one failure would trip
        deadline_ns=5_000_000_000,
        clock=FakeClock(),
    ) as sup:
        first, out = _in_thread(lambda: sup.infer(slow(1500)))
        assert pool.wait_running(START_S) is not None
        r = sup.infer(GOOD)
        assert r.served_by is ServedBy.CONSTANT and r.code is D.WORKER_OVERLOADED
        first.join(START_S)
        assert out[0].served_by is ServedBy.PRIMARY
        stats = sup.statistics()
        assert sup.state is State.NORMAL and stats.machine.failures == 0
        assert stats.machine.calls == 1 and pool.statistics().restarts == 0
    with LogReader(tmp_path / "log.vigil") as reader:
        recs = [x.body for x in reader.records() if x.type is RecordType.INFERENCE]
    overload = [b for b in recs if b["code"] == D.WORKER_OVERLOADED.number]
    assert len(overload) == 1 and overload[0]["flags"] == 0  # recorded, not COUNTED


# --- item 11: N active workers ------------------------------------------------------------------


@pytest.mark.slow
def test_two_active_workers_serve_side_by_side_and_the_standby_replaces_a_lost_one() -> None:
    with WorkerPool(SPEC, active=2, max_queue=0) as pool:
        pool.start(START_S)
        stats = pool.statistics()
        assert len(stats.active_pids) == 2 and stats.standby_pid is not None
        first, out = _in_thread(lambda: pool.call(slow(1500), 5_000_000_000))
        busy = pool.wait_running(START_S)
        assert busy is not None
        _, _ = pool.call(GOOD, 5_000_000_000)  # no queue: only the second worker can take it
        first.join(START_S)
        assert not isinstance(out[0], BaseException)
        assert pool.statistics().overloads == 0
        victim = stats.active_pids[1]
        os.kill(victim, signal.SIGKILL)  # the monitor finds it; the standby is promoted
        with pool._changed:
            assert pool._changed.wait_for(lambda: pool._restarts >= 1, START_S)
        after = pool.statistics()
        assert set(after.active_pids) == {stats.active_pids[0], stats.standby_pid}
        assert pool.wait_standby(START_S)
        assert len(pool.statistics().active_pids) == 2
        assert pool.statistics().standby_pid not in (None, *stats.active_pids)


# --- item 10: losing every worker reaches the state machine and health ----------------------------


@pytest.mark.requirement("SR-019")
def test_losing_every_worker_degrades_and_health_says_so(tmp_path: Path) -> None:
    pool = WorkerPool(SPEC, standby=False, heartbeat_timeout_ns=5_000_000_000)
    clock = FakeClock()
    gate, lost = threading.Event(), threading.Event()
    replace = pool._replace

    def gated_replace() -> None:  # the replacement starts only when the test says so
        gate.wait(START_S)
        replace()

    pool._replace = gated_replace  # type: ignore[method-assign]
    with Supervisor(
        pool,
        isolation="process",
        log=tmp_path / "log.vigil",
        fallback=Constant(torch.zeros(1, 4)),
        policy=POLICY,
        deadline_ns=2_000_000_000,
        clock=clock,
    ) as sup:
        record = pool.on_event
        assert record is not None

        def hook(event: WorkerEvent, detail: dict[str, Any]) -> None:
            record(event, detail)
            if event is WorkerEvent.LOST:
                lost.set()

        pool.on_event = hook
        victim = pool.statistics().active_pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)  # idle: found by the monitor, not by a call
        assert lost.wait(START_S)
        stats = sup.statistics()
        assert sup.state is State.DEGRADED and stats.machine.primary_dead
        code, body = Health.of(sup, ready=True, fallback=True, workers_alive=pool.alive()).to_json(
            readiness=False
        )
        assert code == 200 and body["degraded"] and body["primary_dead"]
        assert body["status"] == "degraded"
        code, body = Health.of(sup, ready=True, workers_alive=pool.alive()).to_json(readiness=True)
        assert code == 503 and body["status"] == "unavailable"
        clock.advance(POLICY.cooldown_ns)  # no probe while no worker is there
        assert sup.infer(GOOD).served_by is ServedBy.CONSTANT and sup.state is State.DEGRADED
        gate.set()
        assert pool.wait_standby(START_S)
        assert not sup.statistics().machine.primary_dead  # a fresh worker: probe it
        probe = sup.infer(GOOD)  # the recovery probe runs on the fresh worker
        assert probe.state is State.RECOVERING and probe.outcome is Outcome.OK
        assert sup.state is State.NORMAL
    with LogReader(tmp_path / "log.vigil") as reader:
        trips = [
            x.body
            for x in reader.records()
            if x.type is RecordType.TRANSITION and x.body["code"] == D.NO_WORKER_LEFT.number
        ]
    assert [(t["from_state"], t["to_state"]) for t in trips] == [(State.NORMAL, State.DEGRADED)]
    assert replay(tmp_path / "log.vigil").agrees


# --- item 16: races -----------------------------------------------------------------------------


class _FakeShm:
    def __init__(self, heartbeat: int) -> None:
        self.heartbeat = heartbeat

    def get(self, offset: int) -> int:
        assert offset == W._HEARTBEAT
        return self.heartbeat


class _FakeProcess:
    def is_alive(self) -> bool:
        return True


def test_a_ready_worker_whose_first_heartbeat_is_not_written_yet_is_not_killed() -> None:
    """The worker said ready before its heartbeat thread first ran: its header reads 0. The
    monitor judges it from its install time, not from the epoch of CLOCK_MONOTONIC."""
    pool = WorkerPool(SPEC, heartbeat_ns=10_000_000, heartbeat_timeout_ns=100_000_000)
    failed: list[str] = []
    pool._fail = lambda w, reason, code: failed.append(reason)  # type: ignore[method-assign]
    now = 10**15  # about 11.6 days of uptime
    worker = W._Worker(_FakeProcess(), None, _FakeShm(0), "standby")  # type: ignore[arg-type]
    worker.ready_ns = now - 50_000_000
    pool._standby = worker
    pool._check(now)
    assert failed == []
    pool._check(now + 200_000_000)  # a heartbeat that truly stopped is still found
    assert failed == ["heartbeat 250 ms old"]


def test_close_during_a_respawn_leaves_no_shared_memory_file(monkeypatch: Any) -> None:
    """close() while a replacement is being spawned (its file created, its process not
    started yet) unlinks the file; the late process start is killed."""
    entered, release = threading.Event(), threading.Event()
    pool = WorkerPool(SPEC)
    real = pool._ctx.Process

    class GatedProcess:
        def __init__(self, **kw: Any) -> None:
            self._p = real(**kw)

        def start(self) -> None:
            entered.set()
            release.wait(START_S)
            self._p.start()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._p, name)

    monkeypatch.setattr(pool._ctx, "Process", GatedProcess)
    prefix = f"vigil-worker-{os.getpid()}-"
    before = {f for f in os.listdir(W._SHM_DIR) if f.startswith(prefix)}
    spawner = threading.Thread(target=pool._start_worker)
    spawner.start()
    assert entered.wait(START_S)
    pool.close()
    left = {f for f in os.listdir(W._SHM_DIR) if f.startswith(prefix)} - before
    release.set()
    spawner.join(START_S)
    assert left == set()
    with pool._changed:  # its start-up thread saw it killed and gave up
        assert pool._changed.wait_for(lambda: pool._starting == 0, START_S)
    assert {f for f in os.listdir(W._SHM_DIR) if f.startswith(prefix)} - before == set()


def test_sigterm_landing_in_another_thread_stops_run(monkeypatch: Any) -> None:
    """The kernel may hand SIGTERM to any thread; the main thread waiting in run() must wake
    (before: it slept in Event.wait() until a second signal happened to land on it)."""
    config = ServeConfig.load(Path(__file__).parent.parent / "examples" / "vigil.toml")
    svc = Service(config)
    started, stopped, missed = threading.Event(), threading.Event(), threading.Event()
    monkeypatch.setattr(svc, "start", started.set)
    monkeypatch.setattr(svc, "stop", lambda: 0)
    main_thread = threading.get_ident()

    def other_thread() -> None:
        assert started.wait(START_S)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # lands here, not in main
        if not stopped.wait(30):  # a bound on the failure, not a wait for success
            missed.set()
            signal.pthread_kill(main_thread, signal.SIGTERM)  # unblock a broken run()

    helper = threading.Thread(target=other_thread)
    helper.start()
    try:
        assert svc.run() == 0
    finally:
        stopped.set()
        helper.join(START_S)
    assert not missed.is_set()


class _Header:
    def __init__(self, seq: int, start: int) -> None:
        self.values = {W._SEQ: seq, W._START: start}

    def get(self, offset: int) -> int:
        return self.values[offset]


class _Pipe:
    def __init__(self, answers: list[bool]) -> None:
        self.answers, self.timeouts = answers, []  # type: list[bool], list[float]

    def poll(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return self.answers.pop(0)


def test_a_worker_that_started_the_call_late_gets_its_whole_deadline_from_its_start() -> None:
    """At the caller's deadline the worker had run the call only 1 ms (it took the message
    late): it is waited for until a deadline after the start its header records."""
    pool = WorkerPool(SPEC)
    deadline = 50_000_000
    now = time.monotonic_ns()
    worker = W._Worker(_FakeProcess(), _Pipe([False, True]), _Header(7, now - 1_000_000), "active")  # type: ignore[arg-type]
    assert pool._answered(worker, 7, now, deadline)
    first, second = worker.conn.timeouts  # type: ignore[attr-defined]
    assert first == 0 and 0.040 < second <= 0.049  # the rest of its own 50 ms
    hung = W._Worker(
        _FakeProcess(),
        _Pipe([False, False]),  # type: ignore[arg-type]
        _Header(7, now - deadline),  # type: ignore[arg-type]
        "active",
    )
    assert not pool._answered(hung, 7, now, deadline)  # ran its whole deadline: hung
    assert hung.conn.timeouts[1] == 0  # type: ignore[attr-defined]


# --- preemption is not a hang: a worker is judged on the CPU it had ---------------------------

MS = 1_000_000


@pytest.mark.parametrize(
    ("ran_ms", "runnable", "starved"),
    [
        (5, True, True),  # preempted: runnable, another process had the CPU
        (50, True, False),  # a busy hang: it had its deadline of CPU
        (0, False, False),  # blocked or SIGSTOPped: not runnable, so hung
        (3, False, False),  # sleeping after a little work: hung
    ],
)
def test_starved_is_runnable_with_less_than_its_deadline_of_cpu(
    ran_ms: int, runnable: bool, starved: bool
) -> None:
    now = W.Sched(on_cpu_ns=7 * MS + ran_ms * MS, runnable=runnable)
    assert (W.starved(7 * MS, now, 50 * MS) is not None) is starved


class _CpuHeader(_Header):
    def __init__(self, seq: int, start: int, cpu: int) -> None:
        super().__init__(seq, start)
        self.values[W._CPU] = cpu


def _late_worker(answers: list[bool], start: int) -> W._Worker:
    worker = W._Worker(_FakeProcess(), _Pipe(answers), _CpuHeader(7, start, 100 * MS), "active")  # type: ignore[arg-type]
    worker.pid = 4242
    return worker


def test_a_preempted_worker_past_its_deadline_is_overload_not_a_hang() -> None:
    """At its own deadline the worker, runnable, had had 4 ms of CPU: busy (the fallback
    answers), adopted as late, not killed."""
    pool = WorkerPool(SPEC)
    adopted: list[int] = []
    pool._adopt_late = lambda w, seq, d: adopted.append(seq)  # type: ignore[method-assign]
    pool._schedstat = lambda pid: W.Sched(104 * MS, runnable=True)
    now = time.monotonic_ns()
    with pytest.raises(WorkerBusy, match="starved of CPU"):
        pool._answered(_late_worker([False, False], now - 50 * MS), 7, now, 50 * MS)
    assert adopted == [7]


@pytest.mark.parametrize("reading", [W.Sched(150 * MS, True), W.Sched(101 * MS, False), None])
def test_a_worker_that_had_the_cpu_or_is_blocked_is_hung(reading: W.Sched | None) -> None:
    pool = WorkerPool(SPEC)
    pool._schedstat = lambda pid: reading
    now = time.monotonic_ns()
    assert not pool._answered(_late_worker([False, False], now - 50 * MS), 7, now, 50 * MS)


def test_a_late_starved_call_is_judged_again_until_it_has_had_its_cpu() -> None:
    """While starved the worker is looked at again a deadline later; once it has had its
    deadline of CPU without answering it is replaced as hung; starved past the heartbeat
    timeout, it is replaced as frozen."""
    pool = WorkerPool(SPEC)
    now = time.monotonic_ns()
    readings = iter([W.Sched(110 * MS, True), W.Sched(160 * MS, True)])
    pool._schedstat = lambda pid: next(readings)
    worker = _late_worker([False, False], now - 50 * MS)
    reason = pool._wait_late(worker, 7, 50 * MS, give_up=now + 10**12)
    assert reason.startswith("deadline: the call ran")  # judged twice: starved, then hung
    first, second = worker.conn.timeouts  # type: ignore[attr-defined]
    assert first == 0 and 0.045 < second <= 0.050  # looked again one deadline later

    pool._schedstat = lambda pid: W.Sched(101 * MS, True)  # starved for good
    reason = pool._wait_late(_late_worker([False], now - 50 * MS), 7, 50 * MS, give_up=now)
    assert reason.startswith("deadline: starved of CPU past the heartbeat timeout")


def test_schedstat_reads_this_process_and_none_for_a_gone_one() -> None:
    mine = W.read_schedstat(os.getpid())
    assert mine is not None and mine.on_cpu_ns > 0 and mine.runnable  # reading it: running
    assert W.read_schedstat(2**22 + 12345) is None  # beyond pid_max's default: no process


def test_a_stopped_worker_is_not_runnable() -> None:
    """The real kernel, not a fake: a SIGSTOPped child reads as not runnable (hung)."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.kill(child.pid, signal.SIGSTOP)
        for _ in range(1000):  # the stop is asynchronous: wait until the kernel says T
            sched = W.read_schedstat(child.pid)
            if sched is not None and not sched.runnable:
                break
            time.sleep(0.001)
        assert sched is not None and not sched.runnable
    finally:
        child.kill()
        child.wait()


# --- the spin: only where a core is free for it; the hot worker takes the next call ---------

US = 1_000


@pytest.mark.parametrize(
    ("in_flight", "cores", "spinner", "budget"),
    [
        (1, 2, False, (300 * US, 300 * US)),  # one worker busy, the supervisor on the other core
        (2, 2, False, (0, 0)),  # two workers computing and the supervisor: no core to spare
        (2, 4, False, (300 * US, 300 * US)),
        (2, 4, True, (0, 300 * US)),  # a caller already spins: the GIL has one
        (1, 1, False, (0, 0)),  # one CPU: a spinner would take it from the worker
    ],
)
def test_the_spin_is_spent_only_where_a_core_is_free_for_it(
    in_flight: int, cores: int, spinner: bool, budget: tuple[int, int]
) -> None:
    assert W.spin_budget(300 * US, in_flight, cores, spinner) == budget
    assert W.spin_budget(0, in_flight, cores, spinner) == (0, 0)  # spin_us = 0: never


def test_the_next_call_takes_the_worker_that_answered_last() -> None:
    """The idle workers are a stack: the one that answered last is still spinning for its
    next call; a queue handed each call to the coldest worker (2 workers and 1 client ran at
    the speed of a wake-up per call)."""
    pool = WorkerPool(SPEC, active=2)
    a, b = (W._Worker(_FakeProcess(), None, None, "active") for _ in range(2))  # type: ignore[arg-type]
    with pool._lock:
        pool._actives = [a, b]
        pool._release(a)
        pool._release(b)
    far = time.monotonic_ns() + 10**9
    assert pool._take(far) is b
    with pool._lock:
        pool._release(b)
    assert pool._take(far) is b and pool._take(far) is a


class _RecordingPipe:
    """A worker's pipe that keeps what the pool sent and answers with a model error."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(pickle.loads(data))

    def poll(self, timeout: float = 0) -> bool:
        return True

    def recv_bytes(self) -> bytes:
        seq = self.sent[-1][0]
        return pickle.dumps((seq, "error", (int(Outcome.ERROR), D.MODEL_ERROR.code, "boom"), None))


@pytest.mark.parametrize(("cores", "worker_spin"), [(1, 0), (8, 300 * US)])
def test_each_call_tells_the_worker_how_long_to_spin_and_frees_its_slot(
    tmp_path: Path, cores: int, worker_spin: int
) -> None:
    pool = WorkerPool(SPEC)
    pool._cores = cores
    shm = _SharedArea(str(tmp_path / "area"), 4096 * 2 + _HEADER_SIZE, create=True)
    worker = W._Worker(_FakeProcess(), _RecordingPipe(), shm, "active")  # type: ignore[arg-type]
    try:
        for _ in range(2):  # the slot is free again after a call that raised
            with pytest.raises(RemoteModelError):
                pool._run(worker, GOOD, 50_000_000)
            assert pool._in_flight == 0 and pool._spinner is False
        sent = worker.conn.sent  # type: ignore[attr-defined]
        assert [m[3] for m in sent] == [worker_spin] * 2
    finally:
        shm.close()
        shm.unlink()


@pytest.mark.slow
def test_a_storm_of_concurrent_calls_and_crashes_leaves_the_spin_bookkeeping_clean() -> None:
    """8 threads call 2 active workers (cores faked as 4, so the spinner slot is contended),
    with model errors throughout and two workers crashing mid-call: every call ends with an
    answer or the error its kind calls for, and afterwards nothing is in flight, the spinner
    slot is free and each idle worker is on the stack once."""
    crash = torch.full((1, 4), TRIGGERS["crash"])
    error = torch.full((1, 4), TRIGGERS["error"])
    with WorkerPool(SPEC, active=2) as pool:
        pool.start(START_S)
        pool._cores = 4
        unexpected: list[BaseException] = []
        answers = [0] * 8

        def client(i: int) -> None:
            for n in range(120):
                x = crash if (i < 2 and n == 40) else error if n % 7 == 3 else GOOD
                try:
                    result, _ = pool.call(x, 5_000_000_000)
                except RemoteModelError as exc:
                    if x is not error:
                        unexpected.append(exc)
                except (WorkerLost, WorkerBusy, WorkerUnavailable):
                    pass  # a crash, or no worker free while the standby is replaced
                except BaseException as exc:  # collected, asserted below
                    unexpected.append(exc)
                else:
                    answers[i] += torch.equal(result, GOOD * 2)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(START_S)
        assert not any(t.is_alive() for t in threads) and unexpected == []
        assert sum(answers) > 8 * 120 * 0.6
        assert pool.wait_standby(START_S)
        with pool._lock:
            assert pool._in_flight == 0 and pool._spinner is False
            assert len(pool._idle) == len(set(map(id, pool._idle))) == len(pool._actives) == 2
        assert pool.statistics().restarts >= 2


class _GoneProcess(_FakeProcess):
    exitcode = -9


class _BrokenPipe(_RecordingPipe):
    """A worker's pipe whose process is gone: every send fails."""

    def send_bytes(self, data: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_call_whose_send_fails_frees_the_spinner_slot(tmp_path: Path) -> None:
    """The worker died before the call reached it: the caller held the pool's one spinner
    slot (a free core), and gives it back, or no caller would ever spin again."""
    pool = WorkerPool(SPEC)
    pool._cores = 8
    lost: list[str] = []
    pool._fail = lambda w, reason, code: lost.append(reason)  # type: ignore[method-assign]
    shm = _SharedArea(str(tmp_path / "area"), 4096 * 2 + _HEADER_SIZE, create=True)
    worker = W._Worker(_GoneProcess(), _BrokenPipe(), shm, "active")  # type: ignore[arg-type]
    try:
        with pytest.raises(WorkerLost):
            pool._run(worker, GOOD, 50_000_000)
        assert pool._spinner is False and pool._in_flight == 0
        assert len(lost) == 1 and "died during a call" in lost[0]
    finally:
        shm.close()
        shm.unlink()
