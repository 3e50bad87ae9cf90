"""The supervisor: every call routed, bounded in time, checked and audited.

Theory of operation
-------------------
``infer(x)``:

1. check ``x`` against the input contract; a violation raises ``InvalidInput`` to the caller
   and leaves a REJECTED record (the model never sees the input);
2. ask the state machine who answers (under a lock of a few microseconds; time-driven
   transitions are recorded here, with no causing call);
3. run the primary under a deadline armed on the one watchdog thread. With
   ``isolation="thread"`` (the default) the primary runs on a worker thread and the caller
   waits for whichever comes first, the answer or the deadline: a hung model costs the caller
   its deadline, never more. With ``isolation="inline"`` the caller runs the model itself
   (~20 µs less per call), and a hung model holds its caller until it returns -- only later
   callers are protected. With ``isolation="process"`` the primary is a
   :class:`~vigil.workers.WorkerPool`: the model runs in a worker process, a call past its
   deadline kills that process, and a hot standby takes over (docs/SERVICE.md); a lost
   worker, a process-fatal device error or a frozen heartbeat is an outcome like any other,
   and its LIFECYCLE records (WORKER_LOST, WORKER_PROMOTED, WORKER_READY) are written here;
   A model that refuses the input at its own boundary (it raises ``InputRefused``, as the
   reference decoder's validation does) is treated like step 1: a REJECTED record with the
   model's code, the error raised to the caller, nothing held against the model;
4. check the output (the output contract, or finite values) and hash it: a bad output is a
   model failure, and so is a check that itself fails (a sticky CUDA error surfacing at the
   check's synchronisation counts as DEVICE_FATAL) -- nothing unchecked is ever served;
5. answer: the primary's output, or the first fallback in the chain that can answer (a
   fallback model, whose output passes ``fallback_contract``; the last good output up to a
   maximum age; a constant), or ``Unavailable``;
6. under one lock, let the state machine count the outcome and append the INFERENCE record and
   the TRANSITION records it caused, so that the log's order is the machine's order and
   ``vigil replay`` can re-run it exactly.

While a call that missed its deadline is still running, the primary is *hung*: calls route to
the fallback (DIA-4008) until it returns (its late return is annotated in the log).

The primary and its digest are one immutable pair (:class:`_Primary`), read once per call
with a single attribute read and carried with the call to the worker thread and into the
INFERENCE record: every record names the digest of the model that actually ran (or would have
run) the call, even while :meth:`Supervisor.swap_primary` replaces the pair (hot reload).

No lock is ever held across a model call. Every ``infer`` call leaves exactly one INFERENCE or
REJECTED record; every state change exactly one TRANSITION record, after the record of the
call that caused it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import torch

from vigil import _diagnostics as D
from vigil.auditlog import Clock, FlightRecorder, RingConfig, SystemClock
from vigil.auditlog._clock import BridgedClock
from vigil.errors import (
    ConfigError,
    InputRefused,
    InvalidArgument,
    InvalidInput,
    LogClosed,
    LogError,
    RemoteModelError,
    Unavailable,
    WorkerBusy,
    WorkerLost,
    WorkerTimeout,
    WorkerUnavailable,
)
from vigil.fsm import MachineStatistics, Policy, Route, SafetyMachine, Transition
from vigil.schemas import CallFlags, Contract, LifecycleEvent, Outcome, Result, ServedBy, State
from vigil.supervisor import _tensors as T
from vigil.supervisor._digester import Digester, DigesterStatistics
from vigil.supervisor._fallbacks import Fallback, FallbackChain, LastGood, as_chain
from vigil.supervisor._isolation import ProcessPool, WorkerEvent, is_process_pool
from vigil.supervisor._restore import restore_snapshot
from vigil.supervisor._watchdog import Ticket, Watchdog

Isolation = Literal["thread", "inline", "process"]
"""Where the primary runs: a worker thread (the deadline is the watchdog's), the caller's own
thread (cheapest; a hang holds the caller), or worker processes (a ``ProcessPool``)."""


class Checker(Protocol):
    """A contract: ``check`` raises :class:`~vigil.errors.InvalidInput` (with its DIA-21xx
    code) when ``value`` breaks it (:class:`vigil.schemas.Contract` is the one vigil ships)."""

    def check(self, value: Any, *, field: str = ...) -> None: ...


_NO_CODE = 0
_ZERO_DIGEST = bytes(32)
_KA_REQUEST = b"known-answer\x00\x00\x00\x00"
# Plain ints on the hot path: IntFlag arithmetic builds enum members in Python (~1 µs each).
_PROBE, _SHADOW = int(CallFlags.PROBE), int(CallFlags.SHADOW)
_COUNTED, _KNOWN = int(CallFlags.COUNTED), int(CallFlags.KNOWN_ANSWER)
_DIGEST_FOLLOWS = int(CallFlags.DIGEST_FOLLOWS)
_DEFERRED = b""  # an attempt's digest that is not computed yet: its snapshot is ``pending``
DIGEST_THRESHOLD = 64 * 1024
"""Outputs of more bytes than this are digested off the caller's path by default."""
_DRAIN_S = 30.0  # close() waits this long at most for the queued digests
_CLOSE_GRACE_S = 1.0  # close() waits for calls in flight: their deadline and this long
_GRAD_ENABLED = torch.is_grad_enabled
_SET_GRAD = torch.set_grad_enabled
DIGESTER_ANNOTATION = "vigil.digester"
"""The ANNOTATION key under which a supervisor declares its digest queue's bound."""


@dataclass(frozen=True)
class KnownAnswer:
    """A fixed input whose correct output is known: proves the model answers *correctly*.

    ``expected`` is compared with ``torch.allclose(atol, rtol)`` tensor by tensor (same
    structure and shapes required).
    """

    input: Any
    expected: Any
    atol: float = 1e-5
    rtol: float = 1e-4

    def __post_init__(self) -> None:
        """Refuse what could never match, or always would (ConfigError, DIA-1001)."""
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"KnownAnswer {name}={value!r}: a finite number >= 0")
        try:
            T.check_finite(self.expected, field="KnownAnswer expected")
        except InvalidInput as exc:  # no tensor, or NaN/Inf: no output could ever match
            raise ConfigError(exc.message) from None

    def fresh_input(self) -> Any:
        """A copy of the input for one probe: a model that writes into its input in place
        must not change the next probe's."""
        return _copied(self.input)

    def matches(self, output: Any) -> bool:
        got, want = T.tensors_of(output), T.tensors_of(self.expected)
        if len(got) != len(want):
            return False
        return all(
            g.shape == w.shape
            and bool(torch.allclose(g.detach().to(w.device, w.dtype), w, self.rtol, self.atol))
            for g, w in zip(got, want, strict=True)
        )


@dataclass(frozen=True)
class SupervisorStatistics:
    """A snapshot of the supervisor (see :meth:`Supervisor.statistics`)."""

    state: State
    calls: int
    rejected: int
    unavailable: int
    served: dict[str, int]
    outcomes: dict[str, int]
    hung: int
    latency_p50_ns: int
    latency_p99_ns: int
    machine: MachineStatistics
    log_head_seq: int
    digester: DigesterStatistics | None = None  # None when every output is hashed inline
    clock_failures: int = 0  # reads of an injected clock that raised, bridged (BridgedClock)


