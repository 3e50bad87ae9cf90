"""Process isolation with real worker processes: SIGKILL mid-call, hangs, process-fatal errors,
frozen heartbeats, cold restarts, bad inputs, and a SIGKILLed supervisor.

Every test here starts real spawned processes (about 2 s each for torch to import); the model is
:func:`vigil.testing._models.triggered_model`, whose input selects a fault.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil import _diagnostics as D
from vigil import keys as _keys
from vigil.auditlog import LogReader
from vigil.cli import main
from vigil.errors import InvalidInput, WorkerError
from vigil.fsm import Policy
from vigil.model import verify_model_dir
from vigil.schemas import LifecycleEvent, Outcome, RecordType, ServedBy, State
from vigil.supervisor import Constant, Supervisor
from vigil.testing._models import TRIGGERS
from vigil.workers import _pool as W
from vigil.workers._pool import WorkerPool, WorkerSpec

from conftest import FakeClock

SPEC = WorkerSpec(
    factory="vigil.testing._models:triggered_model",
    warmup_input=torch.ones(1, 4),
    threads=1,
)
POLICY = Policy(consecutive_failures=2, cooldown_ns=1_000_000_000, probes_required=2)
GOOD = torch.ones(1, 4)
START_S = 120.0


def poison(kind: str) -> torch.Tensor:
    return torch.full((1, 4), TRIGGERS[kind])


def lifecycle(path: Path) -> list[tuple[LifecycleEvent, dict[str, Any]]]:
    with LogReader(path) as r:
        assert r.verify().intact
        return [
            (x.body["event"], json.loads(x.body["detail"]))
            for x in r.records()
            if x.type is RecordType.LIFECYCLE
        ]


def inferences(path: Path) -> list[Any]:
    with LogReader(path) as r:
        return [x for x in r.records() if x.type is RecordType.INFERENCE]


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Supervisor, WorkerPool, FakeClock]]:
    clock = FakeClock()
    pool = WorkerPool(SPEC, heartbeat_timeout_ns=5_000_000_000)
    sup = Supervisor(
        pool,
        isolation="process",
        log=tmp_path / "log.vigil",
        fallback=Constant(torch.zeros(1, 4)),
        policy=POLICY,
        deadline_ns=2_000_000_000,
        clock=clock,
    )
    try:
        yield sup, pool, clock
    finally:
        sup.close()


@pytest.mark.requirement("SR-016")
def test_sigkill_mid_call_fallback_answers_standby_takes_over(
    supervised: tuple[Supervisor, WorkerPool, FakeClock], tmp_path: Path
) -> None:
    sup, pool, clock = supervised
    assert sup.infer(GOOD).served_by is ServedBy.PRIMARY
    before = pool.statistics()
    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.append(sup.infer(poison("hang"))))
    caller.start()
    victim = pool.wait_running(START_S)
    assert victim == before.active_pid
    os.kill(victim, signal.SIGKILL)
    caller.join(START_S)
    (result,) = results
    assert result.served_by is ServedBy.CONSTANT and result.outcome is Outcome.WORKER_LOST
    assert result.latency_ns < sup.deadline_ns  # answered at the loss, not at the deadline
    after = pool.statistics()
    assert after.active_pid == before.standby_pid and after.failovers == 1
    assert sup.state is State.DEGRADED  # a lost worker trips at once
    assert pool.wait_standby(START_S)
    replacement = pool.statistics().standby_pid
    assert replacement not in (None, before.active_pid, before.standby_pid)
    clock.advance(POLICY.cooldown_ns)  # recovery probes run on the promoted worker
    for _ in range(POLICY.probes_required):
        sup.infer(GOOD)
    assert sup.state is State.NORMAL
    assert sup.infer(GOOD).served_by is ServedBy.PRIMARY
    sup.close()
    events = lifecycle(tmp_path / "log.vigil")
    kinds = [e for e, _ in events]
    lost = next(d for e, d in events if e is LifecycleEvent.WORKER_LOST)
    assert lost["pid"] == victim and lost["code"] == D.WORKER_LOST.code
    promoted = next(d for e, d in events if e is LifecycleEvent.WORKER_PROMOTED)
    assert promoted == {**promoted, "pid": before.standby_pid, "lost_pid": victim}
    assert kinds.count(LifecycleEvent.WORKER_READY) == 3
    recs = inferences(tmp_path / "log.vigil")
    assert len(recs) == 3 + POLICY.probes_required  # one record per call, nothing lost
    assert [r.body["outcome"] for r in recs].count(Outcome.WORKER_LOST) == 1


@pytest.mark.requirement("SR-001")
@pytest.mark.requirement("SR-016")
def test_a_hung_worker_is_killed_at_the_deadline_and_replaced(
    supervised: tuple[Supervisor, WorkerPool, FakeClock], tmp_path: Path
) -> None:
    sup, pool, _ = supervised
    sup.deadline_ns = 300_000_000
    before = pool.statistics()
    result = sup.infer(poison("hang"))
    assert result.outcome is Outcome.TIMEOUT and result.served_by is ServedBy.CONSTANT
    assert result.code is D.DEADLINE_MISSED
    assert pool.statistics().active_pid == before.standby_pid
    # the standby serves the next call: nothing is hung, nothing waits for a process start
    assert sup.infer(GOOD).outcome is Outcome.OK
    assert sup.statistics().hung == 0
    sup.close()
    lost = [d for e, d in lifecycle(tmp_path / "log.vigil") if e is LifecycleEvent.WORKER_LOST]
    assert [(d["pid"], d["code"], d["ready_left"]) for d in lost] == [
        (before.active_pid, "DIA-4002", 1)
    ]
    assert lost[0]["reason"].startswith("deadline: the call ran ")  # it was running: hung


@pytest.mark.requirement("SR-004")
def test_a_process_fatal_error_replaces_the_worker_and_recovery_can_follow(
    supervised: tuple[Supervisor, WorkerPool, FakeClock],
) -> None:
    sup, pool, clock = supervised
    before = pool.statistics()
    result = sup.infer(poison("fatal"))
    assert result.outcome is Outcome.DEVICE_FATAL and result.served_by is ServedBy.CONSTANT
    assert sup.state is State.DEGRADED
    assert pool.statistics().active_pid == before.standby_pid
    # in-process, a poisoned context bars the primary for good; here the process is gone
    assert not sup.statistics().machine.primary_dead
    clock.advance(POLICY.cooldown_ns)
    for _ in range(POLICY.probes_required):
        sup.infer(GOOD)
    assert sup.state is State.NORMAL


@pytest.mark.slow
def test_a_model_exception_keeps_the_worker(
    supervised: tuple[Supervisor, WorkerPool, FakeClock],
) -> None:
    sup, pool, _ = supervised
    before = pool.statistics()
    result = sup.infer(poison("error"))
    assert result.outcome is Outcome.ERROR and result.code is D.MODEL_ERROR
    assert "vigil fault injection: exception" in result.reason
    ok = sup.infer(torch.arange(8.0).reshape(2, 4))  # a good call between: no trip
    assert torch.equal(ok.output, torch.arange(8.0).reshape(2, 4) * 2)
    nan = sup.infer(poison("nan"))
    assert nan.outcome is Outcome.INVALID_OUTPUT
    assert pool.statistics().active_pid == before.active_pid  # no reason to replace it
    assert sup.state is State.NORMAL


@pytest.mark.requirement("SR-012")
def test_inputs_a_worker_cannot_take_are_rejected_and_recorded(
    supervised: tuple[Supervisor, WorkerPool, FakeClock], tmp_path: Path
) -> None:
    sup, _, _ = supervised
    cases = [
        ("not a tensor", D.WORKER_UNSUPPORTED_IO),
        (torch.zeros(2, dtype=torch.complex64), D.WORKER_UNSUPPORTED_IO),
        ({"a": torch.zeros(1), "b": 3}, D.WORKER_UNSUPPORTED_IO),
        (torch.zeros(SPEC.shm_bytes // 4 + 1), D.WORKER_SHM_TOO_SMALL),
    ]
    for x, code in cases:
        with pytest.raises(InvalidInput) as err:
            sup.infer(x)
        assert err.value.diagnostic is code
    assert sup.infer(GOOD).outcome is Outcome.OK
    sup.close()
    with LogReader(tmp_path / "log.vigil") as r:
        rejected = [x.body["code"] for x in r.records() if x.type is RecordType.REJECTED]
    assert rejected == [code.number for _, code in cases]


@pytest.mark.parametrize(
    "value",
    [
        torch.arange(6.0).reshape(2, 3),
        torch.arange(6.0, dtype=torch.float16).reshape(2, 3).t(),  # not contiguous
        {"ids": torch.arange(5), "mask": torch.tensor([True, False]), "e": torch.zeros(0, 3)},
        (torch.ones(3, dtype=torch.bfloat16), torch.tensor(7, dtype=torch.int8)),
    ],
)
def test_tensors_round_trip_through_shared_memory(value: Any, tmp_path: Path) -> None:
    area = W._SharedArea(str(tmp_path / "shm"), 1 << 16, create=True)
    kind, specs = W._write(area.inputs, value, "the input")
    back = W._read(area.inputs, kind, specs, copy=True)
    area.inputs[:] = 0  # the copies are the caller's: reusing the area leaves them intact
    want = value if isinstance(value, dict) else {"": value}
    got = back if isinstance(back, dict) else {"": back}
    for k, v in want.items():
        if isinstance(v, tuple):
            pairs = zip(v, got[k], strict=True)
            assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in pairs)
        else:
            assert torch.equal(v, got[k]) and v.dtype == got[k].dtype
    del back, got
    area.close()


@pytest.mark.slow
def test_without_a_standby_calls_fall_back_until_a_cold_start_is_ready(tmp_path: Path) -> None:
    pool = WorkerPool(SPEC, standby=False)
    clock = FakeClock()
    with Supervisor(
        pool,
        isolation="process",
        log=tmp_path / "log.vigil",
        fallback=Constant(torch.zeros(1, 4)),
        policy=POLICY,
        deadline_ns=2_000_000_000,
        clock=clock,
    ) as sup:
        assert sup.infer(poison("crash")).outcome is Outcome.WORKER_LOST
        assert sup.statistics().machine.primary_dead  # no worker left (DIA-7011)
        clock.advance(POLICY.cooldown_ns)  # cooled down, but no worker is there to probe
        waiting = sup.infer(GOOD)  # the fallback answers; no probe is held against anyone
        assert waiting.served_by is ServedBy.CONSTANT and sup.state is State.DEGRADED
        assert sup.statistics().machine.good_probes == 0
        assert pool.wait_standby(START_S)
        for _ in range(POLICY.probes_required):
            sup.infer(GOOD)
        assert sup.state is State.NORMAL
        assert pool.statistics().active_pid is not None
    events = lifecycle(tmp_path / "log.vigil")
    promoted = [d for e, d in events if e is LifecycleEvent.WORKER_PROMOTED]
    assert promoted and promoted[0]["from"] == "cold start"


@pytest.mark.requirement("SR-016")
@pytest.mark.slow
def test_a_frozen_worker_is_found_by_its_heartbeat(tmp_path: Path) -> None:
    pool = WorkerPool(SPEC, heartbeat_ns=20_000_000, heartbeat_timeout_ns=300_000_000)
    with Supervisor(
        pool, isolation="process", log=tmp_path / "log.vigil", clock=FakeClock()
    ) as sup:
        standby = pool.statistics().standby_pid
        assert standby is not None
        os.kill(standby, signal.SIGSTOP)  # frozen: alive, but its heartbeat stops
        try:
            with pool._changed:
                assert pool._changed.wait_for(lambda: pool._restarts >= 1, START_S)
        finally:
            os.kill(standby, signal.SIGCONT)
        assert sup.infer(GOOD).outcome is Outcome.OK  # the active worker never stopped
        assert pool.wait_standby(START_S)
    lost = [d for e, d in lifecycle(tmp_path / "log.vigil") if e is LifecycleEvent.WORKER_LOST]
    assert [(d["pid"], d["code"]) for d in lost] == [(standby, D.WORKER_HEARTBEAT.code)]


def test_a_model_that_cannot_be_built_fails_the_start_and_is_recorded(tmp_path: Path) -> None:
    spec = WorkerSpec(factory="vigil.testing._models:no_such_factory")
    with pytest.raises(WorkerError) as err:
        Supervisor(WorkerPool(spec, standby=False), isolation="process", log=tmp_path / "l")
    assert err.value.diagnostic is D.WORKER_START_FAILED
    failed = [d for e, d in lifecycle(tmp_path / "l") if e is LifecycleEvent.WORKER_START_FAILED]
    assert len(failed) == 1 and "no_such_factory" in failed[0]["reason"]


_SUPERVISOR_SCRIPT = """
import sys, torch
from vigil.supervisor import Constant, Supervisor
from vigil.workers import _pool as W
from vigil.workers._pool import WorkerPool, WorkerSpec
def main():
    spec = WorkerSpec(factory="vigil.testing._models:triggered_model", threads=1)
    sup = Supervisor(WorkerPool(spec), isolation="process", log=sys.argv[1],
                     fallback=Constant(torch.zeros(1, 4)), durability="always")
    stats = sup._pool.statistics()
    print(stats.active_pid, stats.standby_pid, flush=True)
    n = 0
    while True:
        n += 1
        sup.infer(torch.ones(1, 4))
        if n == 20:
            print("served", flush=True)
