"""Parity with Hugging Face ``transformers``: the same weights give the same logits.

Our decoder's weights are loaded into ``LlamaForCausalLM`` (dense) and ``MixtralForCausalLM``
(MoE on every layer, no shared expert: Mixtral has none), both with the eager attention
implementation, so the reference shares no attention kernel with us. Logits are compared in
float32 with the cache off (one forward) and on (prefill, then one token at a time with HF's
cache against our :class:`~vigil.model.KVCache`). transformers renamed the cache argument and
output field from ``past_key_values`` to ``cache`` (the old name warns, an error here):
:func:`_next` speaks whichever the installed version has, so a lock refresh needs no repair.

Routing: Mixtral takes a softmax over all experts, keeps the top-k probabilities and divides
them by their sum; we take the softmax over the top-k logits. The two are equal in exact
arithmetic and differ by rounding only.

To print the measured differences: ``PYTHONPATH=. python -c "import sys; sys.path.insert(0,
'tests'); import test_model_parity as t; print(t.llama_diffs('cpu'), t.mixtral_diffs('cpu'))"``.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from vigil.model import Decoder, DecoderConfig, hf_llama_config_kwargs, to_hf_llama_state_dict
from vigil.model._decoder import MoE

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
LLAMA = DecoderConfig.tiny(rope_theta=500.0, rms_eps=1e-5)
MIXTRAL = DecoderConfig.tiny(moe_experts=4, moe_top_k=2, moe_shared_expert=False)
PREFILL, TOKENS = 5, 12


def _hf_llama(model: Decoder) -> Any:
    config = transformers.LlamaConfig(**hf_llama_config_kwargs(model), attn_implementation="eager")
    assert config.rope_parameters["rope_theta"] == model.config.rope_theta
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.load_state_dict(to_hf_llama_state_dict(model), strict=True)
    return hf.to(model.device)


def _hf_mixtral(model: Decoder) -> Any:
    c = model.config
    config = transformers.MixtralConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        max_position_embeddings=c.max_positions,
        rms_norm_eps=c.rms_eps,
        rope_theta=c.rope_theta,
        num_local_experts=c.moe_experts,
        num_experts_per_tok=c.moe_top_k,
        router_jitter_noise=0.0,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    assert config.rope_parameters["rope_theta"] == c.rope_theta
    hf = transformers.MixtralForCausalLM(config).eval()
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = name if name.startswith("lm_head.") else f"model.{name}"
        if ".mlp.router." in key:
            state[key.replace(".mlp.router.", ".mlp.gate.")] = tensor
        elif key.endswith(".mlp.w_gate"):
            up = model.state_dict()[name.replace("w_gate", "w_up")]
            state[key.replace(".mlp.w_gate", ".mlp.experts.gate_up_proj")] = torch.cat(
                [tensor, up], dim=1
            )
        elif key.endswith(".mlp.w_down"):
            state[key.replace(".mlp.w_down", ".mlp.experts.down_proj")] = tensor
        elif not key.endswith(".mlp.w_up"):
            state[key] = tensor
    hf.load_state_dict(state, strict=True)
    return hf.to(model.device)


def _cache_name(hf: Any) -> str:
    """The cache argument and output field of this transformers: ``cache`` (5.x), else the old."""
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def _next(hf: Any, ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
    """One cached forward: the logits and the cache to pass to the next step."""
    name = _cache_name(hf)
    out = hf(input_ids=ids, use_cache=True, **({name: cache} if cache is not None else {}))
    return out.logits, getattr(out, name)


def _ids(device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, TOKENS), generator=gen).to(device)


def _diffs(model: Decoder, hf: Any, ids: torch.Tensor) -> tuple[float, float]:
    """Max abs logit difference with the cache off, and with step-by-step cached decoding."""
    with torch.inference_mode():
        off = (model(ids) - hf(input_ids=ids).logits).abs().max().item()
        cache = model.new_cache(ids.shape[0])
        ours = [model(ids[:, :PREFILL], cache=cache)]
        logits, hf_cache = _next(hf, ids[:, :PREFILL], None)
        theirs = [logits]
        for t in range(PREFILL, TOKENS):
            ours.append(model(ids[:, t : t + 1], cache=cache))
            logits, hf_cache = _next(hf, ids[:, t : t + 1], hf_cache)
            theirs.append(logits)
        on = (torch.cat(ours, 1) - torch.cat(theirs, 1)).abs().max().item()
    return off, on


def llama_diffs(device: str) -> tuple[float, float]:
    """(cache off, cache on) max abs logit differences against ``LlamaForCausalLM``."""
    model = Decoder(LLAMA, seed=3).to(device)
    return _diffs(model, _hf_llama(model), _ids(device))


def mixtral_diffs(device: str) -> tuple[float, float]:
    """(cache off, cache on) max abs logit differences against ``MixtralForCausalLM``."""
    model = Decoder(MIXTRAL, seed=4).to(device)
    assert all(isinstance(layer.mlp, MoE) for layer in model.layers)
    return _diffs(model, _hf_mixtral(model), _ids(device))


def test_llama_parity_cache_off_and_on() -> None:
    off, on = llama_diffs("cpu")
    assert off <= TOLERANCE and on <= TOLERANCE, (off, on)


def test_mixtral_parity_cache_off_and_on() -> None:
    off, on = mixtral_diffs("cpu")
    assert off <= TOLERANCE and on <= TOLERANCE, (off, on)


def test_llama_parity_with_left_padding() -> None:
    model = Decoder(LLAMA, seed=5)
    hf = _hf_llama(model)
    ids = _ids("cpu")
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.inference_mode():
        ours = model(ids, positions=positions, attention_mask=mask)
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()  # padding positions are meaningless in both
    assert (ours[real] - theirs[real]).abs().max().item() <= TOLERANCE


def test_parity_detects_a_changed_weight() -> None:
    """The comparison is not vacuous: one changed weight shows far above the tolerance."""
    model = Decoder(LLAMA, seed=3)
    hf = _hf_llama(model)
    with torch.no_grad():
        hf.model.layers[1].self_attn.k_proj.weight[0, 0] += 0.5
    assert _diffs(model, hf, _ids("cpu"))[0] > 10 * TOLERANCE
    moe = Decoder(MIXTRAL, seed=4)
    hf = _hf_mixtral(moe)
    with torch.no_grad():
        hf.model.layers[0].mlp.experts.down_proj[1] *= 2  # one expert of four
    assert min(_diffs(moe, hf, _ids("cpu"))) > 10 * TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("diffs", [llama_diffs, mixtral_diffs])
def test_parity_on_cuda(diffs: Any) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    off, on = diffs("cuda")
    assert off <= TOLERANCE and on <= TOLERANCE, (off, on)
