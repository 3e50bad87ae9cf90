"""The reference decoder's configuration: one frozen, validated record.

A :class:`DecoderConfig` is checked completely when it is built, so that a model, a KV cache or
a signed manifest never holds an inconsistent one: every field has a type and a range, and the
fields that constrain each other (heads and kv heads, hidden size and heads, top-k and experts,
the MoE layer list and the number of layers, the cache capacity and the positions) are checked
together. A violation raises :class:`~vigil.errors.ConfigError` carrying DIA-5001 with the
``field``, the ``value`` and the ``allowed`` range; a serialised config with unknown or missing
keys carries DIA-5002. ``to_dict()`` gives plain JSON types and ``from_dict(to_dict())`` gives
an equal config back, so the config can go into a signed model manifest as it is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from vigil import _diagnostics as D
from vigil.errors import ConfigError

__all__ = ["DTYPES", "PRESETS", "DecoderConfig"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""The parameter dtypes a decoder may be built in, by their names in a config."""

_INT_LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 24),
    "hidden_size": (2, 1 << 16),
    "num_layers": (1, 512),
    "num_heads": (1, 1024),
    "num_kv_heads": (1, 1024),
    "intermediate_size": (1, 1 << 20),
    "max_positions": (1, 1 << 20),
    "kv_cache_capacity": (1, 1 << 20),
    "moe_experts": (0, 1024),
    "moe_top_k": (1, 1024),
}
"""Inclusive ranges of the integer fields, before the cross-field rules."""


def _invalid(name: str, value: object, allowed: str, todo: str) -> ConfigError:
    return ConfigError(
        f"DecoderConfig.{name}={value!r}: {allowed}; {todo}",
        diagnostic=D.MODEL_CONFIG_INVALID,
        field=name,
        value=value,
        allowed=allowed,
    )


def _schema(message: str, **context: Any) -> ConfigError:
    return ConfigError(message, diagnostic=D.MODEL_CONFIG_SCHEMA, **context)


