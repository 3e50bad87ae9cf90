"""What the supervisor does with tensors: digest them, check outputs, classify failures.

Digests are SHA-256 over a small header (dtype and shape) followed by the raw bytes of each
tensor, so that the same bytes with another shape or dtype digest differently. A value may be
a tensor, a tuple or list of them, or a mapping of names to them (keys are digested too).
Anything else (a Python scalar, None) is digested by its ``repr``.

Cost: a CPU tensor is hashed in place (no copy when contiguous). A CUDA tensor must first be
copied to the host -- one device-to-host copy, and a synchronisation, per digested tensor --
which is why the supervisor digests each input and each served output exactly once.
"""

from __future__ import annotations

import cmath
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from vigil import _diagnostics as D
from vigil.errors import DeviceFatal, InputRefused, InvalidInput
from vigil.schemas import Outcome
from vigil.schemas._contracts import VIEW_FLOATS, finite_view

_DOMAIN = b"vigil/tensor/v1\x00"

# Sticky CUDA errors: after one of these, every later CUDA call in the process fails.
_STICKY_CUDA = (
    "device-side assert triggered",
    "an illegal memory access was encountered",
    "unspecified launch failure",
    "misaligned address",
    "an illegal instruction was encountered",
    "uncorrectable ECC error",
    "CUDA error: unknown error",
)


def digest(value: Any) -> bytes:
    """SHA-256 of a tensor or a structure of tensors (see the module docstring)."""
    if (  # the common case, one contiguous CPU tensor: hash its memory in place
        type(value) is torch.Tensor
        and value.is_cpu
        and value.dtype in _NUMPY_NATIVE
        and not value.requires_grad
        and value.is_contiguous()
    ):
        h = _SHA256(_prefix(value.dtype, value.shape))
        if value.numel():
            h.update(value.numpy().data)
        return h.digest()
    h = hashlib.sha256(_DOMAIN)
    _feed(h, value)
    return h.digest()


def digest_view(value: torch.Tensor, view: Any) -> bytes:
    """:func:`digest` of a plain CPU tensor from the numpy view a check already took of it
    (:meth:`vigil.schemas.Contract.screen`, :func:`check_finite`): the same bytes, without
    a second view. Anything but such a view (True, None) digests as :func:`digest` does."""
    if type(view) is np.ndarray and value.is_contiguous():
        h = _SHA256(_prefix(value.dtype, value.shape))
        h.update(view)  # type: ignore[arg-type]  # an ndarray is a buffer; its stubs lack __buffer__
        return h.digest()
    return digest(value)


AMPLIFIED = 64 << 20
"""A rejected input whose tensors view this many bytes more than the memory they hold (a
stride-0 ``expand``: 4 bytes seen as 2 GiB) is recorded with the zero digest: hashing it
would cost its viewed size, to refuse it."""


def amplified(value: Any) -> int | None:
    """The bytes ``value``'s tensors view, when that exceeds the memory they hold by more
    than :data:`AMPLIFIED`; else None."""
    viewed = held = 0
    for t in tensors_of(value):
        viewed += t.numel() * t.element_size()
        held += t.untyped_storage().nbytes()
    return viewed if viewed > held + AMPLIFIED else None


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        h.update(_header(value.dtype, value.shape))
        if value.numel():
            h.update(_host_bytes(value))
    elif isinstance(value, Mapping):
        h.update(b"M%d" % len(value))
        for key in sorted(value, key=str):
            h.update(_key_bytes(key))
            _feed(h, value[key])
    elif isinstance(value, tuple | list):
        h.update(b"L%d" % len(value))
        for item in value:
            _feed(h, item)
    else:
        h.update(f"R{value!r}".encode())


_HEADERS: dict[tuple[torch.dtype, torch.Size], bytes] = {}
_PREFIXES: dict[tuple[torch.dtype, torch.Size], bytes] = {}
_SHA256 = hashlib.sha256


