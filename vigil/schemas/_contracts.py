"""Tensor contracts: what the supervisor checks on every input and every output.

Theory of operation. A :class:`TensorSpec` declares one tensor (type, device, dtype, a shape of
fixed, free and named dims, value bounds, finiteness); a :class:`Contract` declares one tensor
or a mapping of named tensors, plus semantic :class:`Rule` objects. ``check`` returns ``None``
or raises :class:`~vigil.errors.InvalidInput` carrying a DIA-2047 or DIA-21xx code, the
``field`` (``output.boxes``), the ``rule`` (``dtype``, ``min``, ``boxes_in_image``...), the
``expected`` and ``actual`` values and, where one element is to blame, its ``index``.

Order: the structure of a mapping, then for each tensor in declaration order its type, device,
dtype and shape (host-side metadata, no device work), then the values of every tensor, then the
rules in order. The first violation is raised; nothing after it runs.

Invariants of the values phase, which runs on every inference call:

* A value check reduces a tensor on its own device to 0-d *probes*: as a rule its minimum
  and maximum from one ``aminmax``. NaN propagates through ``aminmax``, so a finite minimum and
  maximum prove the whole tensor finite. The built-in rules add probes of their own.
* All probes of one ``check`` reach the host together: CPU probes by ``item()`` (no sync), the
  others in **one** copy (:func:`_gather`). A check costs at most one device-to-host sync,
  however many tensors and rules it covers.
* The host compares probes with the bounds exactly (Python compares int with float exactly).
  Only a bad value costs more work: naming the check, the extremes and the first bad index.
* Nothing is computed where no value constraint applies (integers without bounds).
* Compiled once, per spec (``_Plan``): a spec without bounds and with an exact (or no) shape
  judges a dense CPU tensor by a few attribute reads and one ``np.isfinite`` on a view, and
  a contract without rules whose specs all allow that does nothing else. That fast answer is
  only ever "passes"; anything else (a bad value, another device) runs the full check, which
  raises exactly as before.

``check`` raises nothing but ``InvalidInput`` for a bad value. Other exceptions propagate
unchanged: an asynchronous CUDA error of the kernels that produced a tensor surfaces at the one
sync, and a user rule may have bugs. Classifying those is the supervisor's job, not the
contract's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import operator
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from vigil import _diagnostics as D
from vigil.errors import ConfigError, InvalidInput

__all__ = ["Contract", "Rule", "TensorSpec", "perception_contract"]

_JSON_VERSION = 1
_DIRECT_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
_NUMPY_FLOATS = frozenset({torch.float16, torch.float32, torch.float64})
_ISFINITE = np.isfinite
_ALL = np.logical_and.reduce  # the ufunc itself: ``ndarray.all()`` goes through a Python wrapper
_SMALL = 256
_F16_EXPONENT = 0x7C00
_EXPONENT = {torch.bfloat16: 0x7F80, torch.float16: _F16_EXPONENT}
"""A half-width float's exponent bits, as int16: all of them set means NaN or ±Inf."""
VIEW_FLOATS = _NUMPY_FLOATS | {torch.bfloat16}
_MAXIMUM = np.maximum.reduce
_BITAND = np.bitwise_and
"""At most this many elements: finiteness read from the flags' bytes (``b"\\0" not in``, a
memchr), not by the ufunc reduction, whose set-up alone costs ~1.5 µs."""
_WIDE_UINTS = frozenset({torch.uint16, torch.uint32})  # no aminmax for these: use int64
_HOST_ROWS = 64
"""Built-in rules read a CPU tensor of at most this many rows as a Python list (a few µs);
longer or non-CPU tensors get tensor operations whose result joins the one sync."""

# How a spec's two probes read (see TensorSpec._judge).
_MINMAX = 0  # float (lo, hi), NaN propagating: finite iff both are finite
_BOUNDS = 1  # (lo, hi) of the non-NaN values, or of integers
_COMPLEX = 2  # (all finite,)
_UINT64 = 3  # (lo, hi) of the int64 view: lo < 0 means values >= 2**63, re-read exactly


@runtime_checkable
class Rule(Protocol):
    """A semantic rule of a :class:`Contract`, run after every spec has passed.

    ``__call__`` gets the checked value (the tensor, or the mapping of tensors) and returns a
    message saying what is violated and where, or ``None`` when the rule holds. A rule that
    keeps state across calls (the last timestamp seen) updates it under a lock, only when it
    holds, and offers ``reset()``; put it last in the contract's rules, so that a call rejected
    by another rule leaves it unchanged. An optional ``to_json()`` describes its parameters for
    :meth:`Contract.digest`; an optional ``key`` names the mapping entry it is about, so that
    its errors carry ``field.key``.
    """

    name: str

    def __call__(self, value: Any) -> str | None: ...


