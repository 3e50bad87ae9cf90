"""Fault injection: make a model misbehave on purpose, reproducibly.

Theory of operation. A :class:`FaultPlan` is a schedule: an ordered list of rules (by call
index, by time since the plan's first call, or by probability), a seeded RNG, an injected clock
and an injected sleep. :meth:`FaultPlan.decide` is the whole decision: it is called once per
model call, under the plan's lock, and returns the call's index and the fault (if any) of the
first rule that matches. A :class:`FaultyModel` wraps any callable, asks its plan before each
call and applies the fault it gets.

Invariants:

* **Replay.** Call indices are handed out by the plan, and every call draws exactly one number
  from the RNG per probability rule, whether or not an earlier rule matched. So the same seed,
  the same rules and the same sequence of calls give the same schedule, also when several
  threads share the plan (the schedule is a function of the index, not of the thread). Time
  rules replay exactly when the clock does (inject a fake one in tests).
* **History is what happened.** A fault enters :attr:`FaultPlan.history` when it takes effect
  (just before the exception is raised, the hang starts, the sleep starts, or the corrupted
  output is returned); a NAN fault that finds no floating output is an error, not history.
* **Nothing is mutated.** Inputs are never touched; a corrupted output is a copy of the real
  one, which the model may still hold.
* **Hangs end.** A hang blocks on the plan's release event (or ``hang_s``); :meth:`release`
  frees every current and future hang until :meth:`reset`, and the plan counts the calls that
  are hung so that a test can wait for one without sleeping.
* **DEVICE_FATAL is real on CUDA.** When the call's tensors (or the module's parameters) live
  on a CUDA device, the fault triggers a real device-side assert, which poisons the process:
  run such tests in a child process. Elsewhere it raises :class:`~vigil.errors.DeviceFatal`.
"""

from __future__ import annotations

import enum
import math
import operator
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vigil.errors import ConfigError, DeviceFatal

__all__ = ["Fault", "FaultPlan", "FaultyModel", "inject"]


class Fault(enum.Enum):
    """What a faulty call does. docs/FAULTS.md states each effect exactly."""

    EXCEPTION = "exception"
    """Raise ``RuntimeError("vigil fault injection: exception at call N")``; the model is not
    called."""
    HANG = "hang"
    """Block until :meth:`FaultPlan.release` (or ``hang_s``), then call the model and return
    its output."""
    SLOW = "slow"
    """Sleep ``delay_s`` with the plan's sleep function, then call the model and return its
    output."""
    NAN = "nan"
    """Return the output with NaN written into the first element of its first non-empty
    floating tensor (a copy of it)."""
    WRONG_SHAPE = "wrong_shape"
    """Return the output with one extra zero element along the last dimension of its first
    floating tensor (else its first tensor); a 0-d tensor becomes shape ``(2,)``."""
    OOM = "oom"
    """Raise ``torch.OutOfMemoryError("vigil fault injection: out of memory at call N")``."""
    DEVICE_FATAL = "device_fatal"
    """On CUDA: a real device-side assert (process-fatal). Elsewhere: raise
    :class:`~vigil.errors.DeviceFatal` (DIA-4006)."""


def _non_negative(fault: Fault, name: str, value: Any, *, none_ok: bool = False) -> Any:
    if value is None and none_ok:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value >= 0)
    ):
        allowed = "None or a finite number >= 0" if none_ok else "a finite number >= 0"
        raise ConfigError(f"{name}={value!r} for {fault}: must be {allowed} (seconds)")
    return float(value)


_DEFAULTS: dict[Fault, dict[str, Any]] = {f: {} for f in Fault}
_DEFAULTS[Fault.SLOW] = {"delay_s": 0.05}
_DEFAULTS[Fault.HANG] = {"hang_s": None}


def _params(fault: Any, given: Mapping[str, Any]) -> tuple[Fault, dict[str, Any]]:
    """Validate a rule's fault and parameters; return them with the defaults filled in."""
    if not isinstance(fault, Fault):
        raise ConfigError(f"fault={fault!r}: must be a Fault, one of {[f.name for f in Fault]}")
    params = dict(_DEFAULTS[fault])
    for name in given:
        if name not in params:
            allowed = ", ".join(params) or "none"
            raise ConfigError(f"unknown parameter {name!r} for {fault}; allowed: {allowed}")
    params.update(given)
    if fault is Fault.SLOW:
        params["delay_s"] = _non_negative(fault, "delay_s", params["delay_s"])
    elif fault is Fault.HANG:
        params["hang_s"] = _non_negative(fault, "hang_s", params["hang_s"], none_ok=True)
    return fault, params


