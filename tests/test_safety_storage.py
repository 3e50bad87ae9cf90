"""The log's storage failing under a running supervisor (docs/SAFETY.md, SR-018): an I/O error
on sync (injected at the storage layer) and the file really truncated under the writer's
mapping (in a child process: a store into the lost pages is SIGBUS, which kills a Python
process)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import FlightRecorder, LogReader
from vigil.errors import LogGeometryError, LogIOError, Unavailable
from vigil.schemas import RecordType
from vigil.supervisor import Constant, Supervisor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import _storage_faults as SF  # noqa: E402

from conftest import FakeClock  # noqa: E402

CHILD = str(ROOT / "bench" / "_storage_faults.py")
X = torch.ones(1, 4)


class Counted:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * 2


def _supervisor(log: FlightRecorder, model: Counted, isolation: str) -> Supervisor:
    return Supervisor(model, log=log, isolation=isolation, fallback=Constant(torch.zeros(1, 4)))  # type: ignore[arg-type]


@pytest.mark.requirement("SR-018")
@pytest.mark.parametrize("isolation", ["inline", "thread"])
def test_eio_on_sync_stops_the_serving_with_a_code(tmp_path: Path, isolation: str) -> None:
    log, disk = SF.eio_recorder(str(tmp_path / "eio.vigil"), "always")
    model = Counted()
    sup = _supervisor(log, model, isolation)
    try:
        assert sup.infer(X).served_by.name == "PRIMARY"
        disk.armed = True
        with pytest.raises(Unavailable) as got:
            sup.infer(X)
        assert got.value.diagnostic is D.LOG_UNWRITABLE and got.value.reason == "log"
        cause = got.value.__cause__
        assert isinstance(cause, LogIOError) and cause.diagnostic is D.LOG_SYNC_FAILED
        assert cause.errno == errno.EIO
        assert log.failed is cause
        ran = model.calls
        with pytest.raises(Unavailable) as again:  # refused up front: the model is not run
            sup.infer(X)
        assert again.value.diagnostic is D.LOG_UNWRITABLE and model.calls == ran
        with pytest.raises(LogIOError) as refused:
            log.annotate("k", "v")
        assert refused.value.diagnostic is D.LOG_FAILED
        with pytest.raises(LogIOError):
            log.flush()  # never claims durability again
    finally:
        sup.close()  # does not raise: the failure was raised to the call that met it
        log.close()
    disk.armed = False
    FlightRecorder.open(str(tmp_path / "eio.vigil")).close()  # the restart reopens it
    with LogReader(str(tmp_path / "eio.vigil")) as r:
        kinds = [rec.type for rec in r.records()]
    assert kinds.count(RecordType.INFERENCE) >= 1 and kinds[-1] is RecordType.LIFECYCLE


@pytest.mark.requirement("SR-018")
def test_eio_in_the_group_commit_is_found_by_the_flusher(tmp_path: Path) -> None:
    log, disk = SF.eio_recorder(str(tmp_path / "eio.vigil"), "batch", batch_interval=0.002)
    model = Counted()
    sup = _supervisor(log, model, "thread")
    try:
        assert sup.infer(X).served_by.name == "PRIMARY"
        disk.armed = True
        sup.log.annotate("dirty", "a record for the flusher to sync")
        assert log.wait_failed(10)
        assert log.failed is not None and log.failed.diagnostic is D.LOG_SYNC_FAILED
        ran = model.calls
        with pytest.raises(Unavailable) as got:
            sup.infer(X)
        assert got.value.diagnostic is D.LOG_UNWRITABLE and model.calls == ran
        assert log.durable_seq < log.head_seq  # the annotation was never claimed durable
    finally:
        sup.close()
        log.close()


def _truncate_under(
    tmp_path: Path, durability: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    path = str(tmp_path / "t.vigil")
    child = subprocess.Popen(
        [sys.executable, CHILD, durability, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        os.truncate(path, 4096)  # under the writer's mapping: the superblock page is left
        out, err = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err), path


@pytest.mark.requirement("SR-018")
@pytest.mark.parametrize("durability", ["always", "batch"])
def test_a_log_truncated_under_the_writer_stops_the_serving_without_sigbus(
    tmp_path: Path, durability: str
) -> None:
    done, _ = _truncate_under(tmp_path, durability)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    got: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert got["error"] == "Unavailable" and got["code"] == "LOG_UNWRITABLE", got
    if durability == "always":  # checked before this call's record: its answer is withheld
        assert got["cause"] == "LOG_STORAGE_SHRUNK" and got["model_calls"] == 2, got
    else:  # found by the group commit first, then refused up front
        assert got["found"] is True and got["cause"] is None and got["model_calls"] == 1, got


@pytest.mark.requirement("SR-018")
def test_without_a_check_a_store_into_the_truncated_pages_is_sigbus(tmp_path: Path) -> None:
    """The residual risk, shown: under ``none`` nothing checks the size before a store, the
    child dies of SIGBUS, and the restart refuses the truncated log (fails closed)."""
    done, path = _truncate_under(tmp_path, "none")
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stdout, done.stderr[-2000:])
    with pytest.raises(LogGeometryError) as refused:
        Supervisor(lambda x: x, log=path, fallback=Constant(torch.zeros(1, 4)))
    assert refused.value.diagnostic is D.LOG_GEOMETRY


@pytest.mark.requirement("SR-018")
def test_a_known_answer_probe_that_cannot_be_recorded_refuses_the_call(tmp_path: Path) -> None:
    """The probe's own record fails to write (the storage failed between two calls): the call
    that ran the probe is refused like any call that cannot be recorded (DIA-4012), not with
    the recorder's raw error."""
    from vigil.fsm import Policy
    from vigil.supervisor import KnownAnswer
    from vigil.supervisor._supervisor import _KA_REQUEST

    log = FlightRecorder.create(tmp_path / "ka.vigil", durability="none")
    clock = FakeClock()
    sup = Supervisor(
        Counted(),
        log=log,
        isolation="inline",
        fallback=Constant(torch.zeros(1, 4)),
        known_answer=KnownAnswer(X, X * 2),
        policy=Policy(probe_interval_ns=1_000_000),
        clock=clock,
    )
    try:
        write = log.record_inference

        def failing(**fields: Any) -> int:
            if fields["request_id"] == _KA_REQUEST:
                raise LogIOError("injected: the storage failed", path=str(tmp_path))
            return write(**fields)

        log.record_inference = failing  # type: ignore[method-assign]
        clock.advance(2_000_000)  # the probe is due at the next call
        with pytest.raises(Unavailable) as info:
            sup.infer(X)
        assert info.value.diagnostic is D.LOG_UNWRITABLE
        assert isinstance(info.value.__cause__, LogIOError)
    finally:
        sup.close()
        log.close()