@dataclass(frozen=True)
class DecoderConfig:
    """The shape and numerics of a LLaMA-style decoder, optionally with MoE layers.

    Attributes:
        vocab_size: number of token ids; valid ids are ``[0, vocab_size)``.
        hidden_size: width of the residual stream; a multiple of ``num_heads``.
        num_layers: number of decoder layers.
        num_heads: query heads; ``hidden_size // num_heads`` (the head dim) must be even for
            the rotary embedding.
        num_kv_heads: key/value heads (grouped-query attention); divides ``num_heads``.
        intermediate_size: width of the SwiGLU MLP (and of each expert and the shared expert).
        max_positions: positions are ``[0, max_positions)``.
        rope_theta: base of the rotary embedding's frequencies, finite and > 0.
        rms_eps: epsilon of every RMSNorm, in ``(0, 1)``.
        kv_cache_capacity: tokens a :class:`~vigil.model.KVCache` holds, in
            ``[1, max_positions]``; preallocated, never grown. 0 (the default) stands for
            ``max_positions`` and is replaced by it on construction.
        moe_experts: routed experts per MoE layer; 0 means a dense model.
        moe_top_k: experts each token is routed to, ``1 <= moe_top_k <= moe_experts``.
        moe_shared_expert: add an always-on SwiGLU expert to every MoE layer.
        moe_layers: indices of the MoE layers, strictly within ``[0, num_layers)``; ``None``
            means every layer when ``moe_experts > 0``. An empty tuple with ``moe_experts > 0``
            is an error (ask for no MoE with ``moe_experts=0``). Stored sorted.
        dtype: parameter dtype name, one of :data:`DTYPES`.

    Raises:
        ConfigError: DIA-5001 naming the field, its value and the allowed range.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_positions: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    kv_cache_capacity: int = 0
    moe_experts: int = 0
    moe_top_k: int = 2
    moe_shared_expert: bool = True
    moe_layers: tuple[int, ...] | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self._check_types()
        if self.kv_cache_capacity == 0:  # the default: the cache spans every position
            object.__setattr__(self, "kv_cache_capacity", self.max_positions)
        for name, (lo, hi) in _INT_LIMITS.items():
            value = getattr(self, name)
            if name == "moe_top_k" and self.moe_experts == 0:
                continue  # unused by a dense model
            if not lo <= value <= hi:
                raise _invalid(name, value, f"must be in [{lo}, {hi}]", "choose a value in range")
        self._check_attention()
        self._check_floats()
        self._check_moe()
        if self.dtype not in DTYPES:
            raise _invalid("dtype", self.dtype, f"must be one of {sorted(DTYPES)}", "pick one")

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _INT_LIMITS and (type(value) is not int):
                raise _invalid(f.name, value, "must be an int", "pass a whole number")
        for name in ("rope_theta", "rms_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _invalid(name, value, "must be a float", "pass a number")
            object.__setattr__(self, name, float(value))
        if type(self.moe_shared_expert) is not bool:
            raise _invalid(
                "moe_shared_expert", self.moe_shared_expert, "must be a bool", "pass True or False"
            )
        if type(self.dtype) is not str:
            raise _invalid("dtype", self.dtype, "must be a str", f"one of {sorted(DTYPES)}")
        layers = self.moe_layers
        if isinstance(layers, list):
            layers = tuple(layers)
        if layers is not None and (
            not isinstance(layers, tuple) or any(type(i) is not int for i in layers)
        ):
            raise _invalid(
                "moe_layers", self.moe_layers, "must be a tuple of ints or None", "fix the list"
            )
        object.__setattr__(self, "moe_layers", layers)

    def _check_attention(self) -> None:
        if self.num_kv_heads > self.num_heads or self.num_heads % self.num_kv_heads:
            raise _invalid(
                "num_kv_heads",
                self.num_kv_heads,
                f"must divide num_heads={self.num_heads} (grouped-query attention)",
                "choose a divisor of num_heads",
            )
        if self.hidden_size % self.num_heads:
            raise _invalid(
                "hidden_size",
                self.hidden_size,
                f"must be a multiple of num_heads={self.num_heads}",
                "change hidden_size or num_heads; nothing is truncated",
            )
        if self.head_dim % 2:
            raise _invalid(
                "hidden_size",
                self.hidden_size,
                f"hidden_size // num_heads = {self.head_dim} must be even (rotary embedding)",
                "choose sizes that give an even head dim",
            )
        if self.kv_cache_capacity > self.max_positions:
            raise _invalid(
                "kv_cache_capacity",
                self.kv_cache_capacity,
                f"must be in [1, max_positions={self.max_positions}]",
                "a cache longer than the positions can never be filled",
            )

    def _check_floats(self) -> None:
        if not (math.isfinite(self.rope_theta) and self.rope_theta > 0):
            raise _invalid("rope_theta", self.rope_theta, "must be finite and > 0", "e.g. 1e4")
        if not (math.isfinite(self.rms_eps) and 0 < self.rms_eps < 1):
            raise _invalid("rms_eps", self.rms_eps, "must be in (0, 1)", "e.g. 1e-6")

    def _check_moe(self) -> None:
        layers = self.moe_layers
        if self.moe_experts == 0:
            if layers is not None:
                raise _invalid(
                    "moe_layers",
                    layers,
                    "must be None when moe_experts=0 (a dense model)",
                    "set moe_experts > 0 or drop moe_layers",
                )
            return
        if self.moe_top_k > self.moe_experts:
            raise _invalid(
                "moe_top_k",
                self.moe_top_k,
                f"must be in [1, moe_experts={self.moe_experts}]",
                "route to at most as many experts as exist",
            )
        if layers is None:
            return
        if not layers:
            raise _invalid(
                "moe_layers",
                layers,
                "must not be empty when moe_experts > 0",
                "list the MoE layers, use None for all, or set moe_experts=0",
            )
        bad = [i for i in layers if not 0 <= i < self.num_layers]
        if bad:
            raise _invalid(
                "moe_layers",
                layers,
                f"indices {bad} outside [0, num_layers={self.num_layers})",
                "list existing layers only",
            )
        if len(set(layers)) != len(layers):
            raise _invalid("moe_layers", layers, "must not repeat a layer", "list each once")
        object.__setattr__(self, "moe_layers", tuple(sorted(layers)))

    # --- derived values -------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def torch_dtype(self) -> torch.dtype:
        """The parameter dtype as a ``torch.dtype``."""
        return DTYPES[self.dtype]

    def is_moe_layer(self, index: int) -> bool:
        """Whether layer ``index`` routes its MLP through experts."""
        if self.moe_experts == 0:
            return False
        return self.moe_layers is None or index in self.moe_layers

    # --- presets ----------------------------------------------------------------------------

    @classmethod
    def tiny(cls, **overrides: Any) -> DecoderConfig:
        """A small float32 decoder that runs on a CPU in about a millisecond per call."""
        fields: dict[str, Any] = {
            "vocab_size": 256,
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "intermediate_size": 128,
            "max_positions": 128,
            "kv_cache_capacity": 64,
        }
        return cls(**(fields | overrides))

    @classmethod
    def gpu(cls, **overrides: Any) -> DecoderConfig:
        """A ~156 M parameter bfloat16 decoder for a GPU (hidden 1024, 8 layers, GQA 16/4)."""
        fields: dict[str, Any] = {
            "vocab_size": 32000,
            "hidden_size": 1024,
            "num_layers": 8,
            "num_heads": 16,
            "num_kv_heads": 4,
            "intermediate_size": 2816,
            "max_positions": 4096,
            "kv_cache_capacity": 2048,
            "dtype": "bfloat16",
        }
        return cls(**(fields | overrides))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DecoderConfig:
        """The preset called ``name`` (one of :data:`PRESETS`: ``tiny``, ``gpu``).

        Raises:
            ConfigError: an unknown name (DIA-5001).
        """
        if name not in PRESETS:
            raise _invalid("preset", name, f"must be one of {', '.join(PRESETS)}", "pick one")
        build: Any = getattr(cls, name)
        config: DecoderConfig = build(**overrides)
        return config

    # --- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain JSON value (``moe_layers`` as a list or ``None``)."""
        out = dataclasses.asdict(self)
        if self.moe_layers is not None:
            out["moe_layers"] = list(self.moe_layers)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> DecoderConfig:
        """Rebuild a config from :meth:`to_dict`'s output, validating it like the constructor.

        Raises:
            ConfigError: DIA-5002 when ``data`` is not a mapping or its keys are not exactly
                the fields (``unknown`` and ``missing`` list them); DIA-5001 for a bad value.
        """
        if not isinstance(data, dict):
            raise _schema(
                f"DecoderConfig.from_dict: expected a dict, got {type(data).__name__}",
                unknown=[],
                missing=[],
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in data if k not in names)
        missing = [n for n in names if n not in data]
        if unknown or missing:
            raise _schema(
                f"DecoderConfig.from_dict: unknown keys {unknown}, missing keys {missing}; "
                "serialise configs with DecoderConfig.to_dict()",
                unknown=unknown,
                missing=missing,
            )
        return cls(**data)


PRESETS: tuple[str, ...] = ("tiny", "gpu")
"""The names :meth:`DecoderConfig.preset` knows: ``tiny`` (the CPU demo's), ``gpu``."""