@dataclass(frozen=True)
class _Rule:
    fault: Fault
    params: Mapping[str, Any]
    calls: range | frozenset[int] | None = None
    start_ns: int = 0
    end_ns: float = 0.0  # float so that ``math.inf`` means "from start_ns on"
    probability: float | None = None


def _call_indices(calls: Iterable[int] | range) -> range | frozenset[int]:
    if isinstance(calls, range):
        if calls and min(calls[0], calls[-1]) < 0:
            raise ConfigError(f"calls={calls!r}: call indices are counted from 0")
        return calls
    if isinstance(calls, (str, bytes)) or not isinstance(calls, Iterable):
        raise ConfigError(f"calls={calls!r}: must be an iterable of call indices (ints >= 0)")
    indices = set()
    for call in calls:
        try:
            index = -1 if isinstance(call, bool) else operator.index(call)
        except TypeError:
            index = -1
        if index < 0:
            raise ConfigError(f"call index {call!r}: must be an int >= 0")
        indices.add(index)
    return frozenset(indices)


class FaultPlan:
    """A seeded, replayable schedule of faults.

    Rules are checked in the order they were added; the first that matches a call wins.
    Methods that add rules return the plan, so they chain.

    Args:
        seed: seeds the RNG of the probability rules.
        clock: monotonic nanoseconds; time rules measure from the first call's reading.
        sleep: what a SLOW fault calls with ``delay_s`` (a fake one keeps tests instant).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed={seed!r}: must be an int")
        self._seed = seed
        self._clock = clock
        self._sleep = sleep
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._hang_changed = threading.Condition(threading.Lock())
        self._hanging = 0
        self._rng = random.Random(seed)
        self._next_call = 0
        self._first_ns: int | None = None
        self._history: list[tuple[int, Fault]] = []

    def __repr__(self) -> str:
        return (
            f"FaultPlan(seed={self._seed}, rules={len(self._rules)}, "
            f"calls={self._next_call}, applied={len(self._history)})"
        )

    @property
    def seed(self) -> int:
        """The seed the plan was built with (and is re-seeded with by :meth:`reset`)."""
        return self._seed

    def at_calls(self, calls: Iterable[int] | range, fault: Fault, **params: Any) -> FaultPlan:
        """Apply ``fault`` to the calls with these indices (0-based, counted by the plan).

        Raises:
            ConfigError: an index is negative or not an int, or the fault or a parameter is
                invalid.
        """
        fault, checked = _params(fault, params)
        rule = _Rule(fault, checked, calls=_call_indices(calls))
        return self._add(rule)

    def between(self, start_s: float, end_s: float, fault: Fault, **params: Any) -> FaultPlan:
        """Apply ``fault`` to calls made in ``[start_s, end_s)`` seconds after the first call.

        Time is read from the plan's clock at each :meth:`decide`; ``end_s`` may be
        ``math.inf``.

        Raises:
            ConfigError: ``start_s`` is negative or not finite, ``end_s <= start_s``, or the
                fault or a parameter is invalid.
        """
        fault, checked = _params(fault, params)
        for name, value in (("start_s", start_s), ("end_s", end_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name}={value!r}: must be a number of seconds")
        if not (math.isfinite(start_s) and start_s >= 0):
            raise ConfigError(f"start_s={start_s!r}: must be a finite number of seconds >= 0")
        if not end_s > start_s:
            raise ConfigError(f"end_s={end_s!r}: must be greater than start_s={start_s!r}")
        end_ns = math.inf if math.isinf(end_s) else round(end_s * 1e9)
        return self._add(_Rule(fault, checked, start_ns=round(start_s * 1e9), end_ns=end_ns))

    def with_probability(self, p: float, fault: Fault, **params: Any) -> FaultPlan:
        """Apply ``fault`` to each call with probability ``p``, drawn from the seeded RNG.

        Raises:
            ConfigError: ``p`` is not in [0, 1], or the fault or a parameter is invalid.
        """
        fault, checked = _params(fault, params)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError(f"p={p!r}: a probability must be in [0, 1]")
        return self._add(_Rule(fault, checked, probability=float(p)))

    def _add(self, rule: _Rule) -> FaultPlan:
        with self._lock:
            self._rules.append(rule)
        return self

    def decide(self) -> tuple[int, Fault | None, dict[str, Any]]:
        """Decide the next call: its index, its fault (None for a normal call) and the
        fault's parameters (defaults filled in; empty for a normal call).

        Call it exactly once per model call (a :class:`FaultyModel` does); each call consumes
        one index, one clock reading and one RNG draw per probability rule.
        """
        with self._lock:
            index = self._next_call
            self._next_call += 1
            now = self._clock()
            if self._first_ns is None:
                self._first_ns = now
            elapsed = now - self._first_ns
            chosen: _Rule | None = None
            for rule in self._rules:
                if rule.probability is not None:
                    hit = self._rng.random() < rule.probability  # drawn even after a match
                elif rule.calls is not None:
                    hit = index in rule.calls
                else:
                    hit = rule.start_ns <= elapsed < rule.end_ns
                if hit and chosen is None:
                    chosen = rule
        if chosen is None:
            return index, None, {}
        return index, chosen.fault, dict(chosen.params)

    def release(self) -> None:
        """Release every hanging call now, and let every later HANG return at once, until
        :meth:`reset`."""
        self._released.set()

    def reset(self) -> None:
        """Back to call 0: re-seed the RNG, restart the clock at the next call, arm the hangs
        again and clear the history. Rules are kept. Calls still hanging stay hung until the
        next :meth:`release` (or their ``hang_s``)."""
        with self._lock:
            self._rng.seed(self._seed)
            self._next_call = 0
            self._first_ns = None
            self._history.clear()
            self._released.clear()

    @property
    def calls(self) -> int:
        """Calls decided so far: the index the next call will get."""
        with self._lock:
            return self._next_call

    @property
    def history(self) -> list[tuple[int, Fault]]:
        """``(call index, fault)`` of the faults applied so far, in the order they took
        effect (a copy)."""
        with self._lock:
            return list(self._history)

    @property
    def hanging(self) -> int:
        """How many calls are blocked in a HANG right now."""
        with self._hang_changed:
            return self._hanging

    def wait_hanging(self, n: int = 1, timeout: float | None = None) -> bool:
        """Block until at least ``n`` calls are hanging; False if ``timeout`` expired first."""
        with self._hang_changed:
            return self._hang_changed.wait_for(lambda: self._hanging >= n, timeout)

    def _applied(self, index: int, fault: Fault) -> None:
        with self._lock:
            self._history.append((index, fault))

    def _hang(self, index: int, hang_s: float | None) -> None:
        with self._hang_changed:
            self._applied(index, Fault.HANG)
            self._hanging += 1
            self._hang_changed.notify_all()
        try:
            self._released.wait(hang_s)
        finally:
            with self._hang_changed:
                self._hanging -= 1
                self._hang_changed.notify_all()


def _tensors(
    obj: Any, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], torch.Tensor]]:
    """Every tensor in a tensor / tuple / list / dict tree, depth first, with its path."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            yield from _tensors(item, (*path, i))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from _tensors(item, (*path, key))