if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_sigkill_the_supervisor_the_log_reopens_and_the_workers_exit(tmp_path: Path) -> None:
    script = tmp_path / "serve.py"
    script.write_text(_SUPERVISOR_SCRIPT)
    path = tmp_path / "log.vigil"
    with subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            pids = [int(p) for p in proc.stdout.readline().split()]
            assert proc.stdout.readline().strip() == "served"
        finally:
            proc.kill()
            proc.wait(START_S)
    assert proc.returncode == -signal.SIGKILL
    for pid in pids:  # orphaned workers see their pipe close and exit on their own
        _wait_gone(pid)
    with LogReader(path) as r:
        report = r.verify()
        assert report.intact, report.findings
        assert sum(x.type is RecordType.INFERENCE for x in r.records()) >= 20
    with Supervisor(lambda x: x, log=path, fallback=Constant(torch.zeros(1, 4))) as sup:
        restored = sup.statistics()
        assert restored.log_head_seq > 20
    with LogReader(path) as r:
        assert r.verify().intact


def _wait_gone(pid: int) -> None:
    """Wait for a process that is not our child to exit (pidfd: no polling loop)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], START_S)
        assert ready, f"worker {pid} outlived its supervisor"
    finally:
        os.close(fd)


@pytest.mark.requirement("SR-008")
def test_a_worker_loads_only_a_signed_model_directory(tmp_path: Path) -> None:
    key, model = str(tmp_path / "signer"), tmp_path / "model"
    assert main(["model", "keygen", "--out", key]) == 0
    tiny = ["--model", "tiny-reference"]  # (N, 64) float -> (N, 8)
    assert main(["model", "export-reference", str(model), "--key", key, *tiny]) == 0
    spec = WorkerSpec(model_dir=str(model), public_key=key + ".pub", threads=1)
    with Supervisor(  # a deadline no loaded machine misses: this test is about signatures
        WorkerPool(spec, standby=False),
        isolation="process",
        log=tmp_path / "good.vigil",
        deadline_ns=30_000_000_000,
    ) as sup:
        signed = verify_model_dir(model, _keys.load_public(key + ".pub")).digest
        assert sup.model_digest == signed  # the records name the signed manifest
        assert sup.infer(torch.zeros(2, 64)).output.shape == (2, 8)
    weights = model / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(WorkerError) as err:
        Supervisor(WorkerPool(spec, standby=False), isolation="process", log=tmp_path / "bad")
    assert err.value.diagnostic is D.WORKER_START_FAILED
    (failed,) = [
        d for e, d in lifecycle(tmp_path / "bad") if e is LifecycleEvent.WORKER_START_FAILED
    ]
    assert "DIA-5106" in failed["reason"]  # ArtifactTampered, raised inside the worker


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_device_side_assert_kills_only_its_cuda_worker(tmp_path: Path) -> None:
    spec = dataclasses.replace(SPEC, kwargs={"device": "cuda"}, device="cuda")
    clock = FakeClock()
    sup = Supervisor(
        WorkerPool(spec, heartbeat_timeout_ns=5_000_000_000),
        isolation="process",
        log=tmp_path / "log.vigil",
        fallback=Constant(torch.zeros(1, 4)),
        policy=POLICY,
        deadline_ns=5_000_000_000,
        clock=clock,
    )
    with sup:
        pool = sup.primary
        assert isinstance(pool, WorkerPool)
        assert sup.infer(GOOD).served_by is ServedBy.PRIMARY
        before = pool.statistics()
        result = sup.infer(poison("fatal"))  # a real device-side assert in the worker
        assert result.outcome is Outcome.DEVICE_FATAL, result
        assert pool.statistics().active_pid == before.standby_pid
        clock.advance(POLICY.cooldown_ns)  # the standby's CUDA context is clean
        for _ in range(POLICY.probes_required):
            assert sup.infer(GOOD).outcome is Outcome.OK
        assert sup.state is State.NORMAL
        assert torch.equal(sup.infer(GOOD).output, GOOD * 2)
        assert not torch.cuda.is_initialized()  # the supervisor process never touched CUDA
