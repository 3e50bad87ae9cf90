"""Models guarded by vigil, and their signed artifacts.

:class:`Decoder` is the validated reference decoder (LLaMA-style, optional MoE layers) with
its :class:`DecoderConfig` and caller-owned :class:`KVCache`; see ``docs/MODEL.md``.
:class:`DecoderFallback` is its cheap stand-in for a fallback chain (the demo uses both).
:class:`NextTokens` serves the greedy next token and its log-probability instead of the logits.
:class:`TinyReference` is a small deterministic perceptron for tests and worker examples.
A model directory (``weights.safetensors``, ``manifest.json``, ``manifest.sig``) is written by
:func:`save_model_dir` / :func:`sign_model_dir` and loaded, only when its signature and every
file verify, by :func:`verify_model_dir` and :func:`load_model` (see ``docs/ARTIFACTS.md``).
"""

from vigil.model._artifact import (
    LoadedModel,
    VerifiedArtifact,
    load_model,
    load_state_dict,
    save_model_dir,
    sign_model_dir,
    verify_model_dir,
)
from vigil.model._cache import KVCache
from vigil.model._config import DTYPES, PRESETS, DecoderConfig
from vigil.model._decoder import Decoder, DecoderFallback, check_logits
from vigil.model._hf import hf_llama_config_kwargs, to_hf_llama_state_dict
from vigil.model._manifest import (
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    SIGNATURE,
    WEIGHTS,
)
from vigil.model._tiny import IN_FEATURES, OUT_FEATURES, TinyFallback, TinyReference
from vigil.model._tokens import NextTokens, next_tokens, token_contract

__all__ = [
    "DTYPES",
    "FORMAT_VERSION",
    "IN_FEATURES",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "OUT_FEATURES",
    "PRESETS",
    "SIGNATURE",
    "WEIGHTS",
    "Decoder",
    "DecoderConfig",
    "DecoderFallback",
    "KVCache",
    "LoadedModel",
    "NextTokens",
    "TinyFallback",
    "TinyReference",
    "VerifiedArtifact",
    "check_logits",
    "hf_llama_config_kwargs",
    "load_model",
    "load_state_dict",
    "next_tokens",
    "save_model_dir",
    "sign_model_dir",
    "to_hf_llama_state_dict",
    "token_contract",
    "verify_model_dir",
]