def _fail(
    diagnostic: D.Diagnostic,
    field: str,
    rule: str,
    message: str,
    *,
    expected: object = None,
    actual: object = None,
    index: object = None,
) -> InvalidInput:
    return InvalidInput(
        message,
        diagnostic=diagnostic,
        field=field,
        rule=rule,
        expected=expected,
        actual=actual,
        index=index,
    )


def _fmt_shape(dims: Sequence[object]) -> str:
    text = ", ".join("any" if d is None else str(d) for d in dims)
    return f"({text},)" if len(dims) == 1 else f"({text})"


def _fmt_dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _canonical_bound(value: object, name: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"TensorSpec {name}={value!r}: must be an int, a float or None")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"TensorSpec {name}={value!r}: must be finite (None = unbounded)")
        if value.is_integer():
            return int(value)  # 1.0 and 1 are one bound: one canonical JSON, one digest
    return value


def _canonical_device(device: object) -> str | None:
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"TensorSpec device={device!r}: must be a str such as 'cuda:1' or None")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"TensorSpec device={device!r}: not a device ({exc})") from exc
    return parsed.type if parsed.type == "cpu" else str(parsed)


def _device_matches(want: torch.device, got: torch.device) -> bool:
    """``cuda`` matches every CUDA device, ``cuda:1`` only that one, ``cpu`` the CPU."""
    return got.type == want.type and (want.index is None or got.index == want.index)


class _Plan:
    """What a spec's ``check`` precomputes (never part of equality or of the JSON).

    ``fast`` says whether :meth:`accepts` applies: the spec has no bounds, no named, free or
    ``...`` dims (its shape is exact or ``None``) and allows the CPU. Then a dense CPU tensor
    is judged by a few attribute reads and, for a numpy float dtype, one ``np.isfinite`` on a
    view (~1 µs against ``aminmax`` + two ``item()`` + the probe bookkeeping, ~4 µs).
    """

    __slots__ = (
        "bounded",
        "device",
        "dims",
        "dtype",
        "ellipsis",
        "exact",
        "fast",
        "finite",
        "values",
    )

    def __init__(self, spec: TensorSpec) -> None:
        shape = spec.shape
        self.ellipsis = bool(shape) and shape is not None and shape[0] == "..."
        self.dims = None if shape is None else shape[1:] if self.ellipsis else shape
        ints = self.dims is not None and all(type(d) is int for d in self.dims)
        self.exact = tuple(self.dims or ()) if ints and not self.ellipsis else None
        self.bounded = spec.min is not None or spec.max is not None
        self.values = self.bounded or spec.finite
        self.device = None if spec.device is None else torch.device(spec.device)
        self.dtype = spec.dtype
        self.finite = spec.finite
        self.fast = (
            not self.bounded
            and (self.dims is None or self.exact is not None)
            and (self.device is None or self.device.type == "cpu")
        )

    def accepts(self, value: object) -> bool:
        """True only when the spec's full check would pass: the compiled common case.

        False means "not decided here": the full check runs and raises or passes. Used only
        when ``fast`` is set (see the class docstring)."""
        return self.screen(value) is not None

    def screen(self, value: object) -> np.ndarray | bool | None:
        """:meth:`accepts`, keeping what it read: the numpy view of the tensor when it took
        one to judge the values (a caller can hash that view instead of taking another),
        True when it passed without one, None when not decided here."""
        if type(value) is not torch.Tensor or not value.is_cpu:
            return None  # subclasses, meta and device tensors: the full check
        dtype = value.dtype
        if (self.dtype is not None and dtype is not self.dtype) or (
            self.exact is not None and value.shape != self.exact
        ):
            return None
        if value.layout is not torch.strided:
            return None
        if not self.finite or not (dtype.is_floating_point or dtype.is_complex):
            return True  # no value constraint applies (integers and bools are finite)
        if value.requires_grad or dtype not in VIEW_FLOATS:
            return None
        return finite_view(value)


def finite_view(value: torch.Tensor) -> np.ndarray | None:
    """For a CPU tensor of a float dtype in ``VIEW_FLOATS``, without grad (the caller knows):
    a numpy view of its memory when every value is finite, None when one is not or numpy
    cannot view it (a negative bit). A half-width float is viewed as int16 (the same bytes,
    what a digest hashes) and judged by its exponent bits: numpy has no bfloat16, and its
    float16 ``isfinite`` is software, ~50x slower than reading the bits."""
    mask = _EXPONENT.get(value.dtype)
    try:
        if mask is None or (mask == _F16_EXPONENT and value.numel() <= _SMALL):
            view = value.numpy()
            return view if all_finite(view) else None
        view = value.view(torch.int16).numpy()
    except RuntimeError:  # a view numpy cannot take: the caller's full check decides
        return None
    if view.size == 0 or _MAXIMUM(_BITAND(view, mask), axis=None) != mask:
        return view
    return None


def all_finite(view: np.ndarray) -> bool:
    """Whether a numpy array holds no NaN and no ±Inf, by the cheapest route for its size."""
    if view.size <= _SMALL:
        return b"\0" not in _ISFINITE(view).tobytes()
    return bool(_ALL(_ISFINITE(view), axis=None))


