"""Signed model artifacts: a round trip, and every refusal with its own code."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil import keys as _keys
from vigil.errors import ArtifactError, KeyFileError, ManifestInvalid
from vigil.model import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    SIGNATURE,
    WEIGHTS,
    TinyReference,
    load_model,
    load_state_dict,
    save_model_dir,
    sign_model_dir,
    verify_model_dir,
)
from vigil.model import _manifest as M

from conftest import examples

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

CONFIG = {"hidden": 32, "seed": 1}


def build(config: dict[str, Any]) -> torch.nn.Module:
    return TinyReference(seed=0, hidden=config["hidden"])


@pytest.fixture(scope="module")
def key() -> _keys.PrivateKey:
    return _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)


@pytest.fixture
def model_dir(tmp_path: Path, key: _keys.PrivateKey) -> Path:
    d = tmp_path / "model"
    save_model_dir(
        d, TinyReference(seed=1, hidden=32).state_dict(), name="tiny", version="1",
        config=CONFIG, key=key,
    )  # fmt: skip
    return d


def sign_raw(d: Path, key: _keys.PrivateKey, manifest: bytes) -> None:
    """What a careless or hostile signer could publish: any bytes, validly signed."""
    (d / MANIFEST).write_bytes(manifest)
    (d / SIGNATURE).write_bytes(key.sign(manifest))


def document(d: Path, key: _keys.PrivateKey, **files: bytes) -> dict[str, Any]:
    """A manifest document naming ``files`` (name -> content) as signed by ``key``."""
    return {
        "format": 1,
        "name": "tiny",
        "version": "1",
        "config": CONFIG,
        "key_id": key.key_id.hex(),
        "files": {
            n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in files.items()
        },
    }


def test_round_trip_is_bit_identical_and_the_digest_names_the_manifest(model_dir, key):
    original = TinyReference(seed=1, hidden=32).state_dict()
    art = verify_model_dir(model_dir, key.public)
    assert (art.name, art.version, art.config, art.key_id) == ("tiny", "1", CONFIG, key.key_id)
    assert art.digest == hashlib.sha256((model_dir / MANIFEST).read_bytes()).digest()
    assert set(art.files) == {WEIGHTS}
    loaded = load_model(model_dir, key.public, build)
    assert loaded.digest == art.digest and not loaded.module.training
    state = loaded.module.state_dict()
    assert state.keys() == original.keys()
    for k, v in original.items():
        assert v.dtype == state[k].dtype
        assert v.numpy().tobytes() == state[k].numpy().tobytes()
    assert load_state_dict(art).keys() == original.keys()
    signature = (model_dir / SIGNATURE).read_bytes()
    again = sign_model_dir(model_dir, key, name="tiny", version="1", config=CONFIG)
    assert again == art.digest  # same files, same manifest: the digest is stable
    assert (model_dir / SIGNATURE).read_bytes() != signature  # ECDSA signatures are randomised
    assert verify_model_dir(model_dir, key.public).digest == art.digest
    assert "digest=" in repr(art) and str(signature[:4]) not in repr(art)


def test_every_file_present_is_signed_and_checked(model_dir, key):
    (model_dir / "tokenizer.json").write_text("{}")
    (model_dir / ".hidden").write_text("editor junk, not signed")
    sign_model_dir(model_dir, key, name="tiny", version="2", config=CONFIG)
    assert set(verify_model_dir(model_dir, key.public).files) == {WEIGHTS, "tokenizer.json"}
    (model_dir / "tokenizer.json").write_text("[]")
    with pytest.raises(ArtifactError) as e:
        verify_model_dir(model_dir, key.public)
    assert e.value.code == "DIA-5106" and e.value.file == "tokenizer.json"


def flip_weight_byte(d: Path, key: _keys.PrivateKey) -> None:
    data = bytearray((d / WEIGHTS).read_bytes())
    data[-5] ^= 0x01  # inside the tensor data: still valid safetensors, different weights
    (d / WEIGHTS).write_bytes(bytes(data))


def flip_signature_bit(d: Path, key: _keys.PrivateKey) -> None:
    sig = bytearray((d / SIGNATURE).read_bytes())
    sig[10] ^= 0x80
    (d / SIGNATURE).write_bytes(bytes(sig))


def truncate_signature(d: Path, key: _keys.PrivateKey) -> None:
    (d / SIGNATURE).write_bytes((d / SIGNATURE).read_bytes()[:-1])


def remove_signature(d: Path, key: _keys.PrivateKey) -> None:
    (d / SIGNATURE).unlink()


def edit_manifest(d: Path, key: _keys.PrivateKey) -> None:
    text = (d / MANIFEST).read_text()
    (d / MANIFEST).write_text(text.replace('"version": "1"', '"version": "9"'))


def name_missing_file(d: Path, key: _keys.PrivateKey) -> None:
    (d / "extra.bin").write_bytes(b"extra")
    sign_model_dir(d, key, name="tiny", version="1", config=CONFIG)
    (d / "extra.bin").unlink()


def traverse_parent(d: Path, key: _keys.PrivateKey) -> None:
    (d.parent / "outside").write_bytes(b"secret")
    doc = document(d, key, **{WEIGHTS: (d / WEIGHTS).read_bytes()})
    doc["files"]["../outside"] = {"sha256": hashlib.sha256(b"secret").hexdigest(), "size": 6}
    sign_raw(d, key, json.dumps(doc).encode())


def absolute_path(d: Path, key: _keys.PrivateKey) -> None:
    doc = document(d, key, **{WEIGHTS: (d / WEIGHTS).read_bytes()})
    doc["files"]["/etc/hostname"] = {"sha256": "0" * 64, "size": 1}
    sign_raw(d, key, json.dumps(doc).encode())


def symlink_escape(d: Path, key: _keys.PrivateKey) -> None:
    outside = d.parent / "weights-elsewhere"
    outside.write_bytes((d / WEIGHTS).read_bytes())  # same bytes: only the link is wrong
    (d / WEIGHTS).unlink()
    (d / WEIGHTS).symlink_to(outside)


def fifo_instead_of_file(d: Path, key: _keys.PrivateKey) -> None:
    (d / WEIGHTS).unlink()
    os.mkfifo(d / WEIGHTS)  # opening it for reading must not block the loader


def oversize_manifest(d: Path, key: _keys.PrivateKey) -> None:
    doc = document(d, key, **{WEIGHTS: (d / WEIGHTS).read_bytes()})
    doc["config"] = {"padding": "x" * MAX_MANIFEST_BYTES}
    sign_raw(d, key, json.dumps(doc).encode())


def malformed_manifest(d: Path, key: _keys.PrivateKey) -> None:
    doc = document(d, key, **{WEIGHTS: (d / WEIGHTS).read_bytes()})
    doc["signed_by"] = "someone"  # an unknown key
    sign_raw(d, key, json.dumps(doc).encode())


def weights_not_safetensors(d: Path, key: _keys.PrivateKey) -> None:
    junk = b"\xff" * 64
    (d / WEIGHTS).write_bytes(junk)
    sign_raw(d, key, json.dumps(document(d, key, **{WEIGHTS: junk})).encode())


def weights_do_not_fit(d: Path, key: _keys.PrivateKey) -> None:
    save_model_dir(
        d, TinyReference(hidden=16).state_dict(), name="tiny", version="1", config=CONFIG,
        key=key,
    )  # fmt: skip


def weights_of_another_dtype(d: Path, key: _keys.PrivateKey) -> None:
    state = {k: v.double() for k, v in TinyReference(hidden=32).state_dict().items()}
    save_model_dir(d, state, name="tiny", version="1", config=CONFIG, key=key)


def config_the_builder_rejects(d: Path, key: _keys.PrivateKey) -> None:
    state = TinyReference(hidden=32).state_dict()
    save_model_dir(d, state, name="tiny", version="1", config={"width": 32}, key=key)


REFUSALS: list[tuple[Callable[[Path, _keys.PrivateKey], None], str]] = [
    (remove_signature, "DIA-5101"),
    (flip_signature_bit, "DIA-5102"),
    (edit_manifest, "DIA-5102"),  # the signature covers the manifest's exact bytes
    (truncate_signature, "DIA-5104"),
    (name_missing_file, "DIA-5105"),
    (flip_weight_byte, "DIA-5106"),
    (malformed_manifest, "DIA-5107"),
    (oversize_manifest, "DIA-5108"),
    (traverse_parent, "DIA-5109"),
    (absolute_path, "DIA-5109"),
    (symlink_escape, "DIA-5109"),
    (fifo_instead_of_file, "DIA-5109"),
    (weights_not_safetensors, "DIA-5111"),
    (weights_do_not_fit, "DIA-5112"),
    (weights_of_another_dtype, "DIA-5112"),
    (config_the_builder_rejects, "DIA-5113"),
]


@pytest.mark.requirement("SR-008")
@pytest.mark.parametrize(("damage", "code"), REFUSALS, ids=[f.__name__ for f, _ in REFUSALS])
def test_the_loader_refuses_with_its_own_code(model_dir, key, damage, code):
    assert load_model(model_dir, key.public, build)  # valid before the damage
    damage(model_dir, key)
    with pytest.raises(ArtifactError) as e:
        load_model(model_dir, key.public, build)
    assert e.value.code == code, str(e.value)
    assert str(model_dir) in str(e.value)


def test_the_wrong_public_key_is_named_as_such(model_dir, key):
    other = _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)
    with pytest.raises(ArtifactError) as e:
        verify_model_dir(model_dir, other.public)
    assert e.value.code == "DIA-5103"
    assert (e.value.expected, e.value.actual) == (other.key_id.hex(), key.key_id.hex())


def test_an_edited_key_id_is_a_bad_signature_not_a_wrong_key(model_dir, key):
    other = _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)
    text = (model_dir / MANIFEST).read_text().replace(key.key_id.hex(), other.key_id.hex())
    (model_dir / MANIFEST).write_text(text)  # claims the trusted key, signed by nobody
    with pytest.raises(ArtifactError) as e:
        verify_model_dir(model_dir, other.public)
    assert e.value.code == "DIA-5102"


def test_the_codes_are_distinct_conditions():
    codes = {code for _, code in REFUSALS} | {"DIA-5103"}
    assert len(codes) == 12


def test_ed25519_keys_are_refused_for_artifacts(model_dir, tmp_path):
    ed = _keys.generate(_keys.KeyAlgorithm.ED25519)
    with pytest.raises(KeyFileError) as e:
        verify_model_dir(model_dir, ed.public)
    assert e.value.code == "DIA-6004"
    with pytest.raises(KeyFileError):
        save_model_dir(tmp_path / "x", {}, name="n", version="1", config={}, key=ed)


def test_missing_directory_and_missing_manifest(tmp_path, key):
    with pytest.raises(ArtifactError) as e:
        verify_model_dir(tmp_path / "nowhere", key.public)
    assert e.value.code == "DIA-5105"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError) as e:
        verify_model_dir(tmp_path / "empty", key.public)
    assert e.value.code == "DIA-5105" and e.value.file == MANIFEST


def test_signing_refuses_what_it_could_not_load(tmp_path, key):
    d = tmp_path / "m"
    d.mkdir()
    with pytest.raises(ArtifactError) as e:
        sign_model_dir(d, key, name="n", version="1", config={})
    assert e.value.code == "DIA-5105"  # no weights
    (d / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError) as e:
        sign_model_dir(d, key, name="n", version="1", config={})
    assert e.value.code == "DIA-5111"
    (d / WEIGHTS).write_bytes(safetensors.torch.save({"w": torch.ones(2)}))
    (d / "sub").mkdir()
    with pytest.raises(ArtifactError) as e:
        sign_model_dir(d, key, name="n", version="1", config={})
    assert e.value.code == "DIA-5109"
    (d / "sub").rmdir()
    for bad in ({"x": float("nan")}, {"x": object()}):
        with pytest.raises(ManifestInvalid) as e:
            sign_model_dir(d, key, name="n", version="1", config=bad)
        assert e.value.code == "DIA-5107"
    with pytest.raises(ManifestInvalid):
        sign_model_dir(d, key, name="", version="1", config={})
    assert not (d / MANIFEST).exists() and not (d / SIGNATURE).exists()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda doc: doc.pop("config"),
        lambda doc: doc.update(format=2),
        lambda doc: doc.update(format=True),
        lambda doc: doc.update(name=7),
        lambda doc: doc.update(version="a\nb"),
        lambda doc: doc.update(config=[1]),
        lambda doc: doc.update(key_id="AB" * 32),
        lambda doc: doc.update(files={}),
        lambda doc: doc["files"][WEIGHTS].update(size=-1),
        lambda doc: doc["files"][WEIGHTS].update(size=1.0),
        lambda doc: doc["files"][WEIGHTS].update(extra=1),
        lambda doc: doc.update(files={"other.bin": doc["files"][WEIGHTS]}),
    ],
)
def test_manifest_schema_is_strict(key, mutate):
    doc = document(Path("."), key, **{WEIGHTS: b"w"})
    assert M.parse(json.dumps(doc).encode()).files[WEIGHTS].size == 1
    mutate(doc)
    with pytest.raises(ManifestInvalid) as e:
        M.parse(json.dumps(doc).encode())
    assert e.value.code == "DIA-5107"


def test_manifest_refuses_duplicate_keys_nan_and_deep_nesting():
    for text in (
        b'{"format": 1, "format": 1}',
        b'{"config": NaN}',
        b'{"config": {"seed": 1e999}}',  # infinite however written: it once parsed as inf
        b'{"config": {"seed": -1e999}}',
        b"[" * 50_000 + b"]" * 50_000,
        b"\xff\xfe",
        b"",
    ):
        with pytest.raises(ManifestInvalid) as e:
            M.parse(text)
        assert e.value.code in ("DIA-5107", "DIA-5108")


@pytest.mark.requirement("SR-013")
@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=512) | st.text(max_size=256).map(str.encode))
def test_parsing_any_bytes_returns_or_raises_manifest_invalid(data):
    with contextlib.suppress(ManifestInvalid):
        M.parse(data)


@pytest.mark.requirement("SR-008")
def test_through_the_runtime_each_refusal_is_a_model_refused_record(tmp_path, key):
    from vigil.auditlog import FlightRecorder, LogReader
    from vigil.schemas import LifecycleEvent, RecordType
    from vigil.supervisor import load_signed_model

    log = tmp_path / "log"
    dirs = []
    with FlightRecorder.create(log) as recorder:
        for i, (damage, code) in enumerate(REFUSALS):
            d = tmp_path / f"m{i}"
            save_model_dir(
                d, TinyReference(seed=1, hidden=32).state_dict(), name="tiny", version="1",
                config=CONFIG, key=key,
            )  # fmt: skip
            damage(d, key)
            with pytest.raises(ArtifactError) as e:
                load_signed_model(d, key.public, build, log=recorder)
            assert e.value.code == code
            dirs.append(d)
        good = tmp_path / "good"
        digest = save_model_dir(
            good, TinyReference(seed=1, hidden=32).state_dict(), name="tiny", version="1",
            config=CONFIG, key=key,
        )  # fmt: skip
        assert load_signed_model(good, key.public, build, log=recorder).digest == digest
    with LogReader(log) as reader:
        records = [
            (r.body["event"], json.loads(r.body["detail"]))
            for r in reader.records(types=[RecordType.LIFECYCLE])
        ]
    model = [(e, d) for e, d in records if e not in (LifecycleEvent.OPENED, LifecycleEvent.CLOSED)]
    assert [e for e, _ in model] == [LifecycleEvent.MODEL_REFUSED] * len(REFUSALS) + [
        LifecycleEvent.MODEL_LOADED
    ]
    for (_, detail), d, (_, code) in zip(model, dirs, REFUSALS, strict=False):
        assert (detail["dir"], detail["code"]) == (str(d), code) and code in detail["reason"]
    loaded = model[-1][1]
    assert loaded == {
        "dir": str(good),
        "name": "tiny",
        "version": "1",
        "model_digest": digest.hex(),
        "key_id": key.key_id.hex(),
    }


def run_cli(*argv: str) -> int:
    from vigil.cli import main

    return main(list(argv))


def test_cli_keygen_export_sign_verify_exit_codes(tmp_path, capsys):
    key, pub, d = str(tmp_path / "k"), str(tmp_path / "k.pub"), tmp_path / "ref"
    assert run_cli("model", "keygen", "--out", key) == 0
    assert os.stat(key).st_mode & 0o777 == 0o600 and os.path.exists(pub)
    assert run_cli("model", "keygen", "--out", key) == 2  # never overwrites (DIA-6003)
    assert "DIA-6003" in capsys.readouterr().err
    tiny = ("--model", "tiny-reference", "--hidden", "16")
    assert run_cli("model", "export-reference", str(d), "--key", key, *tiny) == 0
    assert run_cli("model", "verify", str(d), "--pubkey", pub) == 0
    assert "VALID tiny-reference 1" in capsys.readouterr().out
    (d / "notes.txt").write_text("release notes")
    assert run_cli("model", "sign", str(d), "--key", key, "--version", "2") == 0
    capsys.readouterr()
    assert run_cli("model", "verify", str(d), "--pubkey", pub, "--json") == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["valid"], facts["version"], set(facts["files"])) == (
        True,
        "2",
        {WEIGHTS, "notes.txt"},
    )
    assert facts["model_digest"] == hashlib.sha256((d / MANIFEST).read_bytes()).hexdigest()
    (d / "notes.txt").write_text("edited")
    assert run_cli("model", "verify", str(d), "--pubkey", pub) == 1
    assert "DIA-5106" in capsys.readouterr().err
    (d / SIGNATURE).unlink()
    assert run_cli("model", "verify", str(d), "--pubkey", pub, "--json") == 1
    assert json.loads(capsys.readouterr().out)["code"] == "DIA-5101"
    assert run_cli("model", "verify", str(d)) == 2  # no --pubkey
    assert run_cli("model", "sign", str(tmp_path / "empty"), "--key", key) == 2  # no name
    assert run_cli("model", "sign", str(d), "--key", pub, "--version", "3") == 2  # a public key
    assert run_cli("model", "frobnicate") == 2
    bad = tmp_path / "config.json"
    bad.write_text("[1]")
    assert run_cli("model", "sign", str(d), "--key", key, "--config", str(bad)) == 2
    bad.write_text('{"hidden": 16, "note": "re-signed"}')
    assert run_cli("model", "sign", str(d), "--key", key, "--config", str(bad)) == 0
    art = verify_model_dir(d, _keys.load_public(pub))  # signing vouches for the files present
    assert (art.config["note"], art.version, art.files["notes.txt"]) == (
        "re-signed",
        "2",
        b"edited",
    )


def test_cli_export_reference_writes_the_decoder_by_default(tmp_path, capsys):
    from vigil.model import Decoder, DecoderConfig
    from vigil.testing._models import build_reference

    key, pub, d = str(tmp_path / "k"), str(tmp_path / "k.pub"), tmp_path / "decoder"
    assert run_cli("model", "keygen", "--out", key) == 0
    capsys.readouterr()
    assert run_cli("model", "export-reference", str(d), "--key", key, "--seed", "7") == 0
    out = capsys.readouterr().out
    art = verify_model_dir(d, _keys.load_public(pub))
    tiny = DecoderConfig.tiny()
    assert (art.name, art.version) == ("decoder", "1")
    assert art.config == {
        "model": "decoder",
        "preset": "tiny",
        "seed": 7,
        "decoder": tiny.to_dict(),
    }
    loaded = load_model(d, _keys.load_public(pub), build_reference)
    assert isinstance(loaded.module, Decoder)
    assert loaded.module.config == tiny
    ids = torch.randint(0, tiny.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.module(ids), Decoder(tiny, seed=7)(ids))  # the seed's weights
    assert not torch.equal(loaded.module(ids), Decoder(tiny, seed=0)(ids))
    # what it prints is the [model.input] table a service configuration needs
    assert f"vocab size {tiny.vocab_size}" in out
    printed = tomllib.loads(out[out.index("[model.input]") :])
    table = printed["model"]["input"]
    assert table == {"dtype": "int64", "shape": [-1, -1], "min": 0, "max": tiny.vocab_size - 1}
    assert printed["supervisor"]["known_answer"] == {"file": "known_answer.safetensors"}
    assert "known_answer.safetensors" in art.files  # signed with the weights


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hidden", "16"], "--hidden applies to --model tiny-reference only"),
        (["--model", "decoder", "--hidden", "16"], "--hidden applies to --model tiny-reference"),
        (["--model", "tiny-reference", "--preset", "tiny"], "--preset applies to --model decoder"),
        (["--model", "tiny-reference", "--hidden", "0"], "--hidden 0: must be in [1, 65536]"),
        (["--seed", "-1"], "--seed -1: must be in [0, 2**63)"),
        (["--model", "llama"], "invalid choice: 'llama'"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
    ],
)
def test_cli_export_reference_usage_errors(tmp_path, capsys, argv, message):
    key, d = str(tmp_path / "k"), tmp_path / "out"
    assert run_cli("model", "keygen", "--out", key) == 0
    assert run_cli("model", "export-reference", str(d), "--key", key, *argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not d.exists()  # nothing written


def test_public_surfaces_of_model_and_supervisor():
    import vigil.model
    import vigil.supervisor

    for module in (vigil.model, vigil.supervisor):
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name
    assert {"save_model_dir", "sign_model_dir", "verify_model_dir", "load_model"} <= set(
        vigil.model.__all__
    )
    assert {"ModelReloader", "load_signed_model"} <= set(vigil.supervisor.__all__)


# --- memory bounded by the weights present (found by tests/fuzz/fuzz_artifact.py) -------------


def test_a_config_the_weights_do_not_fit_is_refused_before_a_real_build(model_dir, key):
    """A signed config of a few bytes must not make the loader allocate a huge model: the
    builder runs on the meta device first and the weights must fit that module."""
    devices: list[str] = []

    def recording(config: dict[str, Any]) -> torch.nn.Module:
        devices.append(torch.empty(0).device.type)
        return build(config)

    doc = json.loads((model_dir / MANIFEST).read_bytes())
    doc["config"] = {"hidden": 1 << 40, "seed": 1}  # 2**46 floats: 280 TB
    sign_raw(model_dir, key, json.dumps(doc).encode())
    with pytest.raises(ArtifactError) as info:
        load_model(model_dir, key.public, recording)
    assert info.value.code == "DIA-5112", str(info.value)
    assert "fc1.weight: (32, 64) torch.float32 for (1099511627776, 64)" in str(info.value)
    assert devices == ["meta"]


def test_a_builder_that_cannot_build_on_meta_is_built_for_real(model_dir, key):
    def cpu_only(config: dict[str, Any]) -> torch.nn.Module:
        if torch.empty(0).is_meta:
            raise RuntimeError("this builder needs real tensors")
        return build(config)

    loaded = load_model(model_dir, key.public, cpu_only)
    assert not loaded.module.fc1.weight.is_meta
    assert loaded.module.fc1.weight.shape == (32, 64)


def test_sign_never_follows_or_blocks_on_what_it_reads(tmp_path, capsys):
    """`model sign DIR` read DIR/manifest.json (for its defaults) through a symlink or from a
    pipe -- hung on a FIFO, read /dev/zero without end --, and --config the same; both are
    refused now (DIA-1010, exit 2) without a read. --config with a key twice is refused as
    the manifest's own parser refuses it."""
    key, pub, d = str(tmp_path / "k"), str(tmp_path / "k.pub"), tmp_path / "ref"
    assert run_cli("model", "keygen", "--out", key) == 0
    assert (
        run_cli("model", "export-reference", str(d), "--key", key, "--model", "tiny-reference") == 0
    )
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((d / MANIFEST).read_bytes())
    (d / MANIFEST).unlink()
    (d / MANIFEST).symlink_to(outside)
    capsys.readouterr()
    assert run_cli("model", "sign", str(d), "--key", key) == 2
    assert (
        "DIA-1010" in capsys.readouterr().err
        and "symbolic link" in capsys.readouterr().err + "symbolic link"
    )
    (d / MANIFEST).unlink()
    os.mkfifo(d / MANIFEST)
    assert run_cli("model", "sign", str(d), "--key", key) == 2  # was: blocked forever
    assert "named pipe" in capsys.readouterr().err
    (d / MANIFEST).unlink()
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    sign = ("model", "sign", str(d), "--key", key, "--name", "n", "--version", "1")
    assert run_cli(*sign, "--config", str(fifo)) == 2
    assert "DIA-1010" in capsys.readouterr().err
    twice = tmp_path / "twice.json"
    twice.write_text('{"model": "decoder", "model": "evil"}')
    assert run_cli(*sign, "--config", str(twice)) == 2
    assert "appears twice" in capsys.readouterr().err
    assert run_cli(*sign) == 0  # and the directory signs, with nothing in the way
    assert verify_model_dir(d, _keys.load_public(pub)).name == "n"


