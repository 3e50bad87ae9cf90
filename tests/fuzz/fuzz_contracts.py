"""Fuzz tensor contracts: TensorSpec and Contract built from config-like dicts, checked
against arbitrary tensors, with an independent oracle for what a check lets through.

Input: a JSON object, a newline, then the bytes the tensors are made of. The object's keys:
``spec`` (TensorSpec keywords; a string dtype names a torch dtype, any other value is passed
as it is), ``tensor`` (``dtype``, ``shape``; ``meta``, ``transpose``, ``grad``), optionally
``named`` (a second spec and tensor: the contract is then a mapping ``{"a": ..., "b": ...}``
and named dims bind across both). A check that passes must hold against the oracle; a check
that fails must raise InvalidInput naming an element that really breaks the rule.

    python tests/fuzz/fuzz_contracts.py -max_total_time=600 tests/fuzz/corpus/contracts
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from _fuzzing import instrumenting, main

with instrumenting(__name__):
    from vigil.errors import InvalidInput, VigilError
    from vigil.schemas import Contract, TensorSpec

_MAX_ELEMENTS = 1 << 16
_SPEC_KEYS = ("shape", "dtype", "device", "min", "max", "finite")


_TENSOR_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn,
        torch.float8_e5m2, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint64,
        torch.uint32, torch.uint16, torch.uint8, torch.bool, torch.complex64, torch.complex128,
    )
}  # fmt: skip
"""Dtypes a tensor of the harness may have (torch.frombuffer of a quantized dtype crashes the
process; that is torch's, not a contract's, and no caller can send one)."""


def _dtype(value: Any) -> Any:
    if isinstance(value, str) and isinstance(getattr(torch, value, None), torch.dtype):
        return getattr(torch, value)
    return value


def _spec(raw: Any) -> TensorSpec:
    if not isinstance(raw, dict):
        raw = {}
    kwargs = {k: raw[k] for k in _SPEC_KEYS if k in raw}
    if "dtype" in kwargs:
        kwargs["dtype"] = _dtype(kwargs["dtype"])
    return TensorSpec(**kwargs)


def _tensor(raw: Any, pool: bytes) -> tuple[torch.Tensor, bytes]:
    """A tensor of the requested dtype and shape from the front of ``pool`` (zeros where the
    pool runs out), and what is left of the pool."""
    raw = raw if isinstance(raw, dict) else {}
    dtype = _TENSOR_DTYPES.get(str(raw.get("dtype")), torch.float32)
    shape = raw.get("shape", [len(pool) // max(1, dtype.itemsize)])
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 1 << 31 for d in shape):
        shape = [1]
    shape = shape[:6]
    numel = math.prod(shape)
    if numel > _MAX_ELEMENTS:
        shape, numel = [1], 1
    nbytes = numel * dtype.itemsize
    chunk, pool = pool[:nbytes], pool[nbytes:]
    buf = bytearray(chunk) + bytes(nbytes - len(chunk))
    if raw.get("meta"):
        t = torch.empty(shape, dtype=dtype, device="meta")
    elif dtype == torch.bool:
        t = (
            (torch.frombuffer(buf, dtype=torch.uint8) & 1).bool().reshape(shape)
            if numel
            else (torch.empty(shape, dtype=dtype))
        )
    else:
        t = (
            torch.frombuffer(buf, dtype=dtype).reshape(shape)
            if numel
            else (torch.empty(shape, dtype=dtype))
        )
    if raw.get("transpose") and t.dim() >= 2:
        t = t.transpose(0, 1)
    if raw.get("grad") and (t.is_floating_point() or t.is_complex()) and not t.is_meta:
        t = t.clone().requires_grad_(True)
    return t, pool


def _exact(t: torch.Tensor) -> list[Any]:
    """Every value of ``t`` as a Python number (floats exactly, in float64)."""
    t = t.detach()
    if t.is_floating_point():
        return t.double().flatten().tolist()  # type: ignore[no-any-return]
    return t.flatten().tolist()  # type: ignore[no-any-return]


def _oracle(spec: TensorSpec, t: torch.Tensor) -> str | None:
    """Why ``t`` breaks ``spec``'s value rules, or None. Shape, dtype and device are left to
    the code under test (the oracle only checks values)."""
    if t.is_meta or t.numel() == 0 or t.is_complex():
        return None
    values = _exact(t)
    if spec.finite and t.is_floating_point() and not all(math.isfinite(v) for v in values):
        return "a non-finite value passed"
    finite = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if spec.min is not None and any(v < spec.min for v in finite):
        return f"a value below min {spec.min} passed"
    if spec.max is not None and any(v > spec.max for v in finite):
        return f"a value above max {spec.max} passed"
    return None


def _check_blame(spec: TensorSpec, t: torch.Tensor, exc: InvalidInput) -> None:
    """The element an out-of-range or non-finite error names must break that rule."""
    index = exc.context.get("index")
    rule = exc.context.get("rule")
    if rule not in ("min", "max", "finite") or not isinstance(index, tuple) or t.is_complex():
        return
    value = _exact(t[index].reshape(1))[0]
    if rule == "finite":
        assert not math.isfinite(value), f"blamed {index} = {value}, which is finite"
    elif rule == "min":
        assert spec.min is not None and value < spec.min, f"blamed {index} = {value} >= min"
    else:
        assert spec.max is not None and value > spec.max, f"blamed {index} = {value} <= max"


def one_input(data: bytes) -> None:
    head, _, pool = data.partition(b"\n")
    try:
        doc = json.loads(head)
    except (ValueError, RecursionError):
        return
    if not isinstance(doc, dict):
        return
    try:
        spec = _spec(doc.get("spec"))
        named = doc.get("named")
        other = _spec(named.get("spec")) if isinstance(named, dict) else None
        contract = Contract(spec if other is None else {"a": spec, "b": other}, name="fuzz")
        contract.to_json()
        contract.digest()
    except VigilError:
        return
    t, pool = _tensor(doc.get("tensor"), pool)
    value: Any = t
    if other is not None:
        u, pool = _tensor(named.get("tensor") if isinstance(named, dict) else None, pool)
        value = {"a": t, "b": u}
    try:
        contract.check(value)
    except InvalidInput as exc:
        if other is None:
            _check_blame(spec, t, exc)
        return
    except VigilError:
        return
    for s, x in ((spec, t),) if other is None else ((spec, t), (other, value["b"])):
        why = _oracle(s, x)
        assert why is None, f"{why}: {s} let {x.dtype} {list(x.shape)} through"


if __name__ == "__main__":
    main(one_input)
