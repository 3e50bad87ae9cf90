"""Process isolation: the primary model runs in worker processes the supervisor can kill.

Theory of operation
-------------------
A CUDA device-side assert poisons every later CUDA call of its process, a hung kernel cannot
be cancelled and a segfault ends the process: the only sure way out is to kill the process
that runs the model. So the model lives in a *worker* process started with ``spawn`` (the
supervisor process never initialises CUDA: a forked child cannot use it, and a poisoned
context must die with its process). Starting one costs seconds (torch import, CUDA start,
weights), so :class:`WorkerPool` keeps a *hot standby*: one more worker, loaded and warmed
up, promoted the moment an active one is lost. A replacement standby is started in the
background; nothing on the failover path waits for a process to start or to be reaped.

The pool runs ``active`` workers side by side (``[workers] active``), each one call at a
time: a call takes the free worker that answered last (its spin and its caches are still
warm), or waits for one in a bounded queue
(``max_queue`` calls) no longer than its deadline. A worker is judged on its own run only: its
deadline starts when it is handed the call. Time spent queueing is the service's overload,
never the model's failure: a call that cannot start in time is refused with ``WorkerBusy``
(DIA-7010) before any worker sees it, and the supervisor answers it from the fallback
without counting it against the model (DESIGN.md, invariant 8).

Each worker owns one shared-memory file (tmpfs) mapped by both processes::

    0   header: heartbeat_ns, call_seq, call_start_ns, call_deadline_ns, call_end_ns, busy
    64  input area  (tensors written by the supervisor)
    64+cap  output area (tensors written by the worker)

Tensors travel through the areas as raw bytes; the pipe between the processes carries only a
small message per call (the call number and each tensor's name, dtype, shape and offset). The
header's times are CLOCK_MONOTONIC, which all processes of the machine share: the supervisor
sees a call that is *still running* past its deadline, and a worker whose heartbeat thread
stopped (a frozen process).

The call path (:meth:`WorkerPool.call`), one call at a time per worker:

0. take a free active worker (or wait for one until the deadline; overload otherwise);
1. copy the input into the input area, write the deadline, send the message (with how long
   the worker may spin for its next call once it has answered);
2. spin on the pipe for up to ``spin_us`` where a core is free for it (:func:`spin_budget`),
   then wait on it until the deadline: an answer -> copy the output out of the output area;
   the pipe closing -> the process died (``WorkerLost``); the deadline, the call running ->
   the worker is killed and replaced (``WorkerTimeout``) -- the deadline counted from the
   start of the run its header records, so a worker that took the message late still gets
   its whole deadline; the call not even started by the deadline (the header's call number
   is still the previous one: a starved host) -> overload (``WorkerBusy``): the worker is
   kept out of the idle queue and judged on its late run;
   the model raised -> ``RemoteModelError`` with the outcome the worker classified it as
   (a process-fatal device error also replaces it);
3. failover swaps the standby in under the pool's lock (microseconds), then kills and reaps
   the lost process and starts a new standby on background threads. The LOST event says how
   many ready workers are left: at 0 the supervisor tells its state machine.

A monitor thread watches every worker between calls: a process that died or a heartbeat older
than ``heartbeat_timeout_ns`` is replaced the same way. Every start, loss and promotion is
reported through ``on_event`` (the supervisor records them as LIFECYCLE records).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, NamedTuple

from vigil import _diagnostics as D
from vigil.errors import (
    ConfigError,
    InvalidInput,
    RemoteModelError,
    WorkerBusy,
    WorkerError,
    WorkerLost,
    WorkerTimeout,
    WorkerUnavailable,
)
from vigil.schemas import Outcome
from vigil.supervisor._isolation import WorkerEvent
from vigil.workers._child import WorkerSpec, _spin_poll, _worker_main
from vigil.workers._shm import (
    _ALIGN,
    _CPU,
    _DEADLINE,
    _DTYPES,
    _END,
    _HEADER_SIZE,
    _HEARTBEAT,
    _SEQ,
    _SHM_DIR,
    _START,
    _flatten,
    _read,
    _SharedArea,
    _write,
)

__all__ = [
    "PoolStatistics",
    "WorkerEvent",
    "WorkerPool",
    "WorkerSpec",
]

# --- the supervisor's side -------------------------------------------------------------------


class _Worker:
    """A worker process as the pool sees it. ``lock`` is held by the one call using it (and
    by the reaper, which unmaps its memory only once no call reads it)."""

    __slots__ = (
        "conn",
        "digest",
        "late",
        "lock",
        "name",
        "pid",
        "process",
        "ready",
        "ready_ns",
        "role",
        "shm",
        "started",
    )

    def __init__(self, process: Any, conn: Connection, shm: _SharedArea, role: str) -> None:
        self.process = process
        self.conn = conn
        self.shm = shm
        self.role = role
        self.pid: int | None = None
        self.digest = b""
        self.ready = False
        self.started = time.monotonic_ns()
        self.ready_ns = 0  # when the pool installed it: no heartbeat is judged older
        self.name = ""
        self.lock = threading.Lock()
        self.late = False  # a call it had not started by its deadline is still in its pipe


class _Waiter:
    """A call waiting for a free worker; :meth:`WorkerPool._release` hands one over."""

    __slots__ = ("cond", "worker")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.worker: _Worker | None = None


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of the pool (see :meth:`WorkerPool.statistics`)."""

    active_pid: int | None  # the first active worker's pid (None: no worker is ready)
    standby_pid: int | None
    standby_ready: bool
    restarts: int
    failovers: int
    last_heartbeat_age_ns: int | None
    last_failover_ns: int | None
    calls: int
    busy: bool  # an active worker is inside a call
    active_pids: tuple[int, ...] = ()  # every ready active worker
    active_wanted: int = 1  # the configured number of active workers
    queued: int = 0  # calls waiting for a free active worker now
    overloads: int = 0  # calls refused because no worker was free in time (or queue full)