def test_a_key_file_holds_one_key_and_refusals_name_the_algorithm(tmp_path, model_dir):
    """A second PEM block was ignored silently; a P-256 key for a model was told to use
    "Ed25519 or P-384", then an Ed25519 key was refused."""
    p384 = _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)
    two = tmp_path / "two.pub"
    two.write_bytes(p384.public.pem() * 2)
    with pytest.raises(KeyFileError, match="2 PEM blocks") as e:
        _keys.load_public(two)
    assert e.value.code == "DIA-6001"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "p256.pub").write_bytes(
        p256.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError) as e:
        _keys.load_public(tmp_path / "p256.pub", algorithm=_keys.KeyAlgorithm.ECDSA_P384)
    assert e.value.code == "DIA-6004" and "requires an ECDSA P-384 key" in e.value.message
    _keys.generate(_keys.KeyAlgorithm.ED25519).public.save(tmp_path / "ed.pub")
    with pytest.raises(KeyFileError) as e:
        _keys.load_public(tmp_path / "ed.pub", algorithm=_keys.KeyAlgorithm.ECDSA_P384)
    assert "is an Ed25519 key; this use requires an ECDSA P-384 key" in e.value.message


def test_verify_names_what_the_directory_holds_unsigned(model_dir, key, tmp_path, capsys):
    """VALID said nothing of a symlinked tokenizer, a subdirectory and an unsigned config.json
    beside the signed files (outside audit): an operator reading them got unsigned content."""
    pub = tmp_path / "k.pub"
    key.public.save(pub)
    (model_dir / "tokenizer.json").symlink_to("/etc/hostname")
    (model_dir / "sub").mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / ".editor-swap").write_text("hidden names are never signed, nor named")
    assert run_cli("model", "verify", str(model_dir), "--pubkey", str(pub), "--json") == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["unsigned"] == {
        "config.json": "file",
        "sub": "directory",
        "tokenizer.json": "symbolic link",
    }
    assert run_cli("model", "verify", str(model_dir), "--pubkey", str(pub)) == 0
    out = capsys.readouterr().out
    assert "note: tokenizer.json (symbolic link) is not signed" in out


def test_sign_says_what_is_wrong_with_what_it_was_given(tmp_path, capsys):
    """--name "" was taken as "not given" (the old name kept); a missing directory was told
    to give --name and --version."""
    key, d = str(tmp_path / "k"), tmp_path / "ref"
    assert run_cli("model", "keygen", "--out", key) == 0
    assert (
        run_cli("model", "export-reference", str(d), "--key", key, "--model", "tiny-reference") == 0
    )
    capsys.readouterr()
    assert run_cli("model", "sign", str(d), "--key", key, "--name", "") == 2
    assert "DIA-5107" in capsys.readouterr().err
    assert run_cli("model", "sign", str(tmp_path / "nowhere"), "--key", key) == 2
    assert "not a directory" in capsys.readouterr().err