def _sized(value: Any, n: int) -> bool:
    """``value`` is ``n`` bytes (bytes, bytearray or memoryview)."""
    return isinstance(value, bytes | bytearray | memoryview) and len(value) == n


def _copied(value: Any) -> Any:
    """``value`` with every tensor cloned where it is (structures rebuilt, the rest shared)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_copied(v) for v in value)
    return value


def _bridged(clock: Clock) -> Clock:
    return clock if isinstance(clock, SystemClock | BridgedClock) else BridgedClock(clock)


class _Primary(NamedTuple):
    """The primary model and the digest that names it, swapped together, never apart."""

    model: Callable[[Any], Any]
    digest: bytes


class _Slot:
    """One primary call handed to a worker thread, with the model it must run."""

    __slots__ = (
        "done",
        "error",
        "late",
        "latency_ns",
        "model",
        "output",
        "request_id",
        "ticket",
        "timed_out",
        "x",
    )

    def __init__(self, model: Callable[[Any], Any] | None, x: Any, request_id: bytes) -> None:
        self.model = model
        self.x = x
        self.request_id = request_id
        self.done = threading.Lock()
        self.done.acquire()  # released once: by the worker in time, or by the watchdog
        self.output: Any = None
        self.error: BaseException | None = None
        self.latency_ns = 0
        self.timed_out = False
        self.late = False  # returned after its deadline, but before the watchdog claimed it
        self.ticket: Ticket | None = None


class _Trace(NamedTuple):
    """The caller's W3C trace context, as recorded."""

    trace_id: bytes | None
    span_id: bytes


_NO_TRACE = _Trace(None, bytes(8))


class _Call(NamedTuple):
    """What every step of one ``infer`` call needs to know about it."""

    request_id: bytes
    input_digest: bytes
    state: State
    start_ns: int
    primary: _Primary  # read once when the call began
    trace: _Trace


class _Answer(NamedTuple):
    """A fallback's answer."""

    output: Any
    served_by: ServedBy
    age_ns: int
    digest: bytes


class _Attempt(NamedTuple):
    """How the primary's part of a call ended."""

    outcome: Outcome
    code: D.Diagnostic | None
    reason: str
    output: Any = None
    latency_ns: int = 0
    digest: bytes = _ZERO_DIGEST  # of the output, computed where the output was checked
    pending: tuple[Any, int] | None = None  # digest _DEFERRED: (snapshot, bytes) to hash


_ROUTE_PRIMARY = Route.PRIMARY
_NOBODY = _Answer(None, ServedBy.NONE, 0, _ZERO_DIGEST)


@dataclass
class _Counters:
    calls: int = 0
    rejected: int = 0
    unavailable: int = 0
    served: collections.Counter[ServedBy] = field(default_factory=collections.Counter)
    outcomes: collections.Counter[Outcome] = field(default_factory=collections.Counter)
    latencies: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )


class Supervisor:
    """Guards a primary model: answers within a deadline, degrades, recovers, records.

    Args:
        primary: the model (any callable, usually an ``nn.Module`` in eval mode).
        log: a path (the flight log is created, or opened and continued) or an open
            :class:`~vigil.auditlog.FlightRecorder` (the caller keeps owning it).
        fallback: a callable, a :class:`FallbackModel`, :class:`LastGood`, :class:`Constant`,
            a list of them (tried in order), or None (then ``Unavailable`` is raised whenever
            the primary may not or cannot answer).
        policy: the state machine's :class:`~vigil.fsm.Policy`.
        deadline_ns: each primary call's deadline.
        input_contract, output_contract: objects with ``check(value, field=...)`` raising
            ``InvalidInput`` (see :mod:`vigil.schemas`); without an output contract, outputs
            must hold only finite floating values. Every primary output is checked with the
            output contract, in shadow mode too.
        fallback_contract: the check for a fallback *model*'s output (same protocol); by
            default every floating value must be finite. Kept apart from the output contract,
            which may be stateful (e.g. strictly increasing timestamps) and is the primary's.
            The last good output was checked when the primary produced it; a
            :class:`Constant` is trusted as configured.
        known_answer: a :class:`KnownAnswer`; required by ``probe_mode="known_answer"`` and by
            ``probe_interval_ns``.
        isolation: ``"thread"`` (bounded answer time), ``"inline"`` (lowest overhead) or
            ``"process"`` (``primary`` is a :class:`~vigil.workers.WorkerPool`, started here
            if it was not, and closed with the supervisor).
        workers: worker threads for ``isolation="thread"``.
        clock: timestamps for the log and time for the state machine (a
            :class:`~vigil.auditlog.Clock`); inject one to simulate time.
        model_digest: 32 bytes identifying the primary; by default SHA-256 of its parameters
            (an ``nn.Module``) or of its ``repr``. For a signed artifact, pass its digest
            (:attr:`vigil.model.LoadedModel.digest`).
        ring, durability: for a log created here (see :class:`~vigil.auditlog.RingConfig`).

    Raises:
        ConfigError: inconsistent arguments (the message names them).
        LogError: the flight log cannot be opened (see :mod:`vigil.errors`).
    """

    def __init__(
        self,
        primary: Callable[[Any], Any],
        *,
        log: str | os.PathLike[str] | FlightRecorder,
        fallback: FallbackChain = None,
        policy: Policy | None = None,
        deadline_ns: int = 50_000_000,
        input_contract: Checker | None = None,
        output_contract: Checker | None = None,
        fallback_contract: Checker | None = None,
        known_answer: KnownAnswer | None = None,
        isolation: Isolation = "thread",
        workers: int = 4,
        clock: Clock | None = None,
        model_digest: bytes | None = None,
        ring: RingConfig | None = None,
        durability: str = "batch",
        digest_threshold: int = DIGEST_THRESHOLD,
        digest_queue: int = 64,
    ) -> None:
        self.policy = policy or Policy()
        _check_arguments(
            primary,
            isolation=isolation,
            deadline_ns=deadline_ns,
            workers=workers,
            policy=self.policy,
            known_answer=known_answer,
            contracts=(
                ("input_contract", input_contract),
                ("output_contract", output_contract),
                ("fallback_contract", fallback_contract),
            ),
            model_digest=model_digest,
            digest_threshold=digest_threshold,
            digest_queue=digest_queue,
        )
        _check_log_and_clock(log, clock)
        self.deadline_ns = deadline_ns
        self.isolation = isolation
        self._chain: list[Fallback] = as_chain(fallback)
        self._last_good = next((f for f in self._chain if isinstance(f, LastGood)), None)
        self._input_contract = input_contract
        self._output_contract = output_contract
        self._screen_in = _screen_of(input_contract)
        self._screen_out = _screen_of(output_contract)
        self._fallback_check: Callable[..., None] = (
            T.check_finite if fallback_contract is None else fallback_contract.check
        )
        self._known = known_answer
        # the system clock cannot fail; any other one is bridged where a read fails
        self._clock: Clock = SystemClock() if clock is None else _bridged(clock)
        self._mono = self._clock.monotonic_ns
        self._pool: ProcessPool | None = primary if is_process_pool(primary) else None
        self._plain_inline = isolation == "inline" and self._pool is None
        self._current = _Primary(primary, model_digest or bytes(32))
        self._slow_ns = self.policy.slow_call_ns
        self._session = uuid.uuid4().bytes[:8]
        self._requests = itertools.count(1)  # next() is atomic under the GIL
        self._modes = {
            Route.PRIMARY: "primary",
            Route.FALLBACK: "fallback",
            Route.PROBE: self.policy.probe_mode,
        }
        self._primary_mode = self._modes[Route.PRIMARY]
        self._lock = threading.Lock()
        self._hung = 0  # primary calls past their deadline and still running
        self._hung_changed = threading.Condition(self._lock)
        self._closed = False
        self._flight: collections.deque[None] = collections.deque()
        self._drained = threading.Event()
        self._close_lock = threading.Lock()
        self._counters = _Counters()
        self._open_log(log, ring, durability)
        self._start_primary(primary, model_digest)
        self._watchdog = Watchdog(self._mono, name="vigil-watchdog")
        self._queue: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        if isolation == "thread":
            for i in range(workers):
                t = threading.Thread(target=self._work, name=f"vigil-primary-{i}", daemon=True)
                t.start()
                self._workers.append(t)
        self._defer_above: int | None = None  # outputs larger than this: digested off-path
        self._digester: Digester | None = None
        if digest_threshold > 0:
            self._start_digester(digest_threshold, digest_queue)

    def _open_log(
        self, log: str | os.PathLike[str] | FlightRecorder, ring: RingConfig | None, durability: str
    ) -> None:
        """Open (or adopt) the flight log, restore the state machine from it, and record the
        policy and what was restored."""
        snapshot, restored = restore_snapshot(log, self.policy, self._clock.realtime_ns())
        if isinstance(log, FlightRecorder):
            self.log, self._owns_log = log, False
        else:
            path = os.fspath(log)
            options = {
                "clock": self._clock,
                "durability": durability,
                "policy_digest": self.policy.digest(),
            }
            if os.path.exists(path):
                self.log = FlightRecorder.open(path, **options)
            else:
                self.log = FlightRecorder.create(path, ring, **options)
            self._owns_log = True
        now = self._mono()
        self._fsm = SafetyMachine(self.policy, now, restore=snapshot)
        self.log.annotate("vigil.policy", self.policy.canonical())
        self.log.annotate("vigil.restore", _restore_json(snapshot, restored))
        self._log_transitions(self._fsm.check_restart_intensity(now), cause=0)

    def _start_primary(self, primary: Callable[[Any], Any], model_digest: bytes | None) -> None:
        """Start the worker pool (process isolation) and settle the primary's digest."""
        if self._pool is not None:
            self._pool.on_event = self._worker_event
            try:
                if not self._pool.started:
                    self._pool.start()
            except BaseException:
                if self._owns_log:
                    self.log.close()
                raise
            self._current = _Primary(self._pool, model_digest or self._pool.digest)
        elif model_digest is None:
            self._current = _Primary(primary, _digest_model(primary))

    def _start_digester(self, threshold: int, max_pending: int) -> None:
        """Digest outputs above ``threshold`` bytes off the caller's path; the log states the
        bound, so that ``vigil verify`` knows how many digests a crash may take with it."""
        self.log.annotate(
            DIGESTER_ANNOTATION,
            json.dumps({"max_pending": max_pending, "threshold": threshold}, sort_keys=True),
        )
        self._digester = Digester(self.log, T.digest, self._mono, max_pending=max_pending)
        self._defer_above = threshold

    # --- the call ------------------------------------------------------------------------

    def infer(
        self,
        x: Any,
        *,
        request_id: bytes | None = None,
        trace_id: bytes | None = None,
        span_id: bytes | None = None,
    ) -> Result:
        """Answer ``x`` within the deadline, whatever the primary does.

        Args:
            x: the input.
            request_id: 16 bytes naming the call in the log; by default a generated one.
            trace_id, span_id: the caller's W3C trace context (16 and 8 bytes, the trace id
                not all zero; a span id only with a trace id), recorded in the call's
                INFERENCE or REJECTED record (format 1.2).

        Returns:
            A :class:`Result`; check ``served_by`` to know who answered.

        Raises:
            InvalidInput: ``x`` breaks the input contract (recorded as REJECTED; the model
                never saw it), or the model refused it at its own boundary
                (``InputRefused``, recorded as REJECTED with the model's code). Anything
                that goes wrong before routing fails closed the same way: a ``request_id``
                that is not 16 bytes (DIA-2011), a trace context that is not a valid one
                (DIA-2012), an input whose checks or digest raise (DIA-2010, the original
                exception as ``__cause__``).
            Unavailable: no trustworthy answer exists (recorded; ``reason`` says why); or
                the flight recorder cannot write (DIA-4012, ``reason="log"``, not recorded:
                this and every later call is refused, the model is not run).
        """
        flight = self._flight  # calls inside infer: close() waits for them (deque: atomic)
        flight.append(None)
        try:
            start = self._mono()
            primary = self._current  # one read: this call runs and records this pair
            if self._closed:
                raise Unavailable("the supervisor is closed", reason="closed")
            if self.log.failed is not None:  # write-ahead: nothing is answered unrecorded
                raise self._unwritable(self.log.failed)
            if request_id is None:  # the common case, without a call (see _new_request_id)
                rid, bad_id = self._session + next(self._requests).to_bytes(8, "little"), None
            else:
                rid, bad_id = self._request_id(request_id)
            trace = _NO_TRACE
            if trace_id is not None or span_id is not None:
                trace, bad_trace = _trace_context(trace_id, span_id)
                bad_id = bad_id or bad_trace
            if bad_id is not None:
                self._reject(rid, x, bad_id, trace)
                raise bad_id
            in_digest = self._admit(x, rid, trace)
            mode, state, busy = self._route()
            call = _Call(rid, in_digest, state, start, primary, trace)
            if mode == "primary" and not busy:
                return self._run_primary(x, call, probe=False)
            return self._dispatch(x, call, mode, busy)
        finally:
            flight.pop()
            if self._closed and not flight:
                self._drained.set()

    def _admit(self, x: Any, rid: bytes, trace: _Trace) -> bytes:
        """Check ``x`` against the input contract and digest it, failing closed: whatever is
        wrong with it, and whatever examining it raises, ends in a REJECTED record and an
        ``InvalidInput``. Returns the input digest."""
        try:
            view: Any = None  # the numpy view the compiled check judged x by, to hash
            contract = self._input_contract
            if contract is not None:  # before hashing: it may not be hashable
                screen = self._screen_in
                view = screen(x) if screen is not None else None
                if view is None:
                    contract.check(x, field="input")
            if self._pool is not None:
                self._pool.check_input(x)
            return T.digest_view(x, view)
        except InvalidInput as exc:
            self._reject(rid, x, exc, trace)
            raise
        except BaseException as exc:  # as the model's own failures: SystemExit from a __repr__
            refused = InvalidInput(
                f"input: cannot be examined: {_describe_error(exc)}; the model did not see it",
                diagnostic=D.INPUT_UNREADABLE,
                field="input",
            )
            self._reject(rid, x, refused, trace)
            raise refused from exc

    def _route(self) -> tuple[str, State, bool]:
        """Ask the state machine who answers (running a due known-answer probe first).
        Returns the route's mode, the state and whether the primary is hung."""
        with self._lock:
            decision = self._fsm.route(self._mono())
            if decision.transitions:
                self._log_transitions(decision.transitions, cause=0)
            state, busy = self._fsm.state, self._hung > 0
        if decision.known_answer_probe:
            self._probe_known_answer()
            with self._lock:  # route again: the probe may have shown the model answers wrongly
                decision = self._fsm.route(self._mono())
                self._log_transitions(decision.transitions, cause=0)
                state, busy = self._fsm.state, self._hung > 0
        route = decision.route  # Route is a plain Enum: its hash is a Python call, skip it
        mode = self._primary_mode if route is _ROUTE_PRIMARY else self._modes[route]
        return mode, state, busy

    def _dispatch(self, x: Any, call: _Call, mode: str, busy: bool) -> Result:
        """Every route but the plain primary one: a hung primary, a fallback-only state, a
        recovery probe (live or shadow)."""
        if busy and mode in ("primary", "live", "shadow"):
            return self._serve_fallback(
                x, call, D.PRIMARY_BUSY, "the primary is still running a call past its deadline"
            )
        if mode in ("fallback", "known_answer"):
            return self._serve_fallback(
                x, call, None, f"state {call.state.name}: the primary may not answer"
            )
        if mode == "shadow":
            return self._shadow(x, call)
        return self._run_primary(x, call, probe=True)

    def _run_primary(self, x: Any, call: _Call, *, probe: bool) -> Result:
        """Run the primary and answer: its output, or a fallback's when it failed."""
        if self._plain_inline:  # no thread, no pool: straight to the model
            attempt = self._inline(call.primary.model, x)
        else:
            attempt = self._attempt(call.primary.model, x, call.request_id)
        outcome = attempt.outcome
        if outcome is Outcome.REJECTED:
            raise self._refused(call.request_id, x, attempt, call.trace)
        if outcome is Outcome.UNAVAILABLE:  # process isolation: no worker took it
            assert attempt.code is not None
            return self._serve_fallback(x, call, attempt.code, attempt.reason)
        flags = _COUNTED | _PROBE if probe else _COUNTED
        if outcome is Outcome.OK or outcome is Outcome.SLOW:
            if self._last_good is not None:
                known = None if attempt.digest is _DEFERRED else attempt.digest
                self._last_good.remember(attempt.output, self._mono(), known)
            served = _Answer(attempt.output, ServedBy.PRIMARY, 0, attempt.digest)
            return self._finish(call, attempt, served, flags=flags)
        answer = self._fallback_answer(x)
        if answer is None:
            self._finish(call, attempt, _NOBODY, flags=flags)
            raise Unavailable(
                f"the primary failed ({attempt.reason}) and no fallback could answer",
                reason=attempt.reason,
                state=call.state,
            )
        return self._finish(call, attempt, answer, flags=flags)

    def _shadow(self, x: Any, call: _Call) -> Result:
        """Recovery in shadow mode: the fallback answers; the primary runs and is checked."""
        model = call.primary.model
        slot = self._submit(model, x, call.request_id) if self.isolation == "thread" else None
        answer = self._fallback_answer(x)  # computed while the primary runs
        attempt = self._wait(slot) if slot is not None else self._direct(model, x)
        if attempt.outcome is Outcome.REJECTED:  # no answer for an input the model refuses
            raise self._refused(call.request_id, x, attempt, call.trace)
        flags = _COUNTED | _PROBE | _SHADOW
        if answer is None:
            self._finish(call, attempt, _NOBODY, flags=flags)
            raise Unavailable(
                "recovering in shadow mode and no fallback could answer",
                reason="no fallback",
                state=call.state,
            )
        return self._finish(call, attempt, answer, flags=flags)

    # --- running the primary -------------------------------------------------------------

    def _attempt(self, model: Callable[[Any], Any], x: Any, rid: bytes) -> _Attempt:
        if self.isolation == "thread":
            return self._wait(self._submit(model, x, rid))
        return self._direct(model, x)

    def _direct(self, model: Callable[[Any], Any], x: Any) -> _Attempt:
        pool = self._pool
        if pool is not None and id(model) == id(pool):  # the pool is the primary "model"
            return self._remote(pool, x)
        return self._inline(model, x)

    def _remote(self, pool: ProcessPool, x: Any) -> _Attempt:
        """Process isolation: the pool enforces the deadline by killing the worker, so no
        call is ever left hung here. UNAVAILABLE means the primary never ran the call."""
        try:
            output, latency = pool.call(x, self.deadline_ns)
        except WorkerTimeout as exc:
            return _Attempt(Outcome.TIMEOUT, D.DEADLINE_MISSED, exc.message)
        except WorkerLost as exc:
            return _Attempt(Outcome.WORKER_LOST, D.WORKER_LOST, exc.message)
        except RemoteModelError as exc:
            return _Attempt(exc.outcome, exc.diagnostic, exc.message)
        except (WorkerBusy, WorkerUnavailable) as exc:
            return _Attempt(Outcome.UNAVAILABLE, exc.diagnostic, exc.message)
        except Exception as exc:  # fail closed: anything else is the primary's failure
            outcome, code = T.classify(exc)
            return _Attempt(outcome, code, T.describe(exc))
        return self._judge(output, None, latency)

    def _worker_event(self, event: WorkerEvent, detail: dict[str, Any]) -> None:
        """The pool's threads (or a call's failover): record the event; a promoted worker is
        a fresh process, so a process-fatal error no longer bars the primary. The loss of the
        last ready worker reaches the state machine (DIA-7011), and with it health."""
        kind = {
            WorkerEvent.READY: LifecycleEvent.WORKER_READY,
            WorkerEvent.LOST: LifecycleEvent.WORKER_LOST,
            WorkerEvent.PROMOTED: LifecycleEvent.WORKER_PROMOTED,
            WorkerEvent.START_FAILED: LifecycleEvent.WORKER_START_FAILED,
        }[event]
        with self._lock:
            if event is WorkerEvent.PROMOTED:
                self._fsm.primary_replaced()
            if self._closed:
                return
            try:
                self.log.record_lifecycle(kind, detail)
            except LogError:  # the recorder failed: calls are refused (DIA-4012), not here
                return
            if event is WorkerEvent.LOST and detail.get("ready_left") == 0:
                why = f"no worker left: worker {detail.get('pid')} {detail.get('reason')}"
                with contextlib.suppress(Unavailable):  # the same failed recorder
                    self._log_transitions(self._fsm.primary_lost(self._mono(), why), cause=0)

    def _submit(self, model: Callable[[Any], Any], x: Any, rid: bytes) -> _Slot:
        slot = _Slot(model, x, rid)
        slot.ticket = self._watchdog.arm(
            self._mono() + self.deadline_ns, lambda: self._expire(slot)
        )
        self._queue.put(slot)
        return slot

    def _expire(self, slot: _Slot) -> None:
        """Watchdog thread: the deadline passed first. Answer the caller now."""
        slot.timed_out = True
        self._hang()
        slot.done.release()

    def _wait(self, slot: _Slot) -> _Attempt:
        slot.done.acquire()
        if slot.timed_out:
            return _Attempt(
                Outcome.TIMEOUT,
                D.DEADLINE_MISSED,
                f"no answer within {self.deadline_ns / 1e6:.1f} ms",
            )
        if slot.late:  # it returned past its deadline, before the watchdog thread looked
            return self._overdue(slot.latency_ns)
        return self._judge(slot.output, slot.error, slot.latency_ns)

    def _overdue(self, latency: int) -> _Attempt:
        """A primary answer that came after the call's deadline: never served, whoever saw
        the deadline pass first (the watchdog thread may not have run yet)."""
        return _Attempt(
            Outcome.TIMEOUT,
            D.DEADLINE_MISSED,
            f"answered after {latency / 1e6:.1f} ms, deadline {self.deadline_ns / 1e6:.1f} ms",
            latency_ns=latency,
        )

    def _work(self) -> None:
        """A worker thread: runs primary calls; a late one is annotated when it returns.
        Autograd is off in this thread for good: calls run as in :meth:`_inline`."""
        _SET_GRAD(False)
        while True:
            slot = self._queue.get()
            if slot is None:
                return
            t0 = self._mono()
            try:
                assert slot.model is not None
                slot.output = slot.model(slot.x)
            except BaseException as exc:  # any failure of the model is an outcome
                slot.error = exc
            end = self._mono()
            slot.latency_ns = end - t0
            assert slot.ticket is not None
            if self._watchdog.disarm(slot.ticket):
                slot.late = end >= slot.ticket.deadline_ns  # the watchdog's own rule
                slot.done.release()  # the slot is the caller's from here on
            else:  # the caller was answered at the deadline; nobody reads this slot
                self._late(slot.request_id, slot.latency_ns, slot.error)
                slot.model = slot.x = slot.output = None

    def _inline(self, model: Callable[[Any], Any], x: Any) -> _Attempt:
        t0 = self._mono()  # one clock read: the deadline and the latency start together
        ticket = self._watchdog.arm(t0 + self.deadline_ns, self._hang)
        output, error = None, None
        grad = _GRAD_ENABLED()  # inference: no autograd graph, as in a worker process
        if grad:
            _SET_GRAD(False)
        try:
            output = model(x)
        except BaseException as exc:  # any failure of the model is an outcome
            error = exc
        finally:
            if grad:  # the caller's mode, whatever the model did
                _SET_GRAD(True)
        latency = self._mono() - t0
        if not self._watchdog.disarm(ticket):
            self._unhang()  # it has returned: no longer hung
            return self._overdue(latency)
        if latency >= self.deadline_ns:  # late, though the watchdog thread had not looked yet
            return self._overdue(latency)
        return self._judge(output, error, latency)

    def _hang(self) -> None:
        with self._hung_changed:
            self._hung += 1
            self._hung_changed.notify_all()

    def _unhang(self) -> None:
        with self._hung_changed:
            self._hung -= 1
            self._hung_changed.notify_all()

    def _late(self, rid: bytes, latency_ns: int, error: BaseException | None) -> None:
        """A worker: a call that missed its deadline returned. Recorded before the primary
        counts as free again, so the note precedes any later call to it in the log."""
        try:
            if not self._closed:
                self.log.annotate(
                    "vigil.late",
                    json.dumps(
                        {
                            "request_id": rid.hex(),
                            "latency_ns": latency_ns,
                            "error": None if error is None else T.describe(error),
                        },
                        sort_keys=True,
                    ),
                )
        finally:
            self._unhang()

    def _judge(self, output: Any, error: BaseException | None, latency: int) -> _Attempt:
        if error is not None:
            outcome, code = T.classify(error)
            return _Attempt(outcome, code, T.describe(error), latency_ns=latency)
        try:  # fail closed: an output that cannot be checked or hashed is not served
            contract = self._output_contract
            if contract is not None:
                screen = self._screen_out
                view = screen(output) if screen is not None else None
                if view is None:
                    contract.check(output, field="output")
            else:
                view = T.check_finite(output)
            out_digest, pending = self._digest_or_defer(output, view)
        except InvalidInput as exc:
            return _Attempt(
                Outcome.INVALID_OUTPUT,
                D.INVALID_OUTPUT,
                f"{exc.code} {exc.message}",
                latency_ns=latency,
            )
        except Exception as exc:  # e.g. a sticky CUDA error surfacing at the check's sync
            outcome, code = T.classify(exc)
            return _Attempt(outcome, code, f"output check: {T.describe(exc)}", latency_ns=latency)
        if self._slow_ns is not None and latency > self._slow_ns:
            return _Attempt(
                Outcome.SLOW,
                D.SLOW_CALL,
                f"{latency / 1e6:.1f} ms > {self._slow_ns / 1e6:.1f} ms",
                output=output,
                latency_ns=latency,
                digest=out_digest,
                pending=pending,
            )
        return _Attempt(Outcome.OK, None, "", output, latency, out_digest, pending)

    def _digest_or_defer(self, output: Any, view: Any) -> tuple[bytes, tuple[Any, int] | None]:
        """The output's digest (from ``view``, the numpy view its check took, when there is
        one); or, for an output above the threshold, ``_DEFERRED`` and a snapshot of it (taken
        now, before anyone else sees the output) to digest later."""
        limit = self._defer_above
        if limit is None:
            return T.digest_view(output, view), None
        size = T.output_bytes(output)
        if size <= limit:
            return T.digest_view(output, view), None
        assert self._digester is not None
        snap = self._digester.snapshot(output)
        if snap is None:  # not only tensors and scalars: its repr could change later
            return T.digest(output), None
        return _DEFERRED, (snap, size)

    # --- fallbacks -----------------------------------------------------------------------

    def _fallback_answer(self, x: Any) -> _Answer | None:
        """The first answer of the chain that passes the fallback check, or None.

        A fallback model's output is checked with ``fallback_contract``; the last good output
        is checked again (the output check, and the digest it was served with: changed in
        place since, it is skipped); a constant is trusted as configured. A fallback that
        raises (``FallbackFailed`` or anything else, ``BaseException`` included), whose output
        breaks the check, or whose output cannot be hashed is skipped; the chain goes on.
        """
        now = self._mono()
        for fb in self._chain:
            try:
                if fb is self._last_good:
                    output, age, served = fb.recall(now)
                    if served is None:  # served above digest_threshold: nothing to compare
                        continue
                    self._recheck(output)
                    out_digest = T.digest(output)
                    if out_digest != served:  # changed in place since it was served
                        continue
                else:
                    output, age = fb.answer(x, now)
                    if fb.served_by is ServedBy.FALLBACK:
                        self._fallback_check(output, field="fallback output")
                    out_digest = T.digest(output)
            except BaseException:  # FallbackFailed, InvalidInput, the fallback's own failure
                continue
            return _Answer(output, fb.served_by, age, out_digest)
        return None

    def _recheck(self, output: Any) -> None:
        """The primary's output check, again (on the last good output, before serving it)."""
        if self._output_contract is not None:
            self._output_contract.check(output, field="last good output")
        else:
            T.check_finite(output)

    def _serve_fallback(
        self, x: Any, call: _Call, code: D.Diagnostic | None, reason: str
    ) -> Result:
        """The primary does not run for this call: the fallback chain answers, or nobody."""
        answer = self._fallback_answer(x)
        attempt = _Attempt(Outcome.OK, code, reason)
        if answer is None:  # the record keeps the cause's code (overload, busy, no worker)
            attempt = _Attempt(Outcome.UNAVAILABLE, code or D.UNAVAILABLE, reason)
            self._finish(call, attempt, _NOBODY, flags=0)
            raise Unavailable(
                f"{reason}, and no fallback could answer", reason=reason, state=call.state
            )
        return self._finish(call, attempt, answer, flags=0)

    # --- recording -----------------------------------------------------------------------

    def _finish(self, call: _Call, attempt: _Attempt, answer: _Answer, *, flags: int) -> Result:
        """Count the outcome (when the primary ran), record the call and its consequences,
        all under one lock so that the log's order is the state machine's order."""
        rid, in_digest, state, start, primary, trace = call
        output, served_by, age, out_digest = answer
        code = attempt.code
        pending = None
        if out_digest is _DEFERRED:  # the primary's own output, above the threshold
            out_digest, pending = self._defer(attempt.pending)
            if pending is not None:
                flags |= _DIGEST_FOLLOWS
        with self._lock:
            now = self._mono()
            caused: tuple[Transition, ...] = ()
            if flags & _COUNTED:
                caused = self._fsm.record(
                    attempt.outcome,
                    now,
                    probe=bool(flags & _PROBE),
                    code=code,
                    reason=attempt.reason,
                )
                if self._pool is not None and attempt.outcome is Outcome.DEVICE_FATAL:
                    self._fsm.primary_replaced()  # the pool killed that process already
            seq = 0
            try:
                seq = self.log.record_inference(
                    request_id=rid,
                    model_digest=primary.digest,
                    input_digest=in_digest,
                    output_digest=out_digest,
                    state=state,
                    served_by=served_by,
                    outcome=attempt.outcome,
                    latency_ns=attempt.latency_ns or now - start,
                    deadline_ns=self.deadline_ns,
                    code=code.number if code else _NO_CODE,
                    answer_age_ns=age,
                    flags=flags,
                    trace_id=trace.trace_id,
                    span_id=trace.span_id,
                )
                if caused:
                    self._log_transitions(caused, cause=seq)
            except LogError as exc:  # the answer is not released: fail closed
                raise self._unwritable(exc) from exc
            finally:  # under the lock, after the call's transitions (replay reads them
                if pending is not None:  # right after its record): digests in seq order
                    self._queue_digest(seq, pending)
            c = self._counters
            c.calls += 1
            c.served[served_by] += 1
            c.outcomes[attempt.outcome] += 1
            if served_by is ServedBy.NONE:
                c.unavailable += 1
            latency = now - start
            c.latencies.append(latency)
        return Result(
            output, state, served_by, attempt.outcome, seq, code, attempt.reason, age, latency, rid
        )

    def _defer(self, pending: tuple[Any, int] | None) -> tuple[bytes, tuple[Any, int] | None]:
        """A deferred output's digest for its INFERENCE record: zero, and the snapshot goes
        to the digester once the record is written; or, with the digester's queue full, the
        digest itself, computed here (nothing is ever dropped)."""
        assert pending is not None
        assert self._digester is not None
        if self._digester.try_reserve():
            return _ZERO_DIGEST, pending
        return T.digest(pending[0]), None

    def _queue_digest(self, seq: int, pending: tuple[Any, int]) -> None:
        """Hand a recorded call's snapshot to the digester; give its reservation back when
        the record was not written (``seq`` 0: the append raised)."""
        assert self._digester is not None
        if seq:
            self._digester.put(seq, *pending)
        else:
            self._digester.unreserve()

    def _refused(
        self, rid: bytes, x: Any, attempt: _Attempt, trace: _Trace = _NO_TRACE
    ) -> InputRefused:
        """The model refused ``x`` at its own boundary (it raised ``InputRefused``): recorded
        and raised like a broken input contract, not counted as the model's failure."""
        assert attempt.code is not None
        exc = InputRefused(attempt.reason, diagnostic=attempt.code)
        self._reject(rid, x, exc, trace)
        return exc

    def _reject(self, rid: bytes, x: Any, exc: InvalidInput, trace: _Trace = _NO_TRACE) -> None:
        reason = exc.message
        try:
            viewed = T.amplified(x)
            if viewed is None:
                in_digest = T.digest(x)
            else:  # an expanded view: hashing it costs its viewed size, not what it holds
                in_digest = _ZERO_DIGEST
                reason += f" (input not hashed: {viewed} bytes viewed over far less memory)"
        except BaseException:  # a rejected input may be anything; its record must be written
            in_digest = _ZERO_DIGEST
        with self._lock:
            caused = self._fsm.record(
                Outcome.REJECTED, self._mono(), code=exc.diagnostic, reason=reason
            )
            try:
                seq = self.log.record_rejected(
                    request_id=rid,
                    input_digest=in_digest,
                    code=exc.diagnostic.number,
                    reason=reason[:2000],
                    trace_id=trace.trace_id,
                    span_id=trace.span_id,
                )
            except LogError as err:
                raise self._unwritable(err) from err
            self._log_transitions(caused, cause=seq)
            self._counters.rejected += 1

    def _unwritable(self, exc: LogError) -> Unavailable:
        """The recorder failed (DIA-3040..3042): no answer may be released unrecorded, so
        this call and every later one is refused (DIA-4012) -- fail closed, not a crash. A
        call still in a hung model when :meth:`close` gave up on it is refused as closed."""
        if self._closed and isinstance(exc, LogClosed):
            return Unavailable(
                "the supervisor was closed while this call ran (past its deadline, in the "
                "model); not recorded: the log's vigil.close annotation counts such calls",
                reason="closed",
                state=self._fsm.state,
            )
        return Unavailable(
            f"the flight recorder cannot write ({exc.code}: {exc.message}); no answer is "
            "released unrecorded: this supervisor serves no more calls",
            diagnostic=D.LOG_UNWRITABLE,
            reason="log",
            state=self._fsm.state,
        )

    def _probe_known_answer(self) -> None:
        """Run the known-answer probe through the primary and count its result."""
        assert self._known is not None
        primary = self._current  # one read: the probe runs and records this pair
        in_digest = T.digest(self._known.input)
        attempt = self._attempt(primary.model, self._known.fresh_input(), _KA_REQUEST)
        if attempt.outcome is Outcome.REJECTED:  # the known input is valid: refusing it is wrong
            attempt = attempt._replace(outcome=Outcome.ERROR)
        if attempt.outcome in (Outcome.OK, Outcome.SLOW):
            try:
                matches = self._known.matches(attempt.output)
            except Exception as exc:  # the comparison's sync may surface a device error
                outcome, code = T.classify(exc)
                attempt = attempt._replace(
                    outcome=outcome, code=code, reason=f"known-answer check: {T.describe(exc)}"
                )
            else:
                if not matches:
                    attempt = attempt._replace(
                        outcome=Outcome.INVALID_OUTPUT,
                        code=D.WRONG_ANSWER,
                        reason="the known-answer probe returned another answer",
                    )
        flags = _COUNTED | _KNOWN | _PROBE
        digest = attempt.digest
        if digest is _DEFERRED:  # the probe's answer is not served: hash it here
            assert attempt.pending is not None
            digest = T.digest(attempt.pending[0])
        with self._lock:
            state = self._fsm.state
            caused = self._fsm.record(
                attempt.outcome,
                self._mono(),
                known_answer=True,
                code=attempt.code,
                reason=attempt.reason,
            )
            try:
                seq = self.log.record_inference(
                    request_id=_KA_REQUEST,
                    model_digest=primary.digest,
                    input_digest=in_digest,
                    output_digest=digest,
                    state=state,
                    served_by=ServedBy.NONE,
                    outcome=attempt.outcome,
                    latency_ns=attempt.latency_ns,
                    deadline_ns=self.deadline_ns,
                    code=attempt.code.number if attempt.code else _NO_CODE,
                    flags=flags,
                )
            except LogError as exc:  # the calling request is refused, like any unrecorded one
                raise self._unwritable(exc) from exc
            self._log_transitions(caused, cause=seq)

    def _log_transitions(self, transitions: tuple[Transition, ...], cause: int) -> None:
        try:
            for tr in transitions:
                self.log.record_transition(
                    tr.source,
                    tr.dest,
                    code=tr.code.number,
                    cause_seq=cause,
                    at_ns=tr.at_ns,
                    reason=tr.reason[:2000],
                )
        except LogError as exc:
            raise self._unwritable(exc) from exc

    def _request_id(self, given: Any) -> tuple[bytes, InvalidInput | None]:
        """The call's request id, and the error to refuse it with when ``given`` is not 16
        bytes (the REJECTED record then carries a generated id)."""
        if given is None:
            return self._new_request_id(), None
        if isinstance(given, bytes | bytearray | memoryview):
            try:
                rid = bytes(given)
            except (TypeError, ValueError, BufferError):  # an exotic buffer
                rid = b""
            if len(rid) == 16:
                return rid, None
            what = f"{len(rid)} bytes"
        else:
            what = f"a {type(given).__name__}"
        return self._new_request_id(), InvalidInput(
            f"request_id: must be 16 bytes, got {what}",
            diagnostic=D.REQUEST_ID_INVALID,
            field="request_id",
        )

    def _new_request_id(self) -> bytes:
        """8 random bytes per supervisor, then a call counter (unique within the session)."""
        return self._session + next(self._requests).to_bytes(8, "little")

    def refuse(
        self,
        request_id: bytes | None,
        reason: str,
        diagnostic: D.Diagnostic,
        *,
        trace_id: bytes | None = None,
        span_id: bytes | None = None,
        input_digest: bytes | None = None,
    ) -> tuple[bytes, int]:
        """Record a call the service refused before it reached :meth:`infer` (rate limited,
        DIA-2021): a REJECTED record with ``diagnostic``, appended before the caller answers
        the refusal. Thread-safe. The state machine never sees it: a refusal is the
        service's overload, not the model's failure.

        Args:
            request_id: the call's 16 bytes, or None (or not 16 bytes) for a generated one.
            reason: why, in words (kept to 2000 characters).
            diagnostic: the refusal's code.
            trace_id, span_id: the call's W3C trace context, when it had one: recorded in
                the REJECTED record (format 1.2); an invalid one is left out (the refusal
                is recorded all the same).
            input_digest: 32 bytes; all zeros by default (the input was never examined).

        Returns:
            ``(request_id, seq)``: the id recorded and the REJECTED record's sequence number.
        """
        rid = request_id if _sized(request_id, 16) else None
        digest = input_digest if _sized(input_digest, 32) else None
        if not isinstance(reason, str):  # the refusal is recorded whatever the caller passed
            reason = _describe_error(TypeError(reason))
        trace = _NO_TRACE if trace_id is None else _trace_context(trace_id, span_id)[0]
        with self._lock:
            rid = rid if rid is not None else self._new_request_id()
            try:
                seq = self.log.record_rejected(
                    request_id=bytes(rid),
                    input_digest=bytes(digest) if digest is not None else _ZERO_DIGEST,
                    code=diagnostic.number,
                    reason=reason[:2000],
                    trace_id=trace.trace_id,
                    span_id=trace.span_id,
                )
            except LogError as err:
                raise self._unwritable(err) from err
            self._counters.rejected += 1
        return bytes(rid), seq

    # --- the primary ---------------------------------------------------------------------

    @property
    def primary(self) -> Callable[[Any], Any]:
        """The model new calls run. Assigning to it is :meth:`swap_primary` with the digest
        computed from the new model."""
        return self._current.model

    @primary.setter
    def primary(self, model: Callable[[Any], Any]) -> None:
        self.swap_primary(model)

    @property
    def model_digest(self) -> bytes:
        """The 32-byte digest that new calls' INFERENCE records name."""
        return self._current.digest

    def swap_primary(
        self,
        model: Callable[[Any], Any],
        model_digest: bytes | None = None,
        *,
        detail: dict[str, Any] | None = None,
    ) -> bytes:
        """Replace the primary and its digest atomically; record a LIFECYCLE MODEL_SWAPPED.

        Calls that began before the swap finish on the old model and their records name the
        old digest; every call that begins after it runs the new model, and its record comes
        after the MODEL_SWAPPED record (both are written under the same lock). The state
        machine is not reset: a degraded supervisor recovers through its protocol.

        Args:
            model: the new primary, complete and ready (build it off to the side first).
            model_digest: its 32-byte digest; by default computed as for the constructor.
            detail: extra facts for the record's JSON detail (e.g. the artifact's name).

        Returns:
            The digest of the model that was replaced.

        Raises:
            ConfigError: ``model`` is not callable or the digest is not 32 bytes.
        """
        if not callable(model):
            raise ConfigError("primary must be callable (a model or a function)")
        _check_digest(model_digest)
        if self._pool is not None:
            raise ConfigError(
                "a process-isolated supervisor's model lives in its worker processes: "
                "restart the service with the new model directory"
            )
        new = _Primary(model, model_digest or _digest_model(model))
        with self._lock:
            old, self._current = self._current, new
            self.log.record_lifecycle(
                LifecycleEvent.MODEL_SWAPPED,
                {
                    **(detail or {}),
                    "old_digest": old.digest.hex(),
                    "model_digest": new.digest.hex(),
                },
            )
        return old.digest

    # --- operator ------------------------------------------------------------------------

    def reset(self, reason: str) -> None:
        """Operator reset: back to NORMAL (audited). Refused after a process-fatal error.

        Raises:
            InvalidArgument: ``reason`` is not a str (checked before the state changes: a
                reset is never made without its record; the record keeps its first 2000
                characters), or the primary's process is lost.
        """
        if not isinstance(reason, str):
            raise InvalidArgument(f"reset reason: a str, not {type(reason).__name__}")
        with self._lock:
            self._log_transitions(self._fsm.reset(self._mono(), reason), cause=0)

    def statistics(self) -> SupervisorStatistics:
        """A consistent snapshot of the supervisor's counters."""
        with self._lock:
            c = self._counters
            lat = sorted(c.latencies)
            return SupervisorStatistics(
                state=self._fsm.state,
                calls=c.calls,
                rejected=c.rejected,
                unavailable=c.unavailable,
                served={k.name: v for k, v in c.served.items()},
                outcomes={k.name: v for k, v in c.outcomes.items()},
                hung=self._hung,
                latency_p50_ns=lat[len(lat) // 2] if lat else 0,
                latency_p99_ns=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0,
                machine=self._fsm.statistics(),
                log_head_seq=self.log.head_seq,
                digester=None if self._digester is None else self._digester.statistics(),
                clock_failures=getattr(self._clock, "failures", 0),
            )

    def wait_digested(self, timeout: float | None = None) -> bool:
        """Block until every deferred output digest is recorded (none outstanding).

        Returns:
            True when none is outstanding, False when ``timeout`` seconds passed first.
        """
        return True if self._digester is None else self._digester.wait_idle(timeout)

    def wait_hung(self, count: int, timeout: float) -> bool:
        """Block until exactly ``count`` primary calls are hung (past their deadline and
        still running); ``wait_hung(0, t)`` waits for hung calls to return, e.g. before a
        planned shutdown.

        Returns:
            True when the count was reached, False when ``timeout`` seconds passed first.
        """
        with self._hung_changed:
            return self._hung_changed.wait_for(lambda: self._hung == count, timeout)

    @property
    def state(self) -> State:
        return self._fsm.state

    def close(self) -> None:
        """Stop the watchdog and workers and close the log (when this supervisor opened it).

        A worker stuck in a hung model call cannot be stopped (threads cannot be killed); it
        is a daemon thread and dies with the process.
        """
        with self._close_lock:  # a second close() returns once the first has finished
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True  # new calls are refused from here on
        if self._flight:  # calls in flight finish, each recorded (the watchdog still runs)
            self._drained.wait(self.deadline_ns / 1e9 + _CLOSE_GRACE_S)
        abandoned = len(self._flight)  # inline calls in a model hung past their deadline
        if abandoned and self._owns_log:
            with contextlib.suppress(LogError):
                self.log.annotate(
                    "vigil.close",
                    json.dumps({"abandoned_calls": abandoned, "reason": "still in the model"}),
                )
        for _ in self._workers:
            self._queue.put(None)
        self._watchdog.close()
        deadline = time.monotonic() + 1.0
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._pool is not None:
            self._pool.close()
        if self._digester is not None:  # every queued digest is recorded before the log closes
            self._digester.close(timeout=_DRAIN_S)
        if self._owns_log:
            self.log.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _screen_of(contract: Any) -> Callable[[Any], Any] | None:
    """The compiled check of one of our contracts (:meth:`Contract.screen`); None for any
    other object with a ``check`` -- a subclass that overrides ``check`` included, whose own
    checks must not be skipped -- which then runs on every call."""
    if isinstance(contract, Contract) and type(contract).check is Contract.check:
        return contract.screen
    return None


def _describe_error(exc: BaseException) -> str:
    """``Type: message`` of an exception raised by a hostile input, whose own ``__str__``
    may raise too; at most 200 characters."""
    try:
        text = str(exc)
    except BaseException:  # the message is the hostile object's own: never let it escape
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text}"[:200]


