"""Models guarded by vigil.

:class:`Decoder` is the validated reference decoder (LLaMA-style, optional MoE layers) with
its :class:`DecoderConfig` and caller-owned :class:`KVCache`; see ``docs/MODEL.md``.
:class:`TinyReference` is the small deterministic perceptron the demo uses.
"""

from vigil.model._cache import KVCache
from vigil.model._config import DTYPES, DecoderConfig
from vigil.model._decoder import Decoder, check_logits
from vigil.model._hf import hf_llama_config_kwargs, to_hf_llama_state_dict
from vigil.model._tiny import IN_FEATURES, OUT_FEATURES, TinyFallback, TinyReference

__all__ = [
    "DTYPES",
    "IN_FEATURES",
    "OUT_FEATURES",
    "Decoder",
    "DecoderConfig",
    "KVCache",
    "TinyFallback",
    "TinyReference",
    "check_logits",
    "hf_llama_config_kwargs",
    "to_hf_llama_state_dict",
]
