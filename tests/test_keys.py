"""Key files: modes, refusals, algorithms, signatures that can fail."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from vigil import keys as _keys
from vigil.errors import KeyFileError

ALGORITHMS = list(_keys.KeyAlgorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_through_files_keeps_identity_and_signs(tmp_path, algorithm):
    key = _keys.generate(algorithm)
    key.save(tmp_path / "k.pem")
    key.public.save(tmp_path / "k.pub")
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "k.pub").st_mode) == 0o644
    loaded = _keys.load_private(tmp_path / "k.pem", algorithm=algorithm)
    public = _keys.load_public(tmp_path / "k.pub")
    assert loaded.key_id == public.key_id == key.key_id
    sig = loaded.sign(b"message")
    assert len(sig) == algorithm.signature_size
    assert public.verify(sig, b"message")
    assert not public.verify(sig, b"messagE")
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not public.verify(flipped, b"message")
    assert not public.verify(sig[:-1], b"message")
    assert not _keys.generate(algorithm).public.verify(sig, b"message")


def test_key_material_never_in_repr(tmp_path):
    key = _keys.generate()
    raw = key._key.private_bytes(  # the secret a careless repr would show
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    text = repr(key) + str(key) + repr(key.public)
    assert raw.hex() not in text
    assert key.key_id.hex()[:16] in text


def test_never_overwrites(tmp_path):
    path = tmp_path / "k.pem"
    path.write_bytes(b"precious")
    with pytest.raises(KeyFileError) as e:
        _keys.generate().save(path)
    assert e.value.code == "DIA-6003"
    assert path.read_bytes() == b"precious"


def test_refuses_private_key_others_can_read(tmp_path):
    path = tmp_path / "k.pem"
    _keys.generate().save(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError) as e:
        _keys.load_private(path)
    assert e.value.code == "DIA-6002"
    assert "chmod 600" in str(e.value)


def test_wrong_algorithm_and_unsupported_keys(tmp_path):
    _keys.generate(_keys.KeyAlgorithm.ED25519).save(tmp_path / "ed.pem")
    with pytest.raises(KeyFileError) as e:
        _keys.load_private(tmp_path / "ed.pem", algorithm=_keys.KeyAlgorithm.ECDSA_P384)
    assert e.value.code == "DIA-6004"
    for name, raw in {
        "rsa.pem": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256.pem": ec.generate_private_key(ec.SECP256R1()),
    }.items():
        pem = raw.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, pem)
        os.close(fd)
        with pytest.raises(KeyFileError) as e:
            _keys.load_private(tmp_path / name)
        assert e.value.code == "DIA-6004"


def test_unreadable_and_garbage_files(tmp_path):
    with pytest.raises(KeyFileError) as e:
        _keys.load_public(tmp_path / "missing.pub")
    assert e.value.code == "DIA-6001"
    (tmp_path / "junk.pub").write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n")
    with pytest.raises(KeyFileError) as e:
        _keys.load_public(tmp_path / "junk.pub")
    assert e.value.code == "DIA-6001"
    with pytest.raises(KeyFileError) as e:
        _keys.KeyAlgorithm.parse("rsa")
    assert e.value.code == "DIA-6004"


def test_public_half_of_a_private_key_file(tmp_path):
    key = _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)
    key.save(tmp_path / "k.pem")
    assert _keys.load_public(tmp_path / "k.pem").key_id == key.key_id