def _prefix(dtype: torch.dtype, shape: torch.Size) -> bytes:
    """``_DOMAIN`` + ``_header``, cached: what a single tensor's digest starts with."""
    key = (dtype, shape)
    prefix = _PREFIXES.get(key)
    if prefix is None:
        prefix = _DOMAIN + _header(dtype, shape)
        if len(_PREFIXES) < 4096:
            _PREFIXES[key] = prefix
    return prefix


def _header(dtype: torch.dtype, shape: torch.Size) -> bytes:
    """``T<dtype><shape>``, cached: formatting it costs more than hashing a small tensor."""
    key = (dtype, shape)
    header = _HEADERS.get(key)
    if header is None:
        header = f"T{dtype}{tuple(shape)}".encode()
        if len(_HEADERS) < 4096:
            _HEADERS[key] = header
    return header


def _key_bytes(key: Any) -> bytes:
    """``K<key>`` of a mapping's key, cached for string keys (a token output's two, say)."""
    if type(key) is not str:
        return f"K{key!s}".encode()
    got = _KEYS.get(key)
    if got is None:
        got = f"K{key}".encode()
        if len(_KEYS) < 4096:
            _KEYS[key] = got
    return got


_KEYS: dict[str, bytes] = {}


def _host_bytes(t: torch.Tensor) -> Any:
    """The tensor's bytes as a buffer: a view of CPU memory, or a host copy of device memory."""
    if (  # the common case first: a plain contiguous CPU tensor numpy can view
        type(t) is torch.Tensor
        and t.is_cpu
        and not t.requires_grad
        and t.dtype in _NUMPY_NATIVE
        and t.is_contiguous()
    ):
        return t.numpy()
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.dtype in _NUMPY_NATIVE:
        return t.numpy()  # the buffer protocol of a C-contiguous array: no copy
    return t.reshape(-1).view(torch.uint8).numpy()  # bfloat16 and friends, byte-wise


_NUMPY_NATIVE = frozenset(
    {
        torch.float16,
        torch.float32,
        torch.float64,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    }
)


