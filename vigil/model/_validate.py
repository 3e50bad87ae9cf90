"""The decoder's boundary: every check on a call's inputs, done once, before any work.

Theory of operation. :func:`plan_call` checks ``input_ids``, ``positions``,
``attention_mask`` and the KV cache of one forward call and returns a :class:`CallPlan`: the
positions to use, the boolean attention mask to use (or ``None`` with a flag for the causal
fast path) and the cache offset. The layers trust the plan and check nothing: no
``.item()``, no finiteness test and no Python branch on a tensor's values runs inside them,
so a call costs no host synchronisation beyond the one here.

Order: the host-side metadata of each tensor (type, dtype, shape, device), then the cache
(geometry, batch, capacity), then the values. The values need the minimum and maximum of the
token ids and of the positions; the four 0-d results reach the host together in **one**
transfer. Every failure raises :class:`~vigil.errors.InputRefused` (an ``InvalidInput``, which
a supervisor records as REJECTED and does not hold against the model) with a DIA-50xx code
and the ``field``, ``rule``, ``expected`` and ``actual`` values; nothing has been written to
the cache when it is raised.

Mask semantics: ``attention_mask`` is a padding mask over keys, ``(batch, cached + new)``,
true or nonzero where the token may be attended to, as in Hugging Face ``transformers``. It is
combined with the causal rule (a query attends to keys at its own slot or before). A query
always attends to its own slot, even a padding one, so that no row of the attention is fully
masked: a fully masked row would give NaN, and NaN in a padding slot's values would leak into
every real token through ``0 * NaN``. The outputs at padding positions are meaningless but
finite; callers ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vigil import _diagnostics as D
from vigil.errors import InputRefused
from vigil.model._cache import KVCache
from vigil.model._config import DecoderConfig

__all__ = ["CallPlan", "plan_call"]

_INDEX_DTYPES = (torch.int64, torch.int32)


@dataclass(frozen=True)
class CallPlan:
    """What the layers need to know about one validated call.

    Attributes:
        start: filled cache slots before the call (0 without a cache).
        positions: ``(batch, tokens)`` int64 positions for the rotary embedding.
        mask: ``(batch or 1, 1, tokens, start + tokens)`` bool, True = attend; ``None`` when
            no mask is needed.
        causal: with ``mask=None``, apply the causal rule with SDPA's ``is_causal``.
    """

    start: int
    positions: torch.Tensor
    mask: torch.Tensor | None
    causal: bool


def _fail(
    diagnostic: D.Diagnostic,
    field: str,
    rule: str,
    message: str,
    *,
    expected: object = None,
    actual: object = None,
) -> InputRefused:
    return InputRefused(
        f"{field}: {message}",
        diagnostic=diagnostic,
        field=field,
        rule=rule,
        expected=expected,
        actual=actual,
    )


def _dtype_name(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return str(value.dtype).removeprefix("torch.")
    return type(value).__name__


def _check_device(name: str, tensor: torch.Tensor, device: torch.device) -> None:
    if tensor.device != device:
        raise _fail(
            D.INPUT_DEVICE,
            name,
            "device",
            f"is on {tensor.device}, the model on {device}; move it with .to({str(device)!r})",
            expected=str(device),
            actual=str(tensor.device),
        )


def _check_ids(input_ids: object, device: torch.device) -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in _INDEX_DTYPES:
        raise _fail(
            D.TOKEN_IDS_DTYPE,
            "input_ids",
            "dtype",
            f"must be an int64 or int32 tensor, got {_dtype_name(input_ids)}",
            expected="int64",
            actual=_dtype_name(input_ids),
        )
    shape = tuple(input_ids.shape)
    if input_ids.ndim != 2 or 0 in shape:
        raise _fail(
            D.TOKEN_IDS_SHAPE,
            "input_ids",
            "shape",
            f"must be a non-empty (batch, sequence) tensor, got shape {shape}",
            expected="(batch >= 1, sequence >= 1)",
            actual=shape,
        )
    _check_device("input_ids", input_ids, device)
    return input_ids


def _check_positions(positions: object, shape: tuple[int, ...], device: torch.device) -> None:
    if not isinstance(positions, torch.Tensor) or positions.dtype not in _INDEX_DTYPES:
        raise _fail(
            D.POSITIONS_SHAPE,
            "positions",
            "dtype",
            f"must be an int64 or int32 tensor, got {_dtype_name(positions)}",
            expected="int64",
            actual=_dtype_name(positions),
        )
    if tuple(positions.shape) != shape:
        raise _fail(
            D.POSITIONS_SHAPE,
            "positions",
            "shape",
            f"must have the shape of input_ids {shape}, got {tuple(positions.shape)}",
            expected=shape,
            actual=tuple(positions.shape),
        )
    _check_device("positions", positions, device)


def _check_mask(mask: object, expected: tuple[int, int], device: torch.device) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.is_floating_point() or mask.is_complex():
        raise _fail(
            D.MASK_DTYPE,
            "attention_mask",
            "dtype",
            f"must be a bool or integer tensor (1/True = attend), got {_dtype_name(mask)}",
            expected="bool",
            actual=_dtype_name(mask),
        )
    if tuple(mask.shape) != expected:
        raise _fail(
            D.MASK_SHAPE,
            "attention_mask",
            "shape",
            f"must be (batch, cached + new tokens) = {expected}, got {tuple(mask.shape)}",
            expected=expected,
            actual=tuple(mask.shape),
        )
    _check_device("attention_mask", mask, device)
    return mask


def _check_cache(
    cache: object,
    config: DecoderConfig,
    *,
    batch: int,
    tokens: int,
    device: torch.device,
    dtype: torch.dtype,
) -> int:
    if not isinstance(cache, KVCache):
        raise _fail(
            D.KV_CACHE_INCOMPATIBLE,
            "cache",
            "type",
            f"must be a KVCache from Decoder.new_cache(), got {type(cache).__name__}",
        )
    keys = cache.keys
    geometry = (config.num_layers, config.num_kv_heads, config.head_dim)
    found = (keys.shape[0], keys.shape[2], keys.shape[4])
    if found != geometry or keys.dtype != dtype or keys.device != device:
        raise _fail(
            D.KV_CACHE_INCOMPATIBLE,
            "cache",
            "geometry",
            f"holds (layers, kv heads, head dim) {found} {keys.dtype} on {keys.device}; "
            f"this model needs {geometry} {dtype} on {device}",
            expected=(geometry, str(dtype), str(device)),
            actual=(found, str(keys.dtype), str(keys.device)),
        )
    if cache.batch_size != batch:
        raise _fail(
            D.KV_CACHE_BATCH,
            "cache",
            "batch",
            f"was built for batch size {cache.batch_size}, input_ids has {batch} rows",
            expected=cache.batch_size,
            actual=batch,
        )
    if tokens > cache.remaining:
        raise _fail(
            D.KV_CACHE_OVERFLOW,
            "cache",
            "capacity",
            f"holds {cache.length} of {cache.capacity} tokens; {tokens} more do not fit "
            "(nothing was written)",
            expected=cache.remaining,
            actual=tokens,
        )
    return cache.length


def _check_range(
    diagnostic: D.Diagnostic, field: str, extremes: list[int], *, limit: int, what: str
) -> None:
    lo, hi = extremes
    if lo < 0 or hi >= limit:
        raise _fail(
            diagnostic,
            field,
            "range",
            f"values span [{lo}, {hi}]; {what} allows [0, {limit - 1}]",
            expected=(0, limit - 1),
            actual=(lo, hi),
        )


def plan_call(
    config: DecoderConfig,
    input_ids: object,
    *,
    positions: object,
    attention_mask: object,
    cache: object,
    device: torch.device,
    dtype: torch.dtype,
) -> CallPlan:
    """Validate one forward call and derive what the layers need.

    Args:
        config: the model's config.
        input_ids: ``(batch, tokens)`` int64/int32 token ids.
        positions: ``None`` (the slots ``start .. start + tokens - 1``), or int64/int32 of
            the shape of ``input_ids``.
        attention_mask: ``None`` or a ``(batch, start + tokens)`` bool/integer padding mask.
        cache: ``None`` or a :class:`KVCache` built for this model.
        device: the model's device.
        dtype: the model's parameter dtype (the cache must hold it).

    Returns:
        The :class:`CallPlan` of the call.

    Raises:
        InputRefused: DIA-5010..5022 (see ``docs/DIAGNOSTICS.md``); nothing was written.
    """
    ids = _check_ids(input_ids, device)
    batch, tokens = ids.shape
    if positions is not None:
        _check_positions(positions, (batch, tokens), device)
    start = 0
    if cache is not None:
        start = _check_cache(cache, config, batch=batch, tokens=tokens, device=device, dtype=dtype)
    mask = None
    if attention_mask is not None:
        mask = _check_mask(attention_mask, (batch, start + tokens), device)

    probes = [*torch.aminmax(ids)]
    if isinstance(positions, torch.Tensor):
        probes.extend(torch.aminmax(positions))
    values = torch.stack([p.to(torch.int64) for p in probes]).tolist()  # the one host sync
    _check_range(
        D.TOKEN_ID_OUT_OF_RANGE, "input_ids", values[:2], limit=config.vocab_size, what="vocab"
    )
    if isinstance(positions, torch.Tensor):
        _check_range(
            D.POSITION_OUT_OF_RANGE,
            "positions",
            values[2:],
            limit=config.max_positions,
            what="max_positions",
        )
        pos = positions.to(torch.int64)
    else:  # with a cache, start + tokens <= capacity <= max_positions by construction
        if start + tokens > config.max_positions:  # without one, a long input can pass it
            raise _fail(
                D.POSITION_OUT_OF_RANGE,
                "input_ids",
                "positions",
                f"{tokens} tokens take the positions [0, {tokens - 1}]; max_positions allows "
                f"[0, {config.max_positions - 1}]: send at most {config.max_positions} tokens",
                expected=(0, config.max_positions - 1),
                actual=(start, start + tokens - 1),
            )
        pos = torch.arange(start, start + tokens, device=device).expand(batch, tokens)
    return _attention_plan(start, tokens, pos, mask)


def _attention_plan(
    start: int, tokens: int, positions: torch.Tensor, mask: torch.Tensor | None
) -> CallPlan:
    device = positions.device
    if mask is None and start == 0:
        return CallPlan(start, positions, None, tokens > 1)
    if mask is None and tokens == 1:  # one new token attends to everything cached
        return CallPlan(start, positions, None, False)
    slots = torch.arange(start + tokens, device=device)
    query_slots = slots[start:, None]
    allowed = slots[None, :] <= query_slots  # (tokens, start + tokens): the causal rule
    if mask is not None:
        keep = mask if mask.dtype == torch.bool else mask != 0
        own_slot = slots[None, :] == query_slots
        allowed = allowed & (keep[:, None, :] | own_slot)  # (batch, tokens, start + tokens)
    return CallPlan(start, positions, allowed.reshape(-1, 1, tokens, start + tokens), False)
