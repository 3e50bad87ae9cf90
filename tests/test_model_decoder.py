"""The reference decoder: config validation, cache equivalence, GQA, MoE, boundary checks."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from vigil.errors import ConfigError, InvalidArgument, InvalidInput
from vigil.model import Decoder, DecoderConfig, DecoderFallback, KVCache, check_logits
from vigil.model._decoder import MoE

TINY = DecoderConfig.tiny()
MOE = DecoderConfig.tiny(moe_experts=4, moe_top_k=2)


@pytest.fixture(scope="module")
def dense() -> Decoder:
    return Decoder(TINY, seed=1)


@pytest.fixture(scope="module")
def moe() -> Decoder:
    return Decoder(MOE, seed=2)


def _ids(batch: int, tokens: int, seed: int = 0, vocab: int = 256) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, tokens), generator=torch.Generator().manual_seed(seed))


# --- configuration ---------------------------------------------------------------------------


def test_presets_are_valid_and_round_trip_through_json() -> None:
    for config in (
        TINY,
        MOE,
        DecoderConfig.gpu(),
        DecoderConfig.tiny(moe_experts=2, moe_layers=[1, 0]),
    ):
        data = json.loads(json.dumps(config.to_dict()))
        assert DecoderConfig.from_dict(data) == config
    assert DecoderConfig.gpu().head_dim == 64
    assert DecoderConfig.gpu().torch_dtype is torch.bfloat16


def test_normalisations() -> None:
    config = DecoderConfig.tiny(moe_experts=2, moe_top_k=1, moe_layers=[1, 0], rope_theta=500)
    assert config.moe_layers == (0, 1)
    assert config.rope_theta == 500.0 and type(config.rope_theta) is float
    default = DecoderConfig.tiny(kv_cache_capacity=0)
    assert default.kv_cache_capacity == default.max_positions == 128
    assert [DecoderConfig.tiny(moe_experts=2, moe_layers=(1,)).is_moe_layer(i) for i in (0, 1)] == [
        False,
        True,
    ]
    assert not TINY.is_moe_layer(0) and MOE.is_moe_layer(0) and MOE.is_moe_layer(1)


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"vocab_size": 0}, "vocab_size"),
    ({"hidden_size": 1}, "hidden_size"),
    ({"num_layers": 0}, "num_layers"),
    ({"num_heads": 0}, "num_heads"),
    ({"num_kv_heads": 3}, "num_kv_heads"),  # does not divide 4 heads
    ({"num_kv_heads": 8}, "num_kv_heads"),  # more kv heads than heads
    ({"hidden_size": 66}, "hidden_size"),  # not a multiple of 4 heads
    ({"hidden_size": 12, "num_heads": 4, "num_kv_heads": 1}, "hidden_size"),  # head dim 3
    ({"intermediate_size": 0}, "intermediate_size"),
    ({"max_positions": 0}, "max_positions"),
    ({"kv_cache_capacity": 129}, "kv_cache_capacity"),
    ({"kv_cache_capacity": -1}, "kv_cache_capacity"),
    ({"rope_theta": 0.0}, "rope_theta"),
    ({"rope_theta": float("inf")}, "rope_theta"),
    ({"rms_eps": 0.0}, "rms_eps"),
    ({"rms_eps": float("nan")}, "rms_eps"),
    ({"moe_experts": -1}, "moe_experts"),
    ({"moe_experts": 2, "moe_top_k": 3}, "moe_top_k"),
    ({"moe_experts": 2, "moe_top_k": 0}, "moe_top_k"),
    ({"moe_experts": 2, "moe_layers": ()}, "moe_layers"),
    ({"moe_experts": 2, "moe_layers": (2,)}, "moe_layers"),
    ({"moe_experts": 2, "moe_layers": (-1,)}, "moe_layers"),
    ({"moe_experts": 2, "moe_layers": (0, 0)}, "moe_layers"),
    ({"moe_layers": (0,)}, "moe_layers"),  # MoE layers for a dense model
    ({"moe_experts": 2, "moe_layers": "0,1"}, "moe_layers"),
    ({"moe_experts": 2, "moe_layers": ("",)}, "moe_layers"),
    ({"moe_shared_expert": 1}, "moe_shared_expert"),
    ({"dtype": "float64"}, "dtype"),
    ({"dtype": torch.float32}, "dtype"),
    ({"num_layers": True}, "num_layers"),
    ({"num_layers": 2.0}, "num_layers"),
    ({"rope_theta": "1e4"}, "rope_theta"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_CONFIGS)
def test_bad_config_names_its_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        DecoderConfig.tiny(**overrides)
    err = info.value
    assert (err.code, err.field) == ("DIA-5001", field)
    assert f"DecoderConfig.{field}=" in str(err) and "DIA-5001 MODEL_CONFIG_INVALID" in str(err)


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    data = TINY.to_dict()
    del data["rms_eps"]
    data["rope_scaling"] = 2.0
    with pytest.raises(ConfigError) as info:
        DecoderConfig.from_dict(data)
    err = info.value
    assert (err.code, err.unknown, err.missing) == ("DIA-5002", ["rope_scaling"], ["rms_eps"])
    with pytest.raises(ConfigError, match="expected a dict") as info:
        DecoderConfig.from_dict([("vocab_size", 3)])
    assert info.value.code == "DIA-5002"
    bad = TINY.to_dict() | {"num_heads": 5}
    with pytest.raises(ConfigError) as info:
        DecoderConfig.from_dict(bad)
    assert info.value.code == "DIA-5001"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.num_layers = 3  # type: ignore[misc]


# --- weights and output -----------------------------------------------------------------------


def test_init_is_deterministic_per_seed() -> None:
    a, b, c = Decoder(TINY, seed=5), Decoder(TINY, seed=5), Decoder(TINY, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])
    assert not a.training


def test_output_shape_and_dtype(dense: Decoder) -> None:
    logits = dense(_ids(3, 7))
    assert logits.shape == (3, 7, 256) and logits.dtype == torch.float32
    check_logits(logits)
    half = Decoder(DecoderConfig.tiny(dtype="bfloat16"))
    assert half(_ids(1, 4)).dtype == torch.bfloat16
    assert half.new_cache().keys.dtype == torch.bfloat16


def test_check_logits_raises_not_finite() -> None:
    logits = torch.zeros(2, 3, 4)
    logits[1, 2, 0] = float("nan")
    with pytest.raises(InvalidInput) as info:
        check_logits(logits)
    assert (info.value.code, info.value.actual) == ("DIA-2105", 1)


# --- KV cache ---------------------------------------------------------------------------------


def _decode(model: Decoder, ids: torch.Tensor, prefill: int, chunk: int = 1) -> torch.Tensor:
    cache = model.new_cache(ids.shape[0])
    outs = [model(ids[:, :prefill], cache=cache)]
    outs += [
        model(ids[:, start : start + chunk], cache=cache)
        for start in range(prefill, ids.shape[1], chunk)
    ]
    assert cache.length == ids.shape[1]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("name", ["dense", "moe"])
@pytest.mark.parametrize(("prefill", "chunk"), [(5, 1), (1, 1), (4, 3)])
def test_cache_on_equals_cache_off(
    name: str, prefill: int, chunk: int, request: pytest.FixtureRequest
) -> None:
    model: Decoder = request.getfixturevalue(name)
    ids = _ids(2, 12, seed=3)
    full = model(ids)
    torch.testing.assert_close(_decode(model, ids, prefill, chunk), full, atol=1e-5, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(_decode(model, ids, prefill, chunk), full, atol=1e-5, rtol=0)


def test_cache_with_padding_mask_equals_full_forward(dense: Decoder) -> None:
    ids = _ids(2, 9, seed=4)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0  # row 1 is left-padded by three tokens
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    full = dense(ids, positions=positions, attention_mask=mask)
    cache = dense.new_cache(2)
    outs = [dense(ids[:, :5], positions=positions[:, :5], attention_mask=mask[:, :5], cache=cache)]
    outs += [
        dense(
            ids[:, t : t + 1],
            positions=positions[:, t : t + 1],
            attention_mask=mask[:, : t + 1],
            cache=cache,
        )
        for t in range(5, 9)
    ]
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=0)


def test_cache_reset_and_repr(dense: Decoder) -> None:
    ids = _ids(1, 6, seed=5)
    cache = dense.new_cache()
    first = dense(ids, cache=cache)
    assert (cache.length, cache.remaining) == (6, 58)
    cache.reset()
    assert cache.length == 0
    torch.testing.assert_close(dense(ids, cache=cache), first, atol=0, rtol=0)
    assert "length=6, capacity=64" in repr(cache)


def test_cache_rejects_a_bad_batch_size() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgument, match="batch_size"):
            KVCache(TINY, bad)


# --- grouped-query attention ----------------------------------------------------------------


def test_gqa_equals_multi_head_attention_with_repeated_kv_heads() -> None:
    gqa = Decoder(TINY, seed=7)  # 4 query heads share 2 kv heads
    mha = Decoder(dataclasses.replace(TINY, num_kv_heads=4), seed=8)
    hd, groups = TINY.head_dim, 2
    state = gqa.state_dict()
    for name, tensor in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            heads = tensor.view(TINY.num_kv_heads, hd, -1)  # (kv heads, head dim, hidden)
            state[name] = heads.repeat_interleave(groups, dim=0).reshape(4 * hd, -1)
    mha.load_state_dict(state)
    ids = _ids(2, 10, seed=9)
    assert gqa.layers[0].self_attn.k_proj.weight.shape == (2 * hd, 64)
    torch.testing.assert_close(gqa(ids), mha(ids), atol=1e-5, rtol=0)


# --- mixture of experts ---------------------------------------------------------------------


def _reference_moe(block: MoE, x: torch.Tensor) -> torch.Tensor:
    """Route token by token through the selected experts only (a sparse loop)."""
    flat = x.reshape(-1, x.shape[-1])
    logits = block.router(flat)
    out = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        probs = torch.softmax(logits[n], dim=-1)
        top, experts = torch.topk(probs, block.top_k)
        top = top / top.sum()  # Mixtral's renormalisation
        for w, e in zip(top.tolist(), experts.tolist(), strict=True):
            h = F.silu(block.w_gate[e] @ flat[n]) * (block.w_up[e] @ flat[n])
            out[n] += w * (block.w_down[e] @ h)
        if block.shared is not None:
            out[n] += block.shared(flat[n])
    return out.reshape(x.shape)


@pytest.mark.parametrize("shared", [True, False])
def test_moe_matches_a_sparse_token_by_token_reference(shared: bool) -> None:
    model = Decoder(DecoderConfig.tiny(moe_experts=4, moe_top_k=2, moe_shared_expert=shared))
    block = model.layers[0].mlp
    assert isinstance(block, MoE) and (block.shared is not None) == shared
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(block(x), _reference_moe(block, x), atol=1e-6, rtol=1e-5)


def test_moe_routing_weights_and_indices(moe: Decoder) -> None:
    block = moe.layers[1].mlp
    assert isinstance(block, MoE)
    x = torch.randn(50, 64, generator=torch.Generator().manual_seed(1))
    weights, experts = block.route(x)
    assert weights.shape == experts.shape == (50, 2) and weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(50))
    assert bool((experts[:, 0] != experts[:, 1]).all())
    assert int(experts.min()) >= 0 and int(experts.max()) < 4


def test_moe_layers_select_which_layers_route() -> None:
    model = Decoder(DecoderConfig.tiny(num_layers=3, moe_experts=2, moe_top_k=1, moe_layers=[1]))
    kinds = [type(layer.mlp).__name__ for layer in model.layers]
    assert kinds == ["MLP", "MoE", "MLP"]
    assert model(_ids(1, 3)).shape == (1, 3, 256)


# --- host synchronisation ---------------------------------------------------------------------


class _SyncSpy(TorchFunctionMode):
    """Records every call that makes a tensor's value reach the host."""

    SYNCS = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "cpu"})

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        if name in self.SYNCS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["dense", "moe"])
def test_one_host_sync_per_call_at_the_boundary(name: str, request: pytest.FixtureRequest) -> None:
    model: Decoder = request.getfixturevalue(name)
    ids = _ids(2, 6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    positions = torch.arange(6).expand(2, 6)
    for kwargs in ({}, {"attention_mask": mask, "positions": positions}):
        spy = _SyncSpy()
        with spy:
            model(ids, **kwargs)
        assert spy.calls == ["tolist"], spy.calls  # the one min/max transfer in plan_call
    cache = model.new_cache(2)
    spy = _SyncSpy()
    with spy:
        model(ids, cache=cache)
        model(ids[:, :1], cache=cache)
    assert spy.calls == ["tolist", "tolist"]


def test_sync_spy_can_see_a_sync() -> None:
    spy = _SyncSpy()
    with spy:
        torch.ones(2).sum().item()
        bool(torch.ones(1))
    assert spy.calls == ["item", "__bool__"]


# --- boundary: dtypes and devices -------------------------------------------------------------


def test_int32_ids_and_positions_are_accepted(dense: Decoder) -> None:
    ids = _ids(2, 5)
    positions = torch.arange(5).expand(2, 5)
    expected = dense(ids)
    got = dense(ids.int(), positions=positions.int(), attention_mask=torch.ones(2, 5).int())
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_inputs_on_another_device_are_rejected(dense: Decoder) -> None:
    ids = _ids(1, 3)
    meta = {"device": "meta", "dtype": torch.long}
    for kwargs in (
        {"input_ids": torch.zeros(1, 3, **meta)},
        {"input_ids": ids, "positions": torch.zeros(1, 3, **meta)},
        {"input_ids": ids, "attention_mask": torch.ones(1, 3, **meta)},
    ):
        with pytest.raises(InvalidInput) as info:
            dense(**kwargs)
        assert info.value.code == "DIA-5017" and info.value.actual == "meta"


def test_the_fallback_is_the_reference_without_its_layers() -> None:
    reference = Decoder(DecoderConfig.tiny(), seed=3)
    fallback = DecoderFallback(reference)
    ids = torch.tensor([[5, 7, 9], [1, 2, 3]])
    expected = reference.lm_head(reference.norm(reference.embed_tokens(ids)))
    assert torch.equal(fallback(ids), expected)
    assert not torch.equal(fallback(ids), reference(ids))  # cheaper, and not the same model
    with torch.no_grad():  # a copy: corrupting the reference does not reach the fallback
        reference.lm_head.weight.fill_(float("nan"))
    assert torch.isfinite(fallback(ids)).all()
    with pytest.raises(InvalidInput) as err:
        fallback(torch.tensor([[256]]))
    assert err.value.code == "DIA-5012"


def test_presets_by_name() -> None:
    assert DecoderConfig.preset("tiny") == DecoderConfig.tiny()
    assert DecoderConfig.preset("gpu", num_layers=2) == DecoderConfig.gpu(num_layers=2)
    with pytest.raises(ConfigError) as err:
        DecoderConfig.preset("huge")
    assert err.value.code == "DIA-5001" and "tiny, gpu" in err.value.message
