"""Models guarded by vigil, and their signed artifacts.

:class:`TinyReference` is the small deterministic model the demo and the tests use. A model
directory (``weights.safetensors``, ``manifest.json``, ``manifest.sig``) is written by
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
from vigil.model._manifest import (
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    SIGNATURE,
    WEIGHTS,
)
from vigil.model._tiny import IN_FEATURES, OUT_FEATURES, TinyFallback, TinyReference

__all__ = [
    "FORMAT_VERSION",
    "IN_FEATURES",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "OUT_FEATURES",
    "SIGNATURE",
    "WEIGHTS",
    "LoadedModel",
    "TinyFallback",
    "TinyReference",
    "VerifiedArtifact",
    "load_model",
    "load_state_dict",
    "save_model_dir",
    "sign_model_dir",
    "verify_model_dir",
]