def _replace(obj: Any, path: tuple[Any, ...], new: torch.Tensor) -> Any:
    """A shallow copy of ``obj`` along ``path`` with the tensor there replaced by ``new``."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        copy = obj.copy()
        copy[head] = _replace(obj[head], rest, new)
        return copy
    items = list(obj)
    items[head] = _replace(items[head], rest, new)
    if isinstance(obj, list):
        return items
    if hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*items)
    return tuple(items)


def _with_nan(output: Any, index: int) -> Any:
    for path, t in _tensors(output):
        if t.is_floating_point() and t.numel() > 0:
            corrupt = t.clone()
            corrupt[(0,) * t.ndim] = math.nan
            return _replace(output, path, corrupt)
    raise ConfigError(
        f"NAN fault at call {index}: NAN needs a floating output (a non-empty floating-point "
        f"tensor, alone or in a tuple, list or dict); the model returned {_describe(output)}"
    )


def _with_wrong_shape(output: Any, index: int) -> Any:
    found = list(_tensors(output))
    floating = [(p, t) for p, t in found if t.is_floating_point()]
    if not found:
        raise ConfigError(
            f"WRONG_SHAPE fault at call {index}: needs a tensor in the output; "
            f"the model returned {_describe(output)}"
        )
    path, t = (floating or found)[0]
    base = t.reshape(1) if t.ndim == 0 else t
    grown = torch.cat([base, base.new_zeros((*base.shape[:-1], 1))], dim=-1)
    return _replace(output, path, grown)


def _describe(output: Any) -> str:
    found = [f"{t.dtype} tensor {tuple(t.shape)}" for _, t in _tensors(output)]
    return ", ".join(found) if found else f"a {type(output).__name__} without tensors"


def _cuda_device(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.device | None:
    """The CUDA device of the call's first CUDA tensor, else of the module's first CUDA
    parameter or buffer, else None."""
    for _, t in _tensors((args, kwargs)):
        if t.is_cuda:
            return t.device
    if isinstance(model, torch.nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            if t.is_cuda:
                return t.device
    return None


def _device_side_assert(device: torch.device) -> None:
    """Index out of bounds inside a CUDA kernel, then synchronize: the device-side assert
    surfaces as torch's own error and poisons the CUDA context of this process."""
    table = torch.zeros(1, device=device)
    table[torch.tensor([1 << 20], device=device)]  # the kernel asserts: index out of bounds
    torch.cuda.synchronize(device)