Event = Callable[[WorkerEvent, dict[str, Any]], None]


class WorkerPool:
    """``active`` worker processes serving calls side by side, and a hot standby.

    A call takes a free active worker (waiting in a bounded queue up to its deadline for one
    to come free) and runs on it alone; the worker is judged on its own run only: the
    deadline starts when the worker is handed the call, never while the call queued. A call
    that cannot start in time, or finds the queue full, is refused with ``WorkerBusy``
    (DIA-7010, overload) and no worker is touched.

    Args:
        spec: how each worker builds its model.
        standby: keep one more worker loaded and warm (failover in microseconds instead of a
            process start, which costs seconds).
        active: how many workers serve calls at once (each one call at a time).
        max_queue: at most this many calls wait for a free worker; more are refused at once.
        heartbeat_ns: how often each worker writes its heartbeat.
        heartbeat_timeout_ns: a worker whose heartbeat is older than this is replaced.
        start_timeout_ns: a worker not ready within this is killed (START_FAILED).
        on_event: called with each :class:`WorkerEvent` and its detail (from the pool's
            threads and from :meth:`call`); the supervisor records them.

    Raises:
        ConfigError: inconsistent arguments.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        standby: bool = True,
        active: int = 1,
        max_queue: int = 64,
        heartbeat_ns: int = 100_000_000,
        heartbeat_timeout_ns: int = 1_000_000_000,
        start_timeout_ns: int = 120_000_000_000,
        on_event: Event | None = None,
    ) -> None:
        if not isinstance(spec, WorkerSpec):
            raise ConfigError("WorkerPool needs a WorkerSpec")
        if heartbeat_timeout_ns <= heartbeat_ns:
            raise ConfigError("heartbeat_timeout_ns must exceed heartbeat_ns")
        if not isinstance(active, int) or not 1 <= active <= 64:
            raise ConfigError(f"WorkerPool: active={active!r} workers: 1 .. 64")
        if not isinstance(max_queue, int) or not 0 <= max_queue <= 1_000_000:
            raise ConfigError(f"WorkerPool: max_queue={max_queue!r}: 0 .. 1000000")
        self.spec = spec
        self.standby_enabled = standby
        self.active_wanted = active
        self.max_queue = max_queue
        self.heartbeat_ns = heartbeat_ns
        self.heartbeat_timeout_ns = heartbeat_timeout_ns
        self.start_timeout_ns = start_timeout_ns
        self.on_event = on_event
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # workers, idle queue, counters
        self._changed = threading.Condition(self._lock)  # a worker was installed or lost
        self._actives: list[_Worker] = []  # ready, serving
        self._idle: collections.deque[_Worker] = collections.deque()  # actives not in a call
        self._queue: collections.deque[_Waiter] = collections.deque()  # calls waiting, FIFO
        self._standby: _Worker | None = None
        self._starting = 0
        self._overloads = 0
        self._seq = 0
        self._restarts = 0
        self._failovers = 0
        self._calls = 0
        self._last_failover_ns: int | None = None
        self._digest: bytes | None = None
        self._closed = threading.Event()
        self._monitor: threading.Thread | None = None
        self._pending: set[_Worker] = set()  # spawned, not ready yet
        self._schedstat: Callable[[int], Sched | None] = read_schedstat  # injected by tests
        self._cores = usable_cores()  # injected by tests
        self._in_flight = 0  # calls handed to a worker and not yet answered
        self._spinner = False  # a caller spins on its worker's pipe now

    @property
    def _active(self) -> _Worker | None:
        """The first active worker (None: none is ready)."""
        actives = self._actives
        return actives[0] if actives else None

    # --- life --------------------------------------------------------------------------

    def start(self, timeout_s: float | None = None) -> None:
        """Start the workers and wait until the active ones (and the standby) are ready.

        Raises:
            WorkerError: a worker failed to start or load its model (DIA-7002), or the
                timeout passed first.
        """
        wanted = self._wanted()
        for _ in range(wanted):
            self._start_worker()
        limit = timeout_s if timeout_s is not None else self.start_timeout_ns / 1e9
        with self._changed:
            ok = self._changed.wait_for(
                lambda: self._ready_count() >= wanted or self._starting == 0, limit
            )
            count = self._ready_count()
        if not ok or count < wanted:
            self.close()
            raise WorkerError(
                f"{count} of {wanted} workers became ready (waited up to {limit:.0f} s): see "
                "the WORKER_START_FAILED records in the flight log for each worker's reason "
                "(the model could not be built, loaded or warmed up; a script that starts "
                "workers needs the `if __name__ == '__main__':` guard of spawn)",
                diagnostic=D.WORKER_START_FAILED,
            )
        self._monitor = threading.Thread(target=self._watch, name="vigil-pool", daemon=True)
        self._monitor.start()

    def _wanted(self) -> int:
        return self.active_wanted + (1 if self.standby_enabled else 0)

    def _ready_count(self) -> int:
        return len(self._actives) + (self._standby is not None)

    def _start_worker(self, *, counted: bool = False) -> None:
        """Spawn a worker; a thread waits for it to say ready and installs it. ``counted``:
        the caller has already counted it in ``_starting``.

        The shared-memory file is created and the worker registered as pending in one step
        under the lock, and not at all once the pool is closed: :meth:`close` unlinks every
        pending worker's file, so none is left behind by a close during a respawn.
        """
        with self._changed:
            if self._closed.is_set():
                if counted:
                    self._starting -= 1
                    self._changed.notify_all()
                return
            path = os.path.join(_SHM_DIR, f"vigil-worker-{os.getpid()}-{os.urandom(6).hex()}")
            shm = _SharedArea(path, self.spec.shm_bytes * 2 + _HEADER_SIZE, create=True)
            ours, theirs = self._ctx.Pipe(duplex=True)
            process = self._ctx.Process(
                target=_worker_main,
                args=(self.spec, path, theirs, self.heartbeat_ns),
                name="vigil-worker",
                daemon=True,
            )
            worker = _Worker(process, ours, shm, "starting")
            self._pending.add(worker)
            if not counted:
                self._starting += 1
        try:
            process.start()
        except BaseException:
            with self._changed:
                self._pending.discard(worker)
                self._starting -= 1
                self._changed.notify_all()
            shm.unlink()
            shm.close()
            theirs.close()
            ours.close()
            raise
        theirs.close()
        worker.pid = process.pid
        if self._closed.is_set():  # closed while it started: close() could not kill it
            with contextlib.suppress(OSError):
                process.kill()
        threading.Thread(
            target=self._await_ready, args=(worker,), name="vigil-pool-start", daemon=True
        ).start()

    def _await_ready(self, worker: _Worker) -> None:
        try:
            self._install(worker)
        finally:
            with self._lock:
                self._pending.discard(worker)

    def _install(self, worker: _Worker) -> None:
        detail: dict[str, Any] = {"pid": worker.pid}
        reason = ""
        try:
            if worker.conn.poll(self.start_timeout_ns / 1e9):
                status, _, digest, about = pickle.loads(worker.conn.recv_bytes())
                if status == "ready":
                    worker.digest = digest
                    detail.update(about)
                else:
                    reason = f"the worker could not build its model: {digest}"
            else:
                reason = f"not ready within {self.start_timeout_ns / 1e9:.0f} s"
        except (EOFError, OSError) as exc:
            reason = f"the worker died while starting (exit code {_exitcode(worker)}): {exc}"
        worker.shm.unlink()  # both processes have it mapped (or the worker is gone)
        if not reason and self._digest is not None and worker.digest != self._digest:
            reason = (
                f"the worker loaded model {worker.digest.hex()[:16]}, the pool runs "
                f"{self._digest.hex()[:16]}"
            )
            detail["code"] = D.WORKER_DIGEST_MISMATCH.code
        if reason or self._closed.is_set():
            self._discard(worker)
            if reason:  # recorded before start() can see the failure and close the log
                self._emit(WorkerEvent.START_FAILED, {**detail, "reason": reason})
            with self._changed:
                self._starting -= 1
                self._changed.notify_all()
            return
        with self._changed:
            self._starting -= 1
            worker.ready = True
            worker.ready_ns = time.monotonic_ns()
            if self._digest is None:
                self._digest = worker.digest
            if len(self._actives) < self.active_wanted:
                worker.role = "active"
                self._actives.append(worker)
                self._release(worker)
                promoted = True
            else:
                worker.role = "standby"
                self._standby = worker
                promoted = False
            self._changed.notify_all()
        self._emit(
            WorkerEvent.READY,
            {**detail, "role": worker.role, "model_digest": worker.digest.hex()},
        )
        if promoted and self._restarts:
            self._emit(WorkerEvent.PROMOTED, {"pid": worker.pid, "from": "cold start"})

    def close(self) -> None:
        """Stop every worker (they exit when their pipe closes; stragglers are killed)."""
        with self._changed:
            self._closed.set()  # under the lock: no worker is registered after this
            workers = [*self._actives, *([self._standby] if self._standby else [])]
            self._actives, self._standby = [], None
            self._idle.clear()
            starting = list(self._pending)
            self._wake_all()
            self._changed.notify_all()
        for w in starting:  # its start-up thread reaps it and unmaps its memory
            w.shm.unlink()
            with contextlib.suppress(OSError, AttributeError):  # not started yet: no popen
                w.process.kill()
        for w in workers:
            w.conn.close()
        for w in workers:
            w.process.join(2.0)
            self._discard(w)
        if self._monitor is not None:
            self._monitor.join(2.0)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the call ----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has brought a first worker up (the pool's digest is known)."""
        return self._digest is not None

    @property
    def digest(self) -> bytes:
        """SHA-256 naming the model every worker of this pool runs (known once started)."""
        if self._digest is None:
            raise WorkerError("the pool has not started: call start() first")
        return self._digest

    def check_input(self, x: Any) -> None:
        """Refuse, before any worker sees it, an input a worker cannot take.

        Raises:
            InvalidInput: not a tensor, a dict of str to tensors or a tuple of tensors, a
                dtype outside the supported set or a tensor off the CPU (DIA-7007), or more
                bytes than the shared-memory area holds (DIA-7005).
        """
        try:
            _, items = _flatten(x)
        except TypeError as exc:
            raise InvalidInput(str(exc), diagnostic=D.WORKER_UNSUPPORTED_IO) from None
        total = 0
        for name, t in items:
            if str(t.dtype) not in _DTYPES:
                raise InvalidInput(
                    f"input tensor {name!r}: dtype {t.dtype} is not supported "
                    f"(supported: {', '.join(_DTYPES)})",
                    diagnostic=D.WORKER_UNSUPPORTED_IO,
                )
            if t.device.type != "cpu":
                raise InvalidInput(
                    f"input tensor {name!r} is on {t.device}: pass CPU tensors (the supervisor "
                    "process never touches the device; the worker moves them)",
                    diagnostic=D.WORKER_UNSUPPORTED_IO,
                )
            total += (t.numel() * t.element_size() + _ALIGN - 1) // _ALIGN * _ALIGN
        capacity = self.spec.shm_bytes // _ALIGN * _ALIGN
        if total > capacity:
            raise InvalidInput(
                f"the input needs {total} bytes; the worker's shared memory holds {capacity} "
                "(raise [workers].shm_mb or send smaller batches)",
                diagnostic=D.WORKER_SHM_TOO_SMALL,
            )

    def call(self, x: Any, deadline_ns: int, *, wait_ns: int | None = None) -> tuple[Any, int]:
        """Run the model on ``x`` in a free active worker, which gets ``deadline_ns`` from
        the moment it is handed the call.

        Args:
            x: the input (CPU tensors).
            deadline_ns: the worker's time for this call, counted from when it starts it.
            wait_ns: how long the call may wait for a free worker (default: ``deadline_ns``).

        Returns:
            ``(output, latency_ns)``: CPU tensors the caller owns, and the model's time in the
            worker.

        Raises:
            InvalidInput: ``x`` is not a tensor, dict or tuple of CPU tensors, or does not fit
                the shared memory (DIA-7005) -- the worker never saw it.
            WorkerTimeout: no answer within ``deadline_ns`` of the start; the worker was
                killed and replaced.
            WorkerLost: the worker died during the call; the standby took over.
            RemoteModelError: the model raised in the worker.
            WorkerBusy: overload (DIA-7010): no worker came free within ``wait_ns``, or
                ``max_queue`` calls were waiting already. No worker saw the call.
            WorkerUnavailable: no worker is ready.
        """
        wait_end = time.monotonic_ns() + (deadline_ns if wait_ns is None else wait_ns)
        worker = self._take(wait_end)
        try:
            with worker.lock:
                return self._run(worker, x, deadline_ns)
        finally:
            with self._lock:
                if worker.role == "active" and worker in self._actives and not worker.late:
                    self._release(worker)

    def _release(self, worker: _Worker) -> None:
        """(Under the lock.) Hand a free active worker to the longest-waiting call (first
        come, first served, so no waiting call starves), or put it on the idle stack: the
        next call takes the worker that answered last, which may still be spinning for it
        with warm caches (a queue would hand each call to the coldest worker)."""
        if self._queue:
            waiter = self._queue.popleft()
            waiter.worker = worker
            waiter.cond.notify()
        else:
            self._idle.append(worker)

    def _wake_all(self) -> None:
        """(Under the lock.) Wake every waiting call: the set of workers changed."""
        for waiter in self._queue:
            waiter.cond.notify()

    def _take(self, wait_end: int) -> _Worker:
        """A free active worker, waiting (in a bounded FIFO queue) until ``wait_end``."""
        with self._lock:
            if self._idle and not self._queue:
                return self._idle.pop()
            if not self._actives:
                raise WorkerUnavailable("no worker is ready (all lost; a new one is starting)")
            if len(self._queue) >= self.max_queue:
                self._overloads += 1
                raise WorkerBusy(
                    f"overload: {len(self._queue)} calls already wait for a worker (max_queue "
                    f"{self.max_queue}); this call was not run"
                )
            waiter = _Waiter(self._lock)
            self._queue.append(waiter)
            while waiter.worker is None:
                left = wait_end - time.monotonic_ns()
                if not self._actives or left <= 0:
                    self._queue.remove(waiter)
                    if not self._actives:
                        raise WorkerUnavailable(
                            "no worker is ready (all lost; a new one is starting)"
                        )
                    self._overloads += 1
                    raise WorkerBusy(
                        f"overload: no worker came free in time ({len(self._actives)} busy "
                        "with other calls); this call was not run"
                    )
                waiter.cond.wait(left / 1e9)
            return waiter.worker

    def _run(self, worker: _Worker, x: Any, deadline_ns: int) -> tuple[Any, int]:
        """One call on ``worker``, which the caller holds alone; the deadline starts now."""
        try:
            kind, specs = _write(worker.shm.inputs, x, "the input")
        except TypeError as exc:
            raise InvalidInput(str(exc), diagnostic=D.WORKER_UNSUPPORTED_IO) from None
        except OverflowError as exc:
            raise InvalidInput(str(exc), diagnostic=D.WORKER_SHM_TOO_SMALL) from None
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._in_flight += 1
            spin, worker_spin = spin_budget(
                self.spec.spin_us * 1000, self._in_flight, self._cores, self._spinner
            )
            self._spinner = self._spinner or spin > 0
        try:
            return self._exchange(worker, seq, (seq, kind, specs, worker_spin), spin, deadline_ns)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _exchange(
        self, worker: _Worker, seq: int, message: tuple[Any, ...], spin: int, deadline_ns: int
    ) -> tuple[Any, int]:
        """Send call ``seq`` (``message``) to ``worker``, spin ``spin`` ns on its pipe (this
        thread holds the pool's one spinner slot when ``spin`` > 0), then wait for the
        answer until the deadline and read it."""
        end = time.monotonic_ns() + deadline_ns
        worker.shm.put(_DEADLINE, end)
        try:
            try:
                worker.conn.send_bytes(pickle.dumps(message))
                spun = _spin_poll(worker.conn, spin)
            finally:
                if spin:
                    self._spinner = False  # the slot's holder alone clears it, sent or not
            if not spun and not self._answered(worker, seq, end, deadline_ns):
                self._fail(worker, _late(worker.shm, seq), D.DEADLINE_MISSED)
                raise WorkerTimeout(
                    f"worker {worker.pid} gave no answer within {deadline_ns / 1e6:.1f} ms of "
                    "starting the call: killed and replaced"
                )
            reply = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            code = _code(worker)  # no join here: reaping is the background's
            self._fail(worker, f"died during a call (exit code {code})", D.WORKER_LOST)
            raise WorkerLost(f"worker {worker.pid} died during the call") from exc
        with self._lock:
            self._calls += 1
        latency = worker.shm.get(_END) - worker.shm.get(_START)
        rseq, status, a, b = reply
        if rseq != seq:  # cannot happen with one call at a time: fail closed if it does
            self._fail(worker, f"answered call {rseq}, expected {seq}", D.WORKER_LOST)
            raise WorkerLost(f"worker {worker.pid} answered another call")
        if status == "ok":
            return _read(worker.shm.outputs, a, b, copy=True), latency
        outcome, code_s, text = a
        diagnostic = D.lookup(code_s)
        if Outcome(outcome) is Outcome.DEVICE_FATAL:
            self._fail(worker, "process-fatal device error", diagnostic)
        raise RemoteModelError(text, diagnostic=diagnostic, outcome=Outcome(outcome))

    def _answered(self, worker: _Worker, seq: int, end: int, deadline_ns: int) -> bool:
        """Wait for the answer to call ``seq``: until ``end``, then -- a worker is judged on
        its own run -- until ``deadline_ns`` after the start its header records. False: it
        ran that long without answering (hung). A worker that had not even started the call
        by ``end``, or that is still waiting for a CPU having had less than its deadline of
        one (:func:`starved`), is starved, not hung: it raises ``WorkerBusy`` and is judged
        later (:meth:`_adopt_late`)."""
        if worker.conn.poll(max(0, end - time.monotonic_ns()) / 1e9):
            return True
        if _ran_ns(worker.shm, seq) is None:
            self._adopt_late(worker, seq, deadline_ns)
            raise WorkerBusy(
                f"overload: worker {worker.pid} had not started the call by its deadline "
                f"({deadline_ns / 1e6:.1f} ms; the host is starved): the fallback answers; "
                "the worker runs it later and is judged on that run"
            )
        own_end = worker.shm.get(_START) + deadline_ns
        if worker.conn.poll(max(0, own_end - time.monotonic_ns()) / 1e9):
            return True
        why = self._starved(worker, deadline_ns)
        if why is None:
            return False  # it had the CPU, or waits on something else: hung
        self._adopt_late(worker, seq, deadline_ns)
        raise WorkerBusy(
            f"overload: worker {worker.pid} was starved of CPU during its "
            f"{deadline_ns / 1e6:.1f} ms deadline ({why}): not hung, not killed; the fallback "
            "answers and the worker is judged on its CPU time"
        )

    def _adopt_late(self, worker: _Worker, seq: int, deadline_ns: int) -> None:
        """The call's deadline passed before ``worker`` even started it (the message sits in
        its pipe: the process was not scheduled). That is no proof of a hang, so the worker
        is not killed:
        it stays out of the idle queue while a thread waits for it to start the call and
        judges it on its own run (``deadline_ns`` from its start, or, while it is starved of
        CPU, ``deadline_ns`` of CPU time); one that does not start, or stays starved, within
        the heartbeat timeout is replaced (frozen)."""
        with self._lock:
            self._overloads += 1
            worker.late = True
        threading.Thread(
            target=self._drain,
            args=(worker, seq, deadline_ns),
            name="vigil-pool-late",
            daemon=True,
        ).start()

    def _drain(self, worker: _Worker, seq: int, deadline_ns: int) -> None:
        with worker.lock:  # after the caller let go of it
            give_up = time.monotonic_ns() + self.heartbeat_timeout_ns
            try:
                reason = self._wait_late(worker, seq, deadline_ns, give_up)
            except (EOFError, OSError, ValueError) as exc:
                reason = f"died during a late call: {exc!r}"
        if reason:
            code = D.DEADLINE_MISSED if reason.startswith("deadline") else D.WORKER_LOST
            self._fail(worker, reason, code)
            return
        with self._lock:
            worker.late = False
            if worker.role == "active" and worker in self._actives:
                self._release(worker)

    def _starved(self, worker: _Worker, deadline_ns: int) -> str | None:
        """Why the worker running a call past its deadline is starved (None: hung)."""
        now = None if worker.pid is None else self._schedstat(worker.pid)
        return None if now is None else starved(worker.shm.get(_CPU), now, deadline_ns)

    def _wait_late(self, worker: _Worker, seq: int, deadline_ns: int, give_up: int) -> str:
        """Wait for a late call's answer; "" when it came, else why the worker is replaced:
        it ran ``deadline_ns`` having had the CPU, or never started / stayed starved until
        ``give_up``."""
        look_again = 0  # while starved: when to judge again
        while True:
            started = worker.shm.get(_SEQ) == seq
            until = give_up
            if started:
                until = min(max(worker.shm.get(_START) + deadline_ns, look_again), give_up)
            if worker.conn.poll(max(0, until - time.monotonic_ns()) / 1e9):
                rseq = pickle.loads(worker.conn.recv_bytes())[0]
                return "" if rseq == seq else f"answered call {rseq}, expected {seq}"
            if not started:  # waited until give_up for it to start
                if worker.shm.get(_SEQ) == seq:
                    continue  # it started meanwhile: judge it on its run
                return "deadline: the worker never started a late call (frozen)"
            why = self._starved(worker, deadline_ns)
            if why is None:
                return _late(worker.shm, seq)
            if until >= give_up:
                return f"deadline: starved of CPU past the heartbeat timeout ({why})"
            look_again = time.monotonic_ns() + deadline_ns

    def __call__(self, x: Any) -> Any:
        """Run one call with the pool's start timeout as its deadline (for warm-up and
        tests; the supervisor calls :meth:`call` with its own deadline)."""
        return self.call(x, self.start_timeout_ns)[0]

    # --- failover ----------------------------------------------------------------------

    def _fail(self, worker: _Worker, reason: str, code: D.Diagnostic) -> None:
        """Replace ``worker`` if it is still installed: promote the standby now, kill and
        reap the lost process and start a new standby in the background."""
        t0 = time.monotonic_ns()
        with self._changed:
            if worker in self._actives:
                self._actives.remove(worker)
                with contextlib.suppress(ValueError):
                    self._idle.remove(worker)
                promoted = self._standby
                self._standby = None
                if promoted is not None:
                    promoted.role = "active"
                    self._actives.append(promoted)
                    self._release(promoted)
                    self._failovers += 1
            elif worker is self._standby:
                promoted, self._standby = None, None
            else:
                return  # replaced already (the monitor and a caller may both see it)
            worker.role = "lost"
            self._restarts += 1
            self._last_failover_ns = time.monotonic_ns() - t0
            left = self._ready_count()
            replace = not self._closed.is_set()
            if replace:
                self._starting += 1  # counted now: alive() stays true until it is ready
            self._wake_all()  # no worker may be left: the waiting calls must know
            self._changed.notify_all()
        with contextlib.suppress(OSError):
            worker.process.kill()
        self._emit(
            WorkerEvent.LOST,
            {"pid": worker.pid, "reason": reason, "code": code.code, "ready_left": left},
        )
        if promoted is not None:
            self._emit(
                WorkerEvent.PROMOTED,
                {
                    "pid": promoted.pid,
                    "lost_pid": worker.pid,
                    "failover_ns": self._last_failover_ns,
                },
            )
        threading.Thread(target=self._discard, args=(worker,), daemon=True).start()
        if replace:  # spawning costs tens of ms (fork, exec): never on the caller's path
            threading.Thread(target=self._replace, name="vigil-pool-spawn", daemon=True).start()

    def _replace(self) -> None:
        try:
            self._start_worker(counted=True)
        except Exception as exc:  # fork failed (memory, pids): the pool runs on with less
            self._emit(WorkerEvent.START_FAILED, {"pid": None, "reason": f"spawn: {exc}"})
            with self._changed:
                self._starting -= 1
                self._changed.notify_all()

    def _discard(self, worker: _Worker) -> None:
        """Kill, reap and release a worker: its pipe, shared memory and process object (whose
        sentinel is a pipe). Safe to call twice, and on a process object already closed."""
        if _alive(worker):
            with contextlib.suppress(OSError):
                worker.process.kill()
        with contextlib.suppress(ValueError):  # closed by an earlier discard
            worker.process.join(5.0)
        with worker.lock:  # a call still reading this worker's areas finishes first
            with contextlib.suppress(OSError):
                worker.conn.close()
            try:
                worker.shm.unlink()
                worker.shm.close()
            finally:
                if _code(worker) is not None:  # reaped: release its sentinel pipe now,
                    worker.process.close()  # not whenever the garbage collector gets to it

    def _watch(self) -> None:
        """The monitor: replaces a worker that died or whose heartbeat stopped."""
        period = self.heartbeat_ns / 1e9
        while not self._closed.is_set():
            with self._lock:
                workers = [*self._actives, *([self._standby] if self._standby else [])]
            wait([w.process.sentinel for w in workers], timeout=period)
            if self._closed.is_set():
                return
            self._check(time.monotonic_ns())

    def _check(self, now: int) -> None:
        """One look at every installed worker at ``now`` (CLOCK_MONOTONIC, ns)."""
        with self._lock:  # only those still installed, read under the lock: a lost one
            installed = [*self._actives, *([self._standby] if self._standby else [])]
            beats = [(w, w.shm.get(_HEARTBEAT)) for w in installed]  # may be unmapped later
        for w, beat in beats:
            if not _alive(w):
                self._fail(w, f"died (exit code {_exitcode(w)})", D.WORKER_LOST)
                continue
            # a worker is judged from when it was installed: its first beat may be written
            # after its "ready" (the beat thread had not run yet), and reads 0 until then
            age = now - max(beat, w.ready_ns)
            if age > self.heartbeat_timeout_ns:
                self._fail(w, f"heartbeat {age / 1e6:.0f} ms old", D.WORKER_HEARTBEAT)

    def _emit(self, event: WorkerEvent, detail: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event, detail)
        except Exception:  # a recorder failure must not stop failover
            traceback.print_exc()

    # --- observation -------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        with self._lock:
            actives, standby = list(self._actives), self._standby
            first = actives[0] if actives else None
            age = None if first is None else time.monotonic_ns() - first.shm.get(_HEARTBEAT)
            return PoolStatistics(
                active_pid=None if first is None else first.pid,
                standby_pid=None if standby is None else standby.pid,
                standby_ready=standby is not None,
                restarts=self._restarts,
                failovers=self._failovers,
                last_heartbeat_age_ns=age,
                last_failover_ns=self._last_failover_ns,
                calls=self._calls,
                busy=any(w.shm.busy() for w in actives),
                active_pids=tuple(w.pid for w in actives if w.pid is not None),
                active_wanted=self.active_wanted,
                queued=len(self._queue),
                overloads=self._overloads,
            )

    def alive(self) -> bool:
        """A worker serves, waits as standby, or is starting: the pool can still answer."""
        with self._lock:
            return bool(self._actives) or self._standby is not None or self._starting > 0

    def ready_workers(self) -> int:
        """How many workers are loaded and installed (active and standby) now."""
        with self._lock:
            return self._ready_count()

    def wait_standby(self, timeout_s: float) -> bool:
        """Block until every worker is ready: the active ones and the standby (if any)."""
        want = self._wanted()
        with self._changed:
            return self._changed.wait_for(lambda: self._ready_count() >= want, timeout_s)

    def running(self) -> int | None:
        """The pid of an active worker while it is inside a call, else None."""
        for worker in list(self._actives):
            with contextlib.suppress(ValueError):  # lost and unmapped meanwhile
                if worker.shm.busy():
                    return worker.pid
        return None

    def wait_running(self, timeout_s: float) -> int | None:
        """Block until an active worker is inside a call (the worker sets a flag in shared
        memory when it starts one); return its pid, or None after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            pid = self.running()
            if pid is not None:
                return pid
            self._closed.wait(0.001)
        return None


class Sched(NamedTuple):
    """A worker's main thread as the scheduler sees it (Linux ``/proc/PID/...``)."""

    on_cpu_ns: int  # CPU time so far (the thread's CLOCK_THREAD_CPUTIME_ID)
    runnable: bool  # state R: running, or waiting on a run queue for a CPU


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where the
    platform has no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def spin_budget(spin_ns: int, in_flight: int, cores: int, spinner: bool) -> tuple[int, int]:
    """How long the caller may spin on a worker's pipe for this call, and how long the worker
    may spin for its next call once it has answered: ``(caller_ns, worker_ns)``.

    A spin trades a core's time for a wake-up (~0.4 ms on an idle VM: bench/bench_wakeups.py)
    and pays only while a core is free for it. The calls in flight (this one included) each
    keep a worker on a core -- computing, or waiting on its device, which CUDA's own
    synchronisation does by spinning where cores are free -- and the supervisor needs one
    more: so nobody spins once ``in_flight + 1`` exceeds ``cores`` (two spinning workers on 2
    vCPUs took the pool from 1030 to 635 calls/s: docs/PERFORMANCE.md, run Q). The callers
    are threads of one interpreter, so at most one of them spins at a time (a second would
    spin against the first for the GIL); the others wait in ``poll``."""
    if not spin_ns or in_flight + 1 > cores:
        return 0, 0
    return (0 if spinner else spin_ns), spin_ns