def tensors_of(value: Any) -> list[torch.Tensor]:
    """The tensors in a value (a tensor, a sequence or a mapping of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for k in sorted(value, key=str) for t in tensors_of(value[k])]
    if isinstance(value, tuple | list):
        return [t for item in value for t in tensors_of(item)]
    return []


def _nonfinite_leaf(value: Any, where: str) -> str | None:
    """Where a value's non-tensor floating leaf (a Python float or complex, a numpy array or
    scalar) is NaN or Inf, walked as :func:`tensors_of` walks it; None when there is none."""
    if isinstance(value, float | complex):
        bad = not cmath.isfinite(value)
    elif isinstance(value, np.ndarray | np.generic):
        bad = value.dtype.kind in "fc" and not bool(np.isfinite(value).all())
    else:
        if isinstance(value, Mapping):
            items = [(f"{where}[{k!r}]", value[k]) for k in sorted(value, key=str)]
        elif isinstance(value, tuple | list):
            items = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
        else:  # a tensor (checked apart) or a value without floats
            items = []
        found = (_nonfinite_leaf(item, at) for at, item in items)
        return next((f for f in found if f is not None), None)
    return where if bad else None


def check_finite(value: Any, field: str = "output") -> Any:
    """The default output check: every floating tensor finite, with one host sync in all.

    Returns the numpy view it judged a single plain CPU tensor by (for
    :func:`digest_view`), else None.

    Raises:
        InvalidInput: DIA-2105 naming the first tensor holding NaN/Inf; DIA-2047 when the
            value holds no tensor at all.
    """
    if (  # the common case, a single CPU tensor: one numpy check on a view
        type(value) is torch.Tensor
        and value.dtype in VIEW_FLOATS
        and value.is_cpu
        and not value.requires_grad
    ):
        view = finite_view(value)
        if view is not None:
            return view
    tensors = tensors_of(value)
    if not tensors:
        raise InvalidInput(
            f"{field} holds no tensor (got {type(value).__name__})", field=field, rule="tensor"
        )
    if type(value) is not torch.Tensor:  # beside the tensors: a float, a numpy array
        where = _nonfinite_leaf(value, field)
        if where is not None:
            raise InvalidInput(
                f"{where} holds NaN or Inf", diagnostic=D.NOT_FINITE, field=field, rule="finite"
            )
    floats = [t for t in tensors if t.is_floating_point() or t.is_complex()]
    if not floats:
        return None
    if all(t.device.type == "cpu" and t.dtype in VIEW_FLOATS for t in floats):
        # on the CPU, numpy's isfinite on a view costs ~1 µs; torch's dispatch ~6 µs, and
        # torch's isfinite on 1 MB of bfloat16 ~2.5 ms against ~40 µs reading the bits
        for i, tensor in enumerate(floats):
            t = tensor.detach()
            if finite_view(t) is None and not bool(torch.isfinite(t).all()):
                raise InvalidInput(
                    f"{field} tensor #{i} (shape {tuple(t.shape)}) holds NaN or Inf",
                    diagnostic=D.NOT_FINITE,
                    field=field,
                    rule="finite",
                )
        return None
    flags = [torch.isfinite(t).all() for t in floats]
    ok = flags[0] if len(flags) == 1 else torch.stack([f.to(flags[0].device) for f in flags]).all()
    if bool(ok):  # the one synchronisation
        return None
    bad = next(i for i, f in enumerate(flags) if not bool(f))
    raise InvalidInput(
        f"{field} tensor #{bad} (shape {tuple(floats[bad].shape)}) holds NaN or Inf",
        diagnostic=D.NOT_FINITE,
        field=field,
        rule="finite",
    )


def classify(exc: BaseException) -> tuple[Outcome, D.Diagnostic]:
    """Map an exception raised by a model to the outcome the state machine counts.

    :class:`~vigil.errors.InputRefused` (the model's own input validation refused the call)
    maps to REJECTED with the model's code: bad input, not a failure of the model."""
    if isinstance(exc, InputRefused):
        return Outcome.REJECTED, exc.diagnostic
    if isinstance(exc, DeviceFatal):
        return Outcome.DEVICE_FATAL, D.DEVICE_FATAL
    if isinstance(exc, torch.OutOfMemoryError):
        return Outcome.OUT_OF_MEMORY, D.OUT_OF_MEMORY
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if any(marker in text for marker in _STICKY_CUDA):
            return Outcome.DEVICE_FATAL, D.DEVICE_FATAL
        if "out of memory" in text:
            return Outcome.OUT_OF_MEMORY, D.OUT_OF_MEMORY
    return Outcome.ERROR, D.MODEL_ERROR


def describe(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` for a record's reason, cut to ``limit`` characters. An
    ``InputRefused`` gives its message alone: its record carries the code, and the caller
    gets the message back (:meth:`Supervisor.infer` raises it again)."""
    text = exc.message if isinstance(exc, InputRefused) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None))


def output_bytes(value: Any) -> int:
    """Bytes of tensor data in an output (what its digest reads)."""
    if type(value) is torch.Tensor:
        return int(value.nbytes)
    return sum(int(t.nbytes) for t in tensors_of(value))


def snapshot(value: Any) -> Any | None:
    """A copy of an output that digests exactly as ``value`` did when it was taken, and that
    nobody else holds: each tensor copied to host memory the copy owns (``clone`` on the CPU,
    a device-to-host copy otherwise). None when ``value`` holds something else than tensors,
    immutable scalars and containers of them (its ``repr`` could change later): such an output
    is hashed at once."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        return t.clone() if t.device.type == "cpu" else t.cpu()
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, Mapping):
        keys = list(value)
        items = [snapshot(value[k]) for k in keys]
    elif isinstance(value, tuple | list):
        keys = None
        items = [snapshot(item) for item in value]
    else:
        return None
    originals = [value[k] for k in keys] if keys is not None else list(value)
    if any(c is None and o is not None for c, o in zip(items, originals, strict=True)):
        return None
    if keys is not None:
        return dict(zip(keys, items, strict=True))
    return items if isinstance(value, list) else tuple(items)