@dataclass(frozen=True)
class TensorSpec:
    """The declared form of one tensor.

    Attributes:
        shape: ``None`` for any shape, else one entry a dim: an int (exact size), ``None`` (any
            size) or a name (one size wherever the name appears within one check of a
            :class:`Contract`). ``"..."`` as the first entry allows any number of leading dims.
        dtype: the exact dtype (no silent casting), or ``None``.
        device: ``"cpu"``, ``"cuda"`` (any CUDA device), ``"cuda:1"`` (that one), or ``None``.
        min: inclusive lower bound on the values, or ``None``.
        max: inclusive upper bound on the values, or ``None``.
        finite: forbid NaN and ±Inf (floating and complex dtypes). With ``finite=False`` the
            bounds ignore NaN and compare ±Inf like any other value.

    Raises:
        ConfigError: a malformed field (a negative size, ``"..."`` not first, a NaN or infinite
            bound, ``min > max``, an unknown device).
    """

    shape: tuple[int | str | None, ...] | None = None
    dtype: torch.dtype | None = None
    device: str | None = None
    min: float | None = None
    max: float | None = None
    finite: bool = True
    _plan: _Plan = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        shape = tuple(self.shape) if isinstance(self.shape, list) else self.shape
        if shape is not None and not isinstance(shape, tuple):
            raise ConfigError(f"TensorSpec shape={shape!r}: must be a tuple or None")
        for i, d in enumerate(shape or ()):
            ok = d is None or (type(d) is int and d >= 0) or (type(d) is str and d != "")
            if not ok or (d == "..." and i > 0):
                raise ConfigError(
                    f"TensorSpec shape={shape!r}: dim {i} is {d!r}; each dim is an int >= 0, "
                    "None or a name, and '...' may only come first"
                )
        if self.dtype is not None and not isinstance(self.dtype, torch.dtype):
            raise ConfigError(f"TensorSpec dtype={self.dtype!r}: must be a torch.dtype or None")
        if not isinstance(self.finite, bool):
            raise ConfigError(f"TensorSpec finite={self.finite!r}: must be True or False")
        low, high = _canonical_bound(self.min, "min"), _canonical_bound(self.max, "max")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"TensorSpec min={low!r} > max={high!r}: no value can pass")
        if self.dtype is not None and self.dtype.is_complex and (low, high) != (None, None):
            raise ConfigError(f"TensorSpec dtype={self.dtype}: complex values have no order")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "device", _canonical_device(self.device))
        object.__setattr__(self, "min", low)
        object.__setattr__(self, "max", high)
        object.__setattr__(self, "_plan", _Plan(self))

    def check(
        self, value: object, *, field: str = "input", dims: dict[str, int] | None = None
    ) -> None:
        """Check one tensor: type, device, dtype, shape, then values (at most one sync).

        Args:
            value: the object to check.
            field: how messages and the error's ``field`` name it.
            dims: sizes of named dims bound so far; the names this check binds are added.

        Raises:
            InvalidInput: the first violation; ``code``, ``field`` and ``rule`` say which.
        """
        plan = self._plan
        if plan.fast and plan.accepts(value):
            return  # binds no named dim: a fast spec has none
        tensor = self._check_meta(value, field, {} if dims is None else dims, None)
        probes: list[torch.Tensor] = []
        kind = self._probe(tensor, probes)
        if kind is not None:
            self._judge(tensor, field, kind, _fetch(probes))

    def to_json(self) -> dict[str, object]:
        """A canonical, JSON-serialisable description (dtype as ``"float32"``)."""
        return {
            "shape": None if self.shape is None else list(self.shape),
            "dtype": None if self.dtype is None else _fmt_dtype(self.dtype),
            "device": self.device,
            "min": self.min,
            "max": self.max,
            "finite": self.finite,
        }

    def _check_meta(
        self, value: object, field: str, dims: dict[str, int], origins: dict[str, str] | None
    ) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            got = type(value).__name__
            msg = f"{field}: expected a torch.Tensor, got {got}; pass a tensor"
            raise _fail(D.INVALID_ARGUMENT, field, "type", msg, expected="Tensor", actual=got)
        if value.layout is not torch.strided:
            msg = f"{field}: expected a dense tensor, got {value.layout}; use .to_dense()"
            raise _fail(D.INVALID_ARGUMENT, field, "layout", msg, actual=str(value.layout))
        plan = self._plan
        if plan.device is not None and not _device_matches(plan.device, value.device):
            got = str(value.device)
            msg = f"{field}: on {got}, expected {self.device}; move it with .to({self.device!r})"
            raise _fail(D.DEVICE_MISMATCH, field, "device", msg, expected=self.device, actual=got)
        if value.is_meta and plan.values:
            msg = f"{field}: a meta tensor holds no values, and its spec checks values"
            raise _fail(D.INVALID_ARGUMENT, field, "device", msg, actual="meta")
        dtype = value.dtype
        if self.dtype is not None and dtype != self.dtype:
            want, got = _fmt_dtype(self.dtype), _fmt_dtype(dtype)
            msg = f"{field}: dtype {got}, expected {want} (no silent casting); convert it first"
            raise _fail(D.DTYPE_MISMATCH, field, "dtype", msg, expected=want, actual=got)
        if plan.bounded and dtype.is_complex:
            got = _fmt_dtype(dtype)
            msg = f"{field}: dtype {got}, but bounds need real values; send a real tensor"
            raise _fail(D.DTYPE_MISMATCH, field, "dtype", msg, expected="real", actual=got)
        if plan.dims is not None and value.shape != plan.exact:
            self._check_shape(tuple(value.shape), field, dims, origins)
        return value

    def _check_shape(
        self,
        shape: tuple[int, ...],
        field: str,
        dims: dict[str, int],
        origins: dict[str, str] | None,
    ) -> None:
        spec = self._plan.dims or ()
        offset = len(shape) - len(spec)
        if offset < 0 or (offset > 0 and not self._plan.ellipsis):
            raise self._shape_error(shape, field, None, dims, origins)
        for i, dim in enumerate(spec):
            size = shape[offset + i]
            if dim is None or dim == size:
                continue
            if isinstance(dim, int) or dims.setdefault(dim, size) != size:
                raise self._shape_error(shape, field, offset + i, dims, origins)
            if origins is not None:
                origins.setdefault(dim, field)

    def _shape_error(
        self,
        shape: tuple[int, ...],
        field: str,
        i: int | None,
        dims: dict[str, int],
        origins: dict[str, str] | None,
    ) -> InvalidInput:
        want, got = _fmt_shape(self.shape or ()), _fmt_shape(shape)
        if i is None:
            rank = len(self._plan.dims or ())
            need = f"at least {rank}" if self._plan.ellipsis else rank
            msg = (
                f"{field}: shape {got} has {len(shape)} dims, expected {need} as in {want}; "
                "send a tensor of the declared shape"
            )
            return _fail(D.SHAPE_MISMATCH, field, "rank", msg, expected=want, actual=shape)
        dim = (self._plan.dims or ())[i - len(shape)]
        if not isinstance(dim, str):
            msg = (
                f"{field}: shape {got}, expected {want}: dim {i} is {shape[i]}, not {dim}; "
                "send a tensor of the declared shape"
            )
            return _fail(D.SHAPE_MISMATCH, field, "dim", msg, expected=want, actual=shape, index=i)
        bound, where = dims[dim], (origins or {}).get(dim, "an earlier check")
        msg = (
            f"{field}: shape {got}, expected {want}: dim {i} ({dim}) is {shape[i]}, but "
            f"{dim} = {bound} from {where}; send tensors whose {dim} dims agree"
        )
        return _fail(
            D.SHAPE_MISMATCH, field, "named_dim", msg, expected=bound, actual=shape[i], index=i
        )

    def _probe(self, t: torch.Tensor, probes: list[torch.Tensor]) -> int | None:
        """Append this tensor's probes (no sync); return how to read them, None if unchecked."""
        if not self._plan.values or t.numel() == 0:
            return None
        if t.requires_grad:
            t = t.detach()
        if t.is_floating_point():
            if t.dtype not in _DIRECT_FLOATS:
                t = t.float()  # float8: exact in float32, which aminmax supports
            if self.finite:
                probes.extend(torch.aminmax(t))
                return _MINMAX
            if not self._plan.bounded:
                return None
            nan = torch.isnan(t)
            probes += (t.masked_fill(nan, math.inf).amin(), t.masked_fill(nan, -math.inf).amax())
            return _BOUNDS
        if t.is_complex():
            if not self.finite:
                return None
            probes.append(torch.isfinite(t).all())
            return _COMPLEX
        if not self._plan.bounded:
            return None  # integers and bools are always finite
        if t.dtype == torch.uint64:
            probes.extend(torch.aminmax(t.view(torch.int64)))
            return _UINT64
        probes.extend(torch.aminmax(t.to(torch.int64) if t.dtype in _WIDE_UINTS else t))
        return _BOUNDS

    def _judge(self, t: torch.Tensor, field: str, kind: int, found: Sequence[Any]) -> None:
        """Raise for the first bad value of ``t``, given its probes read on the host."""
        if kind == _COMPLEX:
            if not found[0]:
                raise self._not_finite(t, field)
            return
        lo, hi = found[0], found[1]
        if kind == _MINMAX and not (math.isfinite(lo) and math.isfinite(hi)):
            raise self._not_finite(t, field)
        if kind == _UINT64 and lo < 0:
            flat = t.flatten().tolist()  # values >= 2**63: read them exactly (rare, slow)
            lo, hi = min(flat), max(flat)
        if self.min is not None and lo < self.min:
            raise self._out_of_range(t, field, lo, hi, "min")
        if self.max is not None and hi > self.max:
            raise self._out_of_range(t, field, lo, hi, "max")

    def _not_finite(self, t: torch.Tensor, field: str) -> InvalidInput:
        t = t.detach()
        if t.is_floating_point():
            t = t.double()  # float8 has no isfinite; float64 holds every float exactly
            tests = (torch.isnan, torch.isposinf, torch.isneginf)
            nan, pos, neg = (int(test(t).sum()) for test in tests)
            counts = f"{nan} NaN, {pos} +Inf, {neg} -Inf"
        else:
            counts = f"{int((~torch.isfinite(t)).sum())} non-finite"
        first = _first_index(~torch.isfinite(t), t.shape)
        msg = (
            f"{field}: {counts} among {t.numel()} values, the first at index {first}; expected "
            "finite values: find where they come from upstream (they were not passed on)"
        )
        return _fail(
            D.NOT_FINITE, field, "finite", msg, expected="finite", actual=counts, index=first
        )

    def _out_of_range(
        self, t: torch.Tensor, field: str, lo: float, hi: float, which: str
    ) -> InvalidInput:
        bound = self.min if which == "min" else self.max
        assert bound is not None
        if t.dtype == torch.uint64:
            flat = t.flatten().tolist()
            hit = next(
                i for i, v in enumerate(flat) if (v < bound if which == "min" else v > bound)
            )
            first = _unravel(hit, t.shape)
        else:
            exact = t.detach().double() if t.is_floating_point() else t.detach().to(torch.int64)
            first = _first_index(_outside(exact, bound, which == "min"), t.shape)
        low = "-inf" if self.min is None else repr(self.min)
        high = "inf" if self.max is None else repr(self.max)
        msg = (
            f"{field}: values must lie in [{low}, {high}]; found min {lo!r} and max {hi!r}, the "
            f"first outside at index {first}; check the producer of these values"
        )
        limits = [self.min, self.max]
        return _fail(
            D.OUT_OF_RANGE, field, which, msg, expected=limits, actual=[lo, hi], index=first
        )


