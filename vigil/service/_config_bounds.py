"""Bounds a service configuration must respect before anything is built from it.

A configuration file is a few hundred bytes; what the service builds from it must not be
unbounded: every integer is a TOML integer (64-bit signed, as the TOML specification
requires: a longer one would overflow a float conversion or a tensor dtype later), a declared
input or constant-fallback tensor has at most the protocol's 8 dims of at most 2**32 - 1 each,
and its bytes fit the workers' shared memory (``[workers].shm_mb``), through which every input
and every output of the model passes; the warm-up input and the constant fallback are allocated
when the service starts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from vigil import _diagnostics as D
from vigil.errors import ServiceConfigError

if TYPE_CHECKING:
    from vigil.service._config import ServeConfig

__all__ = ["check_integers", "check_tensor_sizes", "fits_dtype"]

INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
MAX_NDIM = 8  # the socket protocol's limits (docs/PROTOCOL.md): a tensor beyond them can
MAX_DIM = 0xFFFF_FFFF  # never be sent or received
_MB = 1 << 20


def _error(source: str, where: str, rule: str, diagnostic: D.Diagnostic) -> ServiceConfigError:
    return ServiceConfigError(
        f"{source}: {where}: {rule}", diagnostic=diagnostic, file=source, key=where
    )


def check_integers(data: dict[str, Any], source: str) -> None:
    """Refuse any integer outside the 64-bit signed range, anywhere in the document.

    Raises:
        ServiceConfigError: DIA-7206, naming the key.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif type(value) is int and not INT_MIN <= value <= INT_MAX:
            table, _, key = where.rpartition(".")
            raise _error(
                source,
                f"[{table}].{key}" if table else f"[{key}]",
                f"an integer of {value.bit_length()} bits; TOML integers are 64-bit signed "
                f"({INT_MIN} .. {INT_MAX})",
                D.SERVICE_CONFIG_RANGE,
            )


def fits_dtype(value: float, dtype: torch.dtype) -> bool:
    """Whether ``dtype`` holds ``value`` (finite; whole and in range for integer dtypes)."""
    if not math.isfinite(value):
        return False
    if dtype == torch.bool:
        return value in (0, 1)
    if dtype.is_floating_point:
        info = torch.finfo(dtype)
        return info.min <= value <= info.max
    iinfo = torch.iinfo(dtype)
    return float(value).is_integer() and iinfo.min <= value <= iinfo.max


def check_tensor_sizes(config: ServeConfig) -> None:
    """The warm-up input (``[model.input]``, size 1 for each -1) and the constant fallback
    must be sendable tensors that fit the workers' shared memory.

    Raises:
        ServiceConfigError: DIA-7206 too many dims or a dim too large, DIA-7208 larger than
            ``[workers].shm_mb``.
    """
    limit = config.workers.shm_mb * _MB
    spec = config.model.input
    tensors: list[tuple[str, list[int], list[int], str]] = []
    if spec is not None and spec.shape is not None:
        shape = [1 if d < 0 else d for d in spec.shape]
        tensors.append(("[model.input].shape", list(spec.shape), shape, spec.dtype or "float32"))
    s = config.supervisor
    if s.constant_shape is not None and "constant" in s.fallback:
        shape = list(s.constant_shape)
        tensors.append(("[supervisor].constant_shape", shape, shape, s.constant_dtype))
    for where, declared, shape, dtype in tensors:
        if len(shape) > MAX_NDIM or any(d > MAX_DIM for d in shape):
            raise _error(
                config.source,
                where,
                f"{_fmt(declared)}: at most {MAX_NDIM} dims of at most {MAX_DIM} each (the "
                "socket protocol's limits)",
                D.SERVICE_CONFIG_RANGE,
            )
        nbytes = math.prod(shape) * getattr(torch, dtype).itemsize
        if nbytes > limit:
            raise _error(
                config.source,
                where,
                f"{_fmt(declared)} of {dtype} is {nbytes} bytes, more than the workers' shared "
                f"memory ([workers].shm_mb = {config.workers.shm_mb} MiB) through which every "
                "input and output passes; raise shm_mb or declare a smaller shape",
                D.SERVICE_CONFIG_INCONSISTENT,
            )


def _fmt(dims: list[int]) -> str:
    return str(dims) if len(dims) <= MAX_NDIM + 1 else f"[{', '.join(map(str, dims[:9]))}, …]"