def read_schedstat(pid: int) -> Sched | None:
    """The worker's main thread (it runs the model); None where the kernel has no schedstat
    or the process is gone: the pool then judges on wall time alone."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            on_cpu = int(f.read().split()[0])
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]  # the name may hold ") "
    except (OSError, ValueError, IndexError):
        return None
    return Sched(on_cpu, state == b"R")


def starved(cpu_at_start: int, now: Sched, deadline_ns: int) -> str | None:
    """Why a worker past its deadline is starved, not hung (None: hung).

    Starved: its main thread is runnable (waiting for a CPU, or on one) and has had less
    than ``deadline_ns`` of CPU since it started the call (``cpu_at_start``, the thread's
    CPU time its header records). A busy hang has had its deadline of CPU; a blocked or
    stopped worker (a deadlock, a sleep, SIGSTOP) is not runnable: both are hung. On a
    GPU the main thread waits for the device (not runnable): the wall-clock rule."""
    ran = now.on_cpu_ns - cpu_at_start
    if not now.runnable or ran >= deadline_ns:
        return None
    return f"runnable, {ran / 1e6:.1f} ms on a CPU since the call started"


def _ran_ns(shm: _SharedArea, seq: int) -> int | None:
    """How long the worker has been running call ``seq`` (None: it has not started it)."""
    if shm.get(_SEQ) != seq:
        return None
    return time.monotonic_ns() - shm.get(_START)


def _late(shm: _SharedArea, seq: int) -> str:
    """Why a call missed its deadline, from the worker's header: running (for how long), or
    not started at all (the worker never took the message: starved or frozen)."""
    try:
        if shm.get(_SEQ) != seq:
            return "deadline: the worker had not started the call"
        return f"deadline: the call ran {(time.monotonic_ns() - shm.get(_START)) / 1e6:.1f} ms"
    except ValueError:  # unmapped meanwhile
        return "deadline"


def _exitcode(worker: _Worker) -> int | None:
    with contextlib.suppress(ValueError):  # closed: discarded (and reaped) already
        worker.process.join(0.05)
    return _code(worker)


def _code(worker: _Worker) -> int | None:
    """The worker's exit code, None while it runs or once its process object is closed."""
    try:
        code: int | None = worker.process.exitcode
    except ValueError:  # closed by _discard: reaped, its sentinel released
        return None
    return code


def _alive(worker: _Worker) -> bool:
    try:
        return bool(worker.process.is_alive())
    except ValueError:  # closed by _discard
        return False