class FaultyModel:
    """Wraps any callable (an ``nn.Module`` or a function) and applies a :class:`FaultPlan`
    to its calls. Thread-safe: calls may come from several threads at once.

    Attributes:
        model: the wrapped callable.
        plan: the plan it consults once per call.
    """

    def __init__(self, model: Callable[..., Any], plan: FaultPlan) -> None:
        if not callable(model):
            raise ConfigError(f"model={model!r}: must be callable")
        if not isinstance(plan, FaultPlan):
            raise ConfigError(f"plan={plan!r}: must be a FaultPlan")
        self.model = model
        self.plan = plan

    def __repr__(self) -> str:
        return f"FaultyModel({self.model!r}, {self.plan!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the model, unless this call's fault says otherwise.

        Raises:
            RuntimeError: an EXCEPTION fault (or the real CUDA error of DEVICE_FATAL on CUDA).
            torch.OutOfMemoryError: an OOM fault.
            DeviceFatal: a DEVICE_FATAL fault off CUDA.
            ConfigError: a NAN fault met an output without a floating tensor, or WRONG_SHAPE
                one without any tensor.
        """
        index, fault, params = self.plan.decide()
        if fault is None:
            return self.model(*args, **kwargs)
        plan = self.plan
        if fault is Fault.EXCEPTION:
            plan._applied(index, fault)
            raise RuntimeError(f"vigil fault injection: exception at call {index}")
        if fault is Fault.OOM:
            plan._applied(index, fault)
            raise torch.OutOfMemoryError(f"vigil fault injection: out of memory at call {index}")
        if fault is Fault.DEVICE_FATAL:
            device = _cuda_device(self.model, args, kwargs)
            plan._applied(index, fault)
            if device is not None:
                _device_side_assert(device)  # raises torch's error when the assert fires
            where = "not on a CUDA device" if device is None else "no device-side assert fired"
            raise DeviceFatal(
                f"vigil fault injection: device-fatal error at call {index} ({where}: "
                "simulated, no device was poisoned)",
                call=index,
            )
        if fault is Fault.HANG:
            plan._hang(index, params["hang_s"])
            return self.model(*args, **kwargs)
        if fault is Fault.SLOW:
            plan._applied(index, fault)
            plan._sleep(params["delay_s"])
            return self.model(*args, **kwargs)
        output = self.model(*args, **kwargs)
        corrupt = _with_nan if fault is Fault.NAN else _with_wrong_shape
        result = corrupt(output, index)
        plan._applied(index, fault)
        return result


def inject(model: Callable[..., Any], plan: FaultPlan) -> FaultyModel:
    """Wrap ``model`` so that its calls follow ``plan``: ``inject(model, plan)(x)``."""
    return FaultyModel(model, plan)