_I64 = torch.iinfo(torch.int64)


def _outside(exact: torch.Tensor, bound: int | float, lower: bool) -> torch.Tensor:
    """The mask of ``exact < bound`` (``lower``) or ``exact > bound``, for float64 or int64
    values and a bound of any size: a Python int overflows torch's scalar conversion past
    64 bits and is rounded by it past 2**53, so the bound is first made a scalar that gives
    the same answer for every value (rounded outward, clamped to the values' range)."""
    limit: int | float
    if not exact.is_floating_point():  # integers against an integer bound: exact
        limit = math.ceil(bound) if lower else math.floor(bound)
        if (lower and limit > _I64.max) or (not lower and limit < _I64.min):
            return torch.ones(exact.shape, dtype=torch.bool)  # every value is outside
        limit = min(max(limit, _I64.min), _I64.max)
    elif isinstance(bound, float):
        limit = bound
    else:
        try:
            limit = float(bound)
        except OverflowError:
            limit = math.inf if bound > 0 else -math.inf
        if lower and limit < bound:
            limit = math.nextafter(limit, math.inf)
        elif not lower and limit > bound:
            limit = math.nextafter(limit, -math.inf)
    return exact < limit if lower else exact > limit


def _unravel(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat, rest = divmod(flat, size)
        index.append(rest)
    return tuple(reversed(index))


def _first_index(mask: torch.Tensor, shape: Sequence[int]) -> tuple[int, ...]:
    """Index of the first True in ``mask`` (bad path only: it syncs)."""
    flat = int(torch.argmax(mask.flatten().to(torch.uint8)))  # argmax: the first maximum
    return _unravel(flat, shape)


def _fetch(probes: list[torch.Tensor]) -> list[Any]:
    """Read 0-d probes on the host: CPU ones directly, the others in one copy (one sync)."""
    found: list[Any] = []
    remote: list[int] = []
    for i, p in enumerate(probes):
        if p.is_cpu:
            found.append(p.item())
        else:
            found.append(None)
            remote.append(i)
    if remote:
        for i, v in zip(remote, _gather([probes[i] for i in remote]), strict=True):
            found[i] = v
    return found


def _gather(probes: list[torch.Tensor]) -> list[Any]:
    """Copy 0-d probes of any devices and dtypes to the host, exactly, in one transfer.

    Floats travel as float64 bit patterns, integers and flags as int64, in one int64 buffer;
    probes on another device join the first one's by an asynchronous device-to-device copy.
    The buffer's ``.cpu()`` is the one device-to-host synchronisation.
    """
    device = probes[0].device
    on = [p if p.device == device else p.to(device, non_blocking=True) for p in probes]
    floats = [i for i, p in enumerate(on) if p.is_floating_point()]
    others = [i for i, p in enumerate(on) if not p.is_floating_point()]
    parts = []  # stack promotes exactly (float16 with bfloat16 to float32), then one cast
    if floats:
        parts.append(torch.stack([on[i] for i in floats]).double().view(torch.int64))
    if others:
        parts.append(torch.stack([on[i] for i in others]).to(torch.int64))
    host = (torch.cat(parts) if len(parts) > 1 else parts[0]).cpu()
    values = host[: len(floats)].view(torch.float64).tolist() + host[len(floats) :].tolist()
    found: list[Any] = [None] * len(probes)
    for i, v in zip(floats + others, values, strict=True):
        found[i] = v
    return found


class Contract:
    """A contract for one tensor, or for a mapping of named tensors, plus semantic rules.

    Args:
        specs: a :class:`TensorSpec` (the value is one tensor) or a mapping of names to specs
            (the value is a mapping with exactly these keys, checked in this order).
        rules: :class:`Rule` objects, run in order after every spec has passed.
        name: a label for messages and the digest.

    Raises:
        ConfigError: a spec is not a TensorSpec, a key not a str, a rule lacks a name or call.
    """

    def __init__(
        self,
        specs: TensorSpec | Mapping[str, TensorSpec],
        *,
        rules: Sequence[Rule] = (),
        name: str = "contract",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Contract name={name!r}: must be a non-empty str")
        self.name = name
        self._items: tuple[tuple[str, TensorSpec], ...] | None = None
        if isinstance(specs, Mapping):
            for key, spec in specs.items():
                if not isinstance(key, str) or not isinstance(spec, TensorSpec):
                    raise ConfigError(f"Contract {name!r}: {key!r}: {spec!r}: str -> TensorSpec")
            self._items = tuple(specs.items())
            self._keys = frozenset(specs)
            self._sorted_keys = sorted(self._keys)
        elif not isinstance(specs, TensorSpec):
            raise ConfigError(f"Contract {name!r}: specs={specs!r}: a TensorSpec or a mapping")
        self.specs: TensorSpec | Mapping[str, TensorSpec] = (
            specs if self._items is None else MappingProxyType(dict(self._items))
        )
        for rule in rules:
            if not isinstance(rule, Rule) or not isinstance(rule.name, str) or not rule.name:
                raise ConfigError(f"Contract {name!r}: rule {rule!r} needs a name and __call__")
        self.rules: tuple[Rule, ...] = tuple(rules)
        # compiled once: without rules, a value every spec's fast plan accepts passes whole
        if isinstance(specs, TensorSpec):
            plans = [specs._plan]
        else:
            plans = [spec._plan for _, spec in self._items or ()]
        fast = not self.rules and all(p.fast for p in plans)
        self._fast_one = plans[0] if fast and self._items is None else None
        self._fast_map = (
            tuple((k, spec._plan) for k, spec in self._items)
            if fast and self._items is not None
            else None
        )

    def _accepts_map(self, value: object, plans: tuple[tuple[str, _Plan], ...]) -> bool:
        if not isinstance(value, Mapping) or value.keys() != self._keys:
            return False
        return all(plan.accepts(value[key]) for key, plan in plans)

    def screen(self, value: object) -> np.ndarray | bool | None:
        """The compiled check alone (no error is built here): the numpy view of a single
        tensor that passed by its values (the supervisor hashes that view rather than take
        another), True for a value that passed without one, None when only :meth:`check`
        can decide. Never wrong in the passing direction: whatever it passes, ``check``
        passes."""
        one = self._fast_one
        if one is not None:
            return one.screen(value)
        if self._fast_map is not None and self._accepts_map(value, self._fast_map):
            return True
        return None

    def check(self, value: object, *, field: str = "input") -> None:
        """Check a value against the contract, with at most one device-to-host sync in all.

        Args:
            value: the tensor, or the mapping of tensors.
            field: how messages name it; a mapping's tensors are ``field.key``.

        Raises:
            InvalidInput: the first violation (``code``, ``field``, ``rule``, and ``index``
                where one element is to blame). For an input, raise it to the caller; for a
                model's output it is a model failure (INVALID_OUTPUT, DIA-4004).
        """
        one = self._fast_one
        if one is not None:
            if one.screen(value) is not None:
                return
        elif self._fast_map is not None and self._accepts_map(value, self._fast_map):
            return
        checked = self._check_meta(value, field)
        probes: list[torch.Tensor] = []
        kinds = []
        for spec, tensor, _ in checked:
            start = len(probes)
            kinds.append((spec._probe(tensor, probes), start))
        spans = []
        for rule in self.rules:
            start = len(probes)
            if isinstance(rule, _BuiltinRule):
                rule._probe(value, probes)
            spans.append((start, len(probes)))
        found = _fetch(probes) if probes else []
        for (spec, tensor, name), (kind, start) in zip(checked, kinds, strict=True):
            if kind is not None:
                spec._judge(tensor, name, kind, found[start : start + 2])
        for rule, (start, end) in zip(self.rules, spans, strict=True):
            key = getattr(rule, "key", None)
            where = field if key is None or self._items is None else f"{field}.{key}"
            index = None
            if isinstance(rule, _BuiltinRule):
                message, index = rule._judge(value, found[start:end]) or (None, None)
            else:
                message = rule(value)
            if message is not None:
                msg = (
                    f"{where}: breaks rule {rule.name!r} of contract {self.name!r}: {message}; "
                    "check the producer of these values"
                )
                raise _fail(D.CONTRACT_VIOLATED, where, rule.name, msg, index=index)

    def _check_meta(self, value: object, field: str) -> list[tuple[TensorSpec, torch.Tensor, str]]:
        dims: dict[str, int] = {}
        if self._items is None:
            assert isinstance(self.specs, TensorSpec)
            return [(self.specs, self.specs._check_meta(value, field, dims, None), field)]
        keys = self._sorted_keys
        if not isinstance(value, Mapping):
            got = type(value).__name__
            msg = f"{field}: expected a mapping with the keys {keys}, got {got}"
            raise _fail(D.INVALID_ARGUMENT, field, "type", msg, expected="Mapping", actual=got)
        if value.keys() != self._keys:
            missing = ", ".join(repr(k) for k, _ in self._items if k not in value)
            extra = ", ".join(repr(k) for k in value if k not in self._keys)
            what = f"missing key {missing}" if missing else f"unexpected key {extra}"
            what += f" and unexpected key {extra}" if missing and extra else ""
            msg = f"{field}: {what}; expected exactly the keys {keys}"
            actual = sorted(map(repr, value))
            raise _fail(D.INVALID_ARGUMENT, field, "keys", msg, expected=keys, actual=actual)
        origins: dict[str, str] = {}
        checked = []
        for key, spec in self._items:
            name = f"{field}.{key}"
            checked.append((spec, spec._check_meta(value[key], name, dims, origins), name))
        return checked

    def reset(self) -> None:
        """Forget the state of every stateful rule (after the producer restarted, say)."""
        for rule in self.rules:
            reset = getattr(rule, "reset", None)
            if callable(reset):
                reset()

    def to_json(self) -> dict[str, object]:
        """A canonical, JSON-serialisable description: specs, rules and their parameters."""
        rules = []
        for rule in self.rules:
            describe = getattr(rule, "to_json", None)
            rules.append(describe() if callable(describe) else {"name": rule.name})
        if isinstance(self.specs, TensorSpec):
            specs: object = self.specs.to_json()
        else:
            specs = {key: spec.to_json() for key, spec in self.specs.items()}
        kind = "tensor" if self._items is None else "mapping"
        return {
            "version": _JSON_VERSION,
            "name": self.name,
            "kind": kind,
            "specs": specs,
            "rules": rules,
        }

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON (sorted keys, no spaces): identifies the contract."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).digest()

    def __repr__(self) -> str:
        return f"Contract({self.specs!r}, rules={self.rules!r}, name={self.name!r})"


class _BuiltinRule:
    """A rule whose device work joins the contract's one sync: ``_probe`` appends 0-d tensors
    (none for a short CPU tensor, which ``_judge`` reads directly), ``_judge`` reads them on the
    host and returns ``(message, index)`` or None. Called alone, it costs one sync of its own.
    It assumes the contract's specs hold (a mapping with its key, of the declared shape)."""

    name = ""
    key = ""

    def _probe(self, value: Any, probes: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _judge(self, value: Any, found: Sequence[Any]) -> tuple[str, int] | None:
        raise NotImplementedError

    def __call__(self, value: Any) -> str | None:
        probes: list[torch.Tensor] = []
        self._probe(value, probes)
        verdict = self._judge(value, _fetch(probes) if probes else [])
        return None if verdict is None else verdict[0]


def _on_host(t: torch.Tensor) -> bool:
    return t.is_cpu and t.shape[0] <= _HOST_ROWS


class _BoxesInImage(_BuiltinRule):
    """Boxes ``(N, 4)`` as x_min, y_min, x_max, y_max with 0 <= x_min <= x_max <= width and
    0 <= y_min <= y_max <= height."""

    name = "boxes_in_image"

    def __init__(self, key: str, width: int, height: int) -> None:
        self.key, self.width, self.height = key, width, height
        self._limits: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "key": self.key, "width": self.width, "height": self.height}

    def _probe(self, value: Any, probes: list[torch.Tensor]) -> None:
        boxes: torch.Tensor = value[self.key].detach()
        if _on_host(boxes) or boxes.shape[0] == 0:
            return
        n = boxes.shape[0]
        limits = self._limits.get((boxes.device, boxes.dtype))
        if limits is None:  # (2, 1, 2, 1): [0, 0] and [W, H], filled on the device (no copy)
            limits = torch.zeros((2, 1, 2, 1), dtype=boxes.dtype, device=boxes.device)
            limits[1, 0, 0, 0], limits[1, 0, 1, 0] = self.width, self.height
            self._limits[(boxes.device, boxes.dtype)] = limits  # a benign race: equal tensors
        # per box, the chains [0, x0, x1, W] and [0, y0, y1, H] must be non-decreasing
        xy = boxes.reshape(n, 2, 2).transpose(1, 2)
        chains = torch.cat((limits[0].expand(n, 2, 1), xy, limits[1].expand(n, 2, 1)), dim=2)
        probes.append((chains[..., 1:] >= chains[..., :-1]).all())

    def _judge(self, value: Any, found: Sequence[Any]) -> tuple[str, int] | None:
        boxes: torch.Tensor = value[self.key]
        if found[:1] == [True] or not (found or _on_host(boxes)):
            return None
        w, h = self.width, self.height
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            if 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h:
                continue
            tests = (
                (x0 >= 0, "0 <= x_min"),
                (x1 >= x0, "x_min <= x_max"),
                (x1 <= w, f"x_max <= width ({w})"),
                (y0 >= 0, "0 <= y_min"),
                (y1 >= y0, "y_min <= y_max"),
                (y1 <= h, f"y_max <= height ({h})"),
            )
            broken = next(text for ok, text in tests if not ok)
            return f"{self.key}[{i}] = ({x0!r}, {y0!r}, {x1!r}, {y1!r}) breaks {broken}", i
        if found:  # flagged on the device yet clean on the host: fail closed, say so
            return f"{self.key}: flagged on {boxes.device}, but no bad box found on re-reading", -1
        return None


class _StrictlyIncreasing(_BuiltinRule):
    """Integers ``(N,)`` strictly increasing within one call and across accepted calls.

    State: the last value of the last call accepted. Comparing with it and updating it happen
    on the host under one lock, after the contract's sync: concurrent checks serialise for a
    few Python operations only, and never both pass with overlapping values.
    """

    name = "timestamps_increasing"

    def __init__(self, key: str) -> None:
        self.key = key
        self._lock = threading.Lock()
        self._last: int | None = None

    @property
    def last(self) -> int | None:
        """The last value of the last accepted call, or None."""
        with self._lock:
            return self._last

    def reset(self) -> None:
        """Forget the last value: the next call may start anywhere."""
        with self._lock:
            self._last = None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "key": self.key}

    def _probe(self, value: Any, probes: list[torch.Tensor]) -> None:
        ts: torch.Tensor = value[self.key]
        if not _on_host(ts) and ts.shape[0] > 0:
            probes.extend(((ts[1:] > ts[:-1]).all(), ts[0], ts[-1]))

    def _judge(self, value: Any, found: Sequence[Any]) -> tuple[str, int] | None:
        ts: torch.Tensor = value[self.key]
        if ts.shape[0] == 0:
            return None  # nothing to compare, nothing to remember
        values: list[int] = [] if found else ts.tolist()
        increasing, first, last = found or (
            all(map(operator.lt, values, itertools.islice(values, 1, None))),
            values[0],
            values[-1],
        )
        if not increasing:
            values = values or ts.tolist()
            i = next(i for i in range(1, len(values)) if values[i] <= values[i - 1])
            key = self.key
            return f"{key}[{i}] = {values[i]} is not above {key}[{i - 1}] = {values[i - 1]}", i
        with self._lock:
            if self._last is not None and first <= self._last:
                return (
                    f"{self.key}[0] = {first} is not above {self._last}, the last value of the "
                    "previous accepted call (a stale or replayed output?)",
                    0,
                )
            self._last = last
        return None


def perception_contract(width: int, height: int, *, device: str | None = None) -> Contract:
    """The deployment SOP's perception output, as a worked example.

    A mapping of ``confidence`` ``(N,)`` float32 in [0, 1]; ``boxes`` ``(N, 4)`` float32 as
    x_min, y_min, x_max, y_max inside the image; ``timestamps_us`` ``(N,)`` int64 >= 1 and
    strictly increasing within a call and across accepted calls (a stateful rule: call
    :meth:`Contract.reset` when the producer restarts).

    Args:
        width: image width in pixels (x coordinates lie in [0, width]).
        height: image height in pixels.
        device: where the tensors must be, or None for anywhere.

    Returns:
        A new contract, with timestamp state of its own.

    Raises:
        ConfigError: width or height is not an int in [1, 2**24] (exact in float32).
    """
    for label, size in (("width", width), ("height", height)):
        if type(size) is not int or not 0 < size <= 2**24:
            raise ConfigError(f"perception_contract {label}={size!r}: must be an int in [1, 2**24]")
    specs = {
        "confidence": TensorSpec(("N",), torch.float32, device, min=0.0, max=1.0),
        "boxes": TensorSpec(("N", 4), torch.float32, device),
        "timestamps_us": TensorSpec(("N",), torch.int64, device, min=1),
    }
    rules = (_BoxesInImage("boxes", width, height), _StrictlyIncreasing("timestamps_us"))
    return Contract(specs, rules=rules, name="perception")
