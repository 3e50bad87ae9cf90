"""Export to the Hugging Face ``transformers`` Llama layout (no import of ``transformers``).

The decoder's parameter names follow ``LlamaForCausalLM``'s, so a dense decoder maps onto it
by adding the ``model.`` prefix to everything but ``lm_head``. The parity tests use this to
load our weights into ``LlamaForCausalLM`` and compare logits.
"""

from __future__ import annotations

from typing import Any

import torch

from vigil import _diagnostics as D
from vigil.errors import ConfigError
from vigil.model._decoder import Decoder

__all__ = ["hf_llama_config_kwargs", "to_hf_llama_state_dict"]


def _require_dense(decoder: Decoder) -> None:
    if decoder.config.moe_experts:
        raise ConfigError(
            f"DecoderConfig.moe_experts={decoder.config.moe_experts}: the Llama layout has no "
            "experts; export a dense decoder (moe_experts=0)",
            diagnostic=D.MODEL_CONFIG_INVALID,
            field="moe_experts",
            value=decoder.config.moe_experts,
            allowed="0",
        )


def hf_llama_config_kwargs(decoder: Decoder) -> dict[str, Any]:
    """Keyword arguments for ``transformers.LlamaConfig`` describing the same model.

    Raises:
        ConfigError: DIA-5001, the decoder has MoE layers.
    """
    _require_dense(decoder)
    c = decoder.config
    return {
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.max_positions,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
    }


def to_hf_llama_state_dict(decoder: Decoder) -> dict[str, torch.Tensor]:
    """The decoder's parameters under ``LlamaForCausalLM``'s names (tensors shared, not
    copied).

    Raises:
        ConfigError: DIA-5001, the decoder has MoE layers.
    """
    _require_dense(decoder)
    return {
        name if name.startswith("lm_head.") else f"model.{name}": tensor
        for name, tensor in decoder.state_dict().items()
    }