_NO_REAL_EIO = SF.real_eio_available()


@pytest.mark.slow
@pytest.mark.requirement("SR-018")
@pytest.mark.skipif(_NO_REAL_EIO is not None, reason=f"a real EIO: {_NO_REAL_EIO}")
@pytest.mark.parametrize("durability", ["always", "batch"])
def test_a_real_eio_from_the_file_system_stops_the_serving(tmp_path: Path, durability: str) -> None:
    """The kernel's own EIO (an ext4 file system shut down under the writer, as when its
    disk fails): the sync that meets it fails the writer, the call is refused with DIA-4012
    without running the model, and the process lives on."""
    with contextlib.ExitStack() as stack:
        try:
            mnt, shutdown = stack.enter_context(SF.real_eio_filesystem(str(tmp_path)))
        except SF.RealEIOUnavailable as exc:
            pytest.skip(f"a real EIO: {exc}")
        path = os.path.join(mnt, "log.vigil")
        log = FlightRecorder.create(path, SF.RING, durability=durability, batch_interval=0.005)
        model = Counted()
        sup = _supervisor(log, model, "thread")
        try:
            assert sup.infer(X).served_by.name == "PRIMARY"
            assert log.wait_durable(log.head_seq, 10)  # nothing left for the flusher
            shutdown()
            if durability == "batch":  # the group commit's fdatasync meets it
                log.annotate("dirty", "a record for the flusher to sync")
                assert log.wait_failed(10)
            ran = model.calls
            with pytest.raises(Unavailable) as got:
                sup.infer(X)
            assert got.value.diagnostic is D.LOG_UNWRITABLE
            failed = log.failed
            assert isinstance(failed, LogIOError)
            assert failed.diagnostic is D.LOG_SYNC_FAILED
            assert failed.errno == errno.EIO
            assert model.calls == ran + (durability == "always")  # always: its sync failed
            with pytest.raises(Unavailable):
                sup.infer(X)
            assert model.calls == ran + (durability == "always")  # refused up front
        finally:
            sup.close()
            log.close()