def _digest_model(model: Any) -> bytes:
    """SHA-256 identifying a model: its parameters and buffers (an nn.Module), else repr."""
    if isinstance(model, torch.nn.Module):
        state = model.state_dict()
        return T.digest({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
    return T.digest(repr(model))


def _restore_json(snapshot: Any, restored: dict[str, Any]) -> str:
    return json.dumps(
        {
            "state": snapshot.state.name,
            "failed_recovery_ages_ns": list(snapshot.failed_recovery_ages_ns),
            "failed_in_a_row": snapshot.failed_in_a_row,
            **restored,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _check_arguments(
    primary: Any,
    *,
    isolation: str,
    deadline_ns: Any,
    workers: Any,
    policy: Policy,
    known_answer: KnownAnswer | None,
    contracts: tuple[tuple[str, Any], ...],
    model_digest: bytes | None,
    digest_threshold: Any,
    digest_queue: Any,
) -> None:
    """The constructor's arguments, checked before anything is opened or started.

    Raises:
        ConfigError: the message names the argument and the rule.
    """
    if not callable(primary):
        raise ConfigError("primary must be callable (a model or a function)")
    if isolation not in ("thread", "inline", "process"):
        raise ConfigError(f"isolation={isolation!r}: choose thread, inline or process")
    if (isolation == "process") != is_process_pool(primary):
        raise ConfigError(
            "isolation='process' takes a WorkerPool as primary, and a WorkerPool needs "
            "isolation='process'"
        )
    if type(deadline_ns) is not int or not 0 < deadline_ns < 1 << 63:
        raise ConfigError(
            f"deadline_ns={deadline_ns!r}: a positive integer below 2^63 (the records' u64 "
            "fields hold it, with the latency and the deadline's end)"
        )
    if type(workers) is not int or workers < 1:
        raise ConfigError(f"workers={workers!r}: must be at least 1")
    if known_answer is None and policy.known_answer_probes:
        raise ConfigError(
            "the policy asks for known-answer probes (probe_mode='known_answer' or "
            "probe_interval_ns): pass known_answer=KnownAnswer(input, expected)"
        )
    for name, contract in contracts:
        if contract is not None and not callable(getattr(contract, "check", None)):
            raise ConfigError(
                f"{name}: needs a check(value, field=...) method (e.g. vigil.schemas.Contract)"
            )
    _check_digest(model_digest)
    if type(digest_threshold) is not int or digest_threshold < 0:
        raise ConfigError(
            f"digest_threshold={digest_threshold!r}: bytes, an integer >= 0 (0: every output "
            "is digested inline)"
        )
    if type(digest_queue) is not int or not 1 <= digest_queue <= 4096:
        raise ConfigError(f"digest_queue={digest_queue!r}: an integer in [1, 4096]")


def _check_log_and_clock(log: Any, clock: Any) -> None:
    """``log`` a path or a FlightRecorder, ``clock`` a Clock (ConfigError, DIA-1001): they
    raised TypeError and AttributeError from deep inside, outside the vigil hierarchy."""
    if not isinstance(log, str | os.PathLike | FlightRecorder) or isinstance(
        os.fspath(log) if isinstance(log, os.PathLike) else log, bytes
    ):
        raise ConfigError(
            f"log={log!r}: a path (str or os.PathLike of str) or a FlightRecorder"[:300]
        )
    if clock is not None and not (
        callable(getattr(clock, "monotonic_ns", None))
        and callable(getattr(clock, "realtime_ns", None))
        and isinstance(getattr(clock, "boot_uuid", None), bytes)
        and hasattr(clock, "source")
    ):
        raise ConfigError(
            f"clock={type(clock).__name__}: a vigil.auditlog.Clock (monotonic_ns(), "
            "realtime_ns(), source, boot_uuid), e.g. SystemClock()"
        )


def _check_digest(model_digest: Any) -> None:
    if model_digest is not None and (type(model_digest) is not bytes or len(model_digest) != 32):
        what = (
            f"{len(model_digest)} bytes"
            if isinstance(model_digest, bytes)
            else f"a {type(model_digest).__name__}"
        )
        raise ConfigError(f"model_digest: 32 bytes (a SHA-256 digest), not {what}")


def _trace_context(trace_id: Any, span_id: Any) -> tuple[_Trace, InvalidInput | None]:
    """The call's trace context, or the error to refuse the call with: a W3C trace id is 16
    bytes and not all zero; a parent span id 8 bytes and not all zero, and only with a trace
    id (W3C Trace Context, "trace-id" and "parent-id")."""
    trace, span = _as_bytes(trace_id), _as_bytes(span_id)
    if trace is None or len(trace) != 16 or not any(trace):
        why = "trace_id: must be 16 bytes, not all zero (a W3C trace-id)"
        got = trace_id
    elif span_id is not None and (span is None or len(span) != 8 or not any(span)):
        why = "span_id: must be 8 bytes, not all zero (a W3C parent-id)"
        got = span_id
    else:
        return _Trace(trace, span or bytes(8)), None
    what = f"{len(got)} bytes" if isinstance(got, bytes | bytearray) else f"a {type(got).__name__}"
    if isinstance(got, bytes | bytearray) and len(got) in (8, 16):
        what = "all zero"
    return _NO_TRACE, InvalidInput(
        f"{why}, got {what}", diagnostic=D.TRACE_CONTEXT_INVALID, field=why.split(":")[0]
    )


def _as_bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value)
        except (TypeError, ValueError, BufferError):  # an exotic buffer
            return None
    return None
