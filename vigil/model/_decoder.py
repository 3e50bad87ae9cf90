"""The validated reference decoder: a LLaMA-style transformer, optionally with MoE layers.

Theory of operation. ``Decoder.forward`` validates its inputs once, at the boundary
(:func:`~vigil.model._validate.plan_call`: one host synchronisation, every failure a DIA-50xx
error, nothing written to the cache before the checks pass), then runs the layers, which
check nothing and never synchronise with the host: no ``.item()``, no per-layer finiteness
test, no Python branch on a tensor's values. Whether the output is finite is checked once, on
the logits, by the caller (:func:`check_logits`, or the supervisor's output check).

Architecture (the names of the parameters follow Hugging Face's ``LlamaForCausalLM``, so that
:func:`~vigil.model.to_hf_llama_state_dict` is a renaming of the prefix only)::

    embed_tokens -> num_layers x [ x + attention(RMSNorm(x)); x + mlp(RMSNorm(x)) ]
                 -> RMSNorm -> lm_head

* RMSNorm computes in float32 and casts back, like the reference implementation.
* Attention: rotary position embedding (rotate-half form, frequencies computed from the
  positions in float32 on every call, never cached in a buffer that ``.to(dtype)`` could
  round), grouped-query attention (each key/value head serves ``num_heads // num_kv_heads``
  query heads) with ``torch.nn.functional.scaled_dot_product_attention``.
* MLP: SwiGLU, ``down(silu(gate(x)) * up(x))``, no biases.
* MoE layer: a router scores the experts; each token keeps its ``top_k`` best logits and
  weights them by a softmax over those ``top_k`` logits alone (equal to Mixtral's softmax over
  all experts renormalised over the top-k). Expert indices come from ``topk`` over exactly
  ``moe_experts`` router outputs, so an index outside ``[0, moe_experts)`` cannot arise.
  Dispatch is dense: every expert computes every token and the routing weights (zero for the
  unselected experts) combine them. That costs ``moe_experts`` times a dense MLP, and buys
  static shapes: a sparse dispatch gathers a data-dependent number of tokens per expert,
  which needs a host synchronisation in every MoE layer. An optional shared expert (a SwiGLU
  MLP) is added to the routed output.

There is no dropout: the decoder is an inference reference, and ``train()`` and ``eval()``
compute the same function.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vigil import _diagnostics as D
from vigil.errors import InvalidInput
from vigil.model._cache import KVCache
from vigil.model._config import DecoderConfig
from vigil.model._validate import CallPlan, plan_call

__all__ = ["Decoder", "DecoderFallback", "check_logits"]

_INIT_STD = 0.02


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned scale, computed in float32."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_tables(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of the rotary embedding, ``(batch, tokens, head_dim)``."""
    exponents = torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs = positions.float()[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Grouped-query self-attention with rotary positions and an optional KV cache."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        hd = config.head_dim
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = hd
        self.q_proj = nn.Linear(config.hidden_size, config.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(config.num_heads * hd, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        plan: CallPlan,
        kv: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q = self.q_proj(x).view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, tokens, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, tokens, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if kv is not None:  # write the new slots, then attend over everything filled
            keys, values = kv
            end = plan.start + tokens
            keys[:, :, plan.start : end] = k
            values[:, :, plan.start : end] = v
            k, v = keys[:, :, :end], values[:, :, :end]
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, is_causal=plan.causal)
        out = out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        result: torch.Tensor = self.o_proj(out)
        return result


class MLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


class MoE(nn.Module):
    """Top-k routed SwiGLU experts with dense dispatch, plus an optional shared expert.

    Expert weights are stacked: ``w_gate`` and ``w_up`` are ``(experts, intermediate,
    hidden)``, ``w_down`` is ``(experts, hidden, intermediate)``.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        e, h, i = config.moe_experts, config.hidden_size, config.intermediate_size
        self.top_k = config.moe_top_k
        self.router = nn.Linear(h, e, bias=False)
        self.w_gate = nn.Parameter(torch.zeros(e, i, h))
        self.w_up = nn.Parameter(torch.zeros(e, i, h))
        self.w_down = nn.Parameter(torch.zeros(e, h, i))
        self.shared = MLP(h, i) if config.moe_shared_expert else None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Routing of ``(tokens, hidden)`` rows: float32 weights and int64 expert indices,
        both ``(tokens, top_k)``; the weights of a row sum to 1 and every index lies in
        ``[0, experts)`` (``topk`` over exactly ``experts`` logits)."""
        logits = self.router(x).float()
        top, experts = torch.topk(logits, self.top_k, dim=-1)
        return torch.softmax(top, dim=-1), experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        flat = x.reshape(-1, hidden)
        weights, experts = self.route(flat)
        dense = torch.zeros(flat.shape[0], self.w_gate.shape[0], device=x.device)
        dense = dense.scatter(1, experts, weights).to(x.dtype)  # (tokens, experts)
        gate = torch.einsum("nh,eih->eni", flat, self.w_gate)
        up = torch.einsum("nh,eih->eni", flat, self.w_up)
        per_expert = torch.einsum("eni,ehi->enh", F.silu(gate) * up, self.w_down)
        out = torch.einsum("ne,enh->nh", dense, per_expert)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.reshape(batch, tokens, hidden)


class DecoderLayer(nn.Module):
    """Pre-norm residual block: attention, then the MLP or the MoE."""

    def __init__(self, config: DecoderConfig, index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_eps)
        self.mlp: nn.Module = (
            MoE(config)
            if config.is_moe_layer(index)
            else MLP(config.hidden_size, config.intermediate_size)
        )

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        plan: CallPlan,
        kv: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, plan, kv)
        out: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return out


class Decoder(nn.Module):
    """The reference decoder: ``(batch, tokens)`` token ids to ``(batch, tokens, vocab)``
    logits.

    The parameters are drawn on the CPU from ``seed`` (normal, std 0.02; norm scales 1) in
    float32 and then cast to ``config.dtype``, so one seed gives the same weights on every
    machine. The module is returned in eval mode with parameters that do not require grad
    (an inference reference: outputs carry no autograd graph); move it with ``.to(device)``.

    Args:
        config: a validated :class:`DecoderConfig`.
        seed: the seed of the initial weights.
    """

    def __init__(self, config: DecoderConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith("layernorm.weight") or name == "norm.weight":
                    param.fill_(1.0)
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) * _INIT_STD)
        self.requires_grad_(False)
        self.to(config.torch_dtype)
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return self.embed_tokens.weight.device

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """A cache of ``config.kv_cache_capacity`` tokens for this model, on its device and in
        its dtype, for inputs of ``batch_size`` rows."""
        weight = self.embed_tokens.weight
        return KVCache(self.config, batch_size, device=weight.device, dtype=weight.dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits for every input token.

        Args:
            input_ids: ``(batch, tokens)`` int64 or int32 ids in ``[0, vocab_size)``.
            positions: optional ``(batch, tokens)`` positions in ``[0, max_positions)``;
                by default the cache slots the tokens occupy (``0 .. tokens - 1`` without a
                cache). Give them explicitly for left-padded batches.
            attention_mask: optional ``(batch, cache.length + tokens)`` bool or 0/1 integer
                padding mask over the keys, True/1 = attend (combined with the causal rule).
            cache: optional :class:`KVCache` from :meth:`new_cache`; the tokens are appended
                to it and ``cache.length`` advances by ``tokens`` once the call completes.

        Returns:
            ``(batch, tokens, vocab_size)`` logits in the model's dtype. Their finiteness is
            not checked here: call :func:`check_logits` or let the supervisor check them.

        Raises:
            InvalidInput: a DIA-50xx code naming the input and the rule; the inputs and the
                cache are unchanged.
        """
        weight = self.embed_tokens.weight
        plan = plan_call(
            self.config,
            input_ids,
            positions=positions,
            attention_mask=attention_mask,
            cache=cache,
            device=weight.device,
            dtype=weight.dtype,
        )
        cos, sin = rotary_tables(
            plan.positions, self.config.head_dim, self.config.rope_theta, weight.dtype
        )
        h = self.embed_tokens(input_ids)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, plan, None if cache is None else cache.layer(i))
        logits: torch.Tensor = self.lm_head(self.norm(h))
        if cache is not None:
            cache._advance(input_ids.shape[1])
        return logits


class DecoderFallback(nn.Module):
    """A cheap stand-in for a :class:`Decoder`, for the supervisor's fallback chain.

    It keeps the reference's token embedding, final norm and head and drops every layer in
    between: a bigram model, whose logits for a token depend on that token alone. It costs
    one lookup and one matrix product per token and answers ``(batch, tokens, vocab)`` logits
    like the reference, less well. Its tensors are copies, so a fault that corrupts the
    reference's memory does not reach it. Its inputs are validated like the reference's
    (token ids, shape, device: the DIA-50xx codes).
    """

    def __init__(self, reference: Decoder) -> None:
        super().__init__()
        self.config = reference.config
        self.embed_tokens = copy.deepcopy(reference.embed_tokens)
        self.norm = copy.deepcopy(reference.norm)
        self.lm_head = copy.deepcopy(reference.lm_head)
        self.eval()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits for every input token (see :meth:`Decoder.forward`; no cache, no mask).

        Raises:
            InvalidInput: a DIA-50xx code naming the input and the rule.
        """
        weight = self.embed_tokens.weight
        plan_call(
            self.config,
            input_ids,
            positions=None,
            attention_mask=None,
            cache=None,
            device=weight.device,
            dtype=weight.dtype,
        )
        logits: torch.Tensor = self.lm_head(self.norm(self.embed_tokens(input_ids)))
        return logits


def check_logits(logits: torch.Tensor) -> None:
    """The one finiteness check on a decoder's output (one host synchronisation).

    A NaN or Inf in a weight or an activation propagates to the logits; checking them once
    here replaces checks in every layer. The supervisor's output check does the same.

    Raises:
        InvalidInput: DIA-2105 NOT_FINITE, with the count of non-finite values.
    """
    bad = int((~torch.isfinite(logits)).sum())
    if bad:
        raise InvalidInput(
            f"logits: {bad} of {logits.numel()} values are NaN or Inf "
            f"(shape {tuple(logits.shape)}); a weight or an input upstream is not finite",
            diagnostic=D.NOT_FINITE,
            field="logits",
            rule="finite",
            expected="finite",
            actual=bad,
        )
