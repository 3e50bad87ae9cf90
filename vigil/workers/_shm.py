"""Tensors through shared memory: one file per worker, mapped by both processes.

The first 64 bytes are the worker's header (heartbeat, call seq, start, deadline, end, busy;
CLOCK_MONOTONIC ns); then the tensors of the current call, 64-byte aligned, written by one
side and read by the other. The pipe carries only their layout (:class:`_Spec`), a message of
about 100 bytes per call.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

_HEADER = struct.Struct("<QQQQQIxxxxQ")  # heartbeat, seq, start, deadline, end, busy, cpu
_HEADER_SIZE = 64
_HEARTBEAT, _SEQ, _START, _DEADLINE, _END, _BUSY, _CPU = 0, 8, 16, 24, 32, 40, 48
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_ALIGN = 64
_DTYPES = {
    str(d): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}
_NUMPY = {
    "torch.float64": np.float64,
    "torch.float32": np.float32,
    "torch.float16": np.float16,
    "torch.int64": np.int64,
    "torch.int32": np.int32,
    "torch.int16": np.int16,
    "torch.int8": np.int8,
    "torch.uint8": np.uint8,
    "torch.bool": np.bool_,
}
_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


# --- tensors through shared memory -----------------------------------------------------------


class _Spec(NamedTuple):
    """One tensor in an area: where its bytes are and what they are."""

    name: str | int | None
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def _flatten(value: Any) -> tuple[str, list[tuple[str | int | None, torch.Tensor]]]:
    """A tensor, a dict of tensors or a tuple/list of tensors, as (kind, named tensors)."""
    if isinstance(value, torch.Tensor):
        return "tensor", [(None, value)]
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    ):
        return "dict", list(value.items())
    if isinstance(value, tuple | list) and all(isinstance(v, torch.Tensor) for v in value):
        return "tuple", list(enumerate(value))
    raise TypeError(
        f"a worker exchanges a tensor, a dict of tensors or a tuple of tensors, "
        f"not {type(value).__name__}"
    )


def _unflatten(kind: str, items: list[tuple[str | int | None, torch.Tensor]]) -> Any:
    if kind == "tensor":
        return items[0][1]
    if kind == "dict":
        return dict(items)
    return tuple(v for _, v in items)


def _write(area: np.ndarray, value: Any, what: str) -> tuple[str, list[_Spec]]:
    """Copy ``value``'s tensors into ``area`` (a uint8 array over shared memory).

    The copies go through numpy views of the tensors: for the small tensors of a typical
    call, a numpy slice assignment costs a fraction of the torch ops it replaces (this path
    runs twice per call, and its cost is the process boundary's overhead).
    """
    kind, items = _flatten(value)
    specs, offset = [], 0
    for name, tensor in items:
        dtype = str(tensor.dtype)
        if dtype not in _DTYPES:
            raise TypeError(f"{what} tensor {name!r} has dtype {dtype}, not supported")
        t = tensor if tensor.device.type == "cpu" else tensor.cpu()
        nbytes = t.numel() * t.element_size()
        if offset + nbytes > area.size:
            raise OverflowError(
                f"{what} needs more than the worker's {area.size} bytes of shared memory "
                "(raise shm_bytes)"
            )
        if nbytes:
            src = t.detach()
            if src.dtype is torch.bfloat16:  # numpy has no bfloat16: move its bits
                src = src.contiguous().view(torch.int16)
            area[offset : offset + nbytes] = src.numpy().reshape(-1).view(np.uint8)
        specs.append(_Spec(name, dtype, tuple(t.shape), offset, nbytes))
        offset += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
    return kind, specs


def _read(area: np.ndarray, kind: str, specs: list[_Spec], *, copy: bool) -> Any:
    """Tensors from ``area``: views (in the worker: the model reads them) or copies (in the
    supervisor: the caller keeps them while the area is reused)."""
    items = []
    for s in specs:
        raw = area[s.offset : s.offset + s.nbytes]
        if s.dtype == "torch.bfloat16":
            t = torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16).reshape(s.shape)
        else:
            t = torch.from_numpy(raw.view(_NUMPY[s.dtype]).reshape(s.shape))
        items.append((s.name, t.clone() if copy else t))
    return _unflatten(kind, items)


class _SharedArea:
    """One worker's shared-memory file, mapped; the file is unlinked once both have it."""

    def __init__(self, path: str, size: int, *, create: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.path, self.size = path, size
        whole = np.frombuffer(self.mm, dtype=np.uint8)
        cap = (size - _HEADER_SIZE) // 2 // _ALIGN * _ALIGN
        self.inputs = whole[_HEADER_SIZE : _HEADER_SIZE + cap]
        self.outputs = whole[_HEADER_SIZE + cap : _HEADER_SIZE + 2 * cap]
        del whole

    def get(self, offset: int) -> int:
        return int(_U64.unpack_from(self.mm, offset)[0])

    def put(self, offset: int, value: int) -> None:
        _U64.pack_into(self.mm, offset, value)

    def busy(self) -> bool:
        return bool(_U32.unpack_from(self.mm, _BUSY)[0])

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        """Drop the views and unmap; a second call does nothing."""
        if self.mm.closed:
            return
        self.__dict__.pop("inputs", None)
        self.__dict__.pop("outputs", None)
        with contextlib.suppress(BufferError):  # a caller still holds a view: the GC unmaps
            self.mm.close()
