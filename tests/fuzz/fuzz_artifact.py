"""Fuzz the model manifest parser and the signed-artifact loader.

Input: a u16 (little-endian) manifest length, the manifest's bytes, then the weights file's
bytes (safetensors). Each input is parsed as a manifest (``_manifest.parse``) as it is; then a
model directory is written from it and loaded with ``load_model`` and the service's builder
(``build_reference``). So that the fuzzed bytes get past the checks a forger cannot pass, the
harness plays the publisher: where the manifest is a JSON object whose ``files`` is an
object, it sets ``files["weights.safetensors"]`` to the weights' real size and SHA-256 and
``key_id`` to the harness key's id, then signs the result with that key.

    python tests/fuzz/fuzz_artifact.py -max_total_time=600 tests/fuzz/corpus/artifact
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fuzzing import instrumenting, main, scratch_dir

with instrumenting(__name__):
    from vigil import keys as _keys
    from vigil.errors import VigilError
    from vigil.model import _manifest as M
    from vigil.model._artifact import load_model
    from vigil.testing._models import build_reference

SCRATCH = scratch_dir()
KEY = _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)


def split(data: bytes) -> tuple[bytes, bytes]:
    n = int.from_bytes(data[:2], "little")
    return data[2 : 2 + n], data[2 + n :]


def join(manifest: bytes, weights: bytes) -> bytes:
    return len(manifest).to_bytes(2, "little") + manifest + weights


def published(manifest: bytes, weights: bytes) -> bytes:
    """The manifest with the weights' true size and digest and the harness key's id."""
    try:
        doc = json.loads(manifest)
    except (ValueError, RecursionError):
        return manifest
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        return manifest
    doc["files"][M.WEIGHTS] = {"sha256": hashlib.sha256(weights).hexdigest(), "size": len(weights)}
    doc["key_id"] = KEY.public.key_id.hex()
    try:
        return json.dumps(doc).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        return manifest


def one_input(data: bytes) -> None:
    manifest, weights = split(data)
    with contextlib.suppress(VigilError):
        M.parse(manifest)
    signed = published(manifest, weights)
    folder = SCRATCH / "model"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / M.MANIFEST).write_bytes(signed)
    (folder / M.SIGNATURE).write_bytes(KEY.sign(signed))
    (folder / M.WEIGHTS).write_bytes(weights)
    try:
        loaded = load_model(folder, KEY.public, build_reference)
    except VigilError:
        return
    assert not loaded.module.training


if __name__ == "__main__":
    # torch imports its compiler stack the first time a model is built on the meta device
    # (seconds on a loaded host): pay it here, not as a timeout on the first input
    import torch

    with torch.device("meta"):
        build_reference({"model": "tiny-reference", "hidden": 8})
    main(one_input)
