"""Signing keys: generation, files, identities, signatures.

One place handles private keys so that the rules hold everywhere: a private key file is
created with mode 0600 and never overwritten; a private key file others can read is refused
(like ssh's "UNPROTECTED PRIVATE KEY FILE"), because a key that may have leaked proves nothing;
key material never appears in a repr, a message or a log record. A key is named by its *key
id*, the SHA-256 of its DER SubjectPublicKeyInfo, which is what logs and manifests store.

Two algorithms, both from ``cryptography``: Ed25519 (fast, 64-byte signatures: the default for
the flight log's checkpoints, which are signed on the writer's path) and ECDSA P-384 with
SHA-384 (the automotive profile asked for model artifacts; signatures stored raw as ``r || s``,
96 bytes, so that a record's size never depends on DER encoding).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from vigil import _diagnostics as codes
from vigil._files import read_regular
from vigil.errors import KeyFileError

KEY_FILE_LIMIT = 1 << 16
"""Bytes read from a key or seed file at most (a PEM key is a few hundred)."""

__all__ = [
    "KeyAlgorithm",
    "PrivateKey",
    "PublicKey",
    "check_private_mode",
    "generate",
    "load_private",
    "load_public",
    "read_secret",
    "write_secret",
]

_P384_HALF = 48


@enum.unique
class KeyAlgorithm(enum.IntEnum):
    """A signature algorithm; the value is stored in records and manifests."""

    ED25519 = 1
    ECDSA_P384 = 2  # ECDSA over P-384 with SHA-384, signature raw r || s

    @property
    def signature_size(self) -> int:
        return 64 if self is KeyAlgorithm.ED25519 else 2 * _P384_HALF

    @classmethod
    def parse(cls, name: str) -> KeyAlgorithm:
        """``"ed25519"`` or ``"p384"`` (as on the command line)."""
        names = {"ed25519": cls.ED25519, "p384": cls.ECDSA_P384, "ecdsa-p384": cls.ECDSA_P384}
        try:
            return names[name.lower()]
        except KeyError:
            raise KeyFileError(
                f"unknown key algorithm {name!r}; use 'ed25519' or 'p384'",
                diagnostic=codes.KEY_ALGORITHM,
            ) from None


_PublicRaw = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
_PrivateRaw = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _algorithm_of(key: _PublicRaw | _PrivateRaw, where: str) -> KeyAlgorithm:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return KeyAlgorithm.ED25519
    if isinstance(key.curve, ec.SECP384R1):
        return KeyAlgorithm.ECDSA_P384
    raise KeyFileError(
        f"{where}: elliptic curve {key.curve.name} is not supported; use Ed25519 or P-384",
        diagnostic=codes.KEY_ALGORITHM,
        path=where,
    )


class PublicKey:
    """A verification key with its algorithm and key id."""

    __slots__ = ("_key", "algorithm", "key_id")

    def __init__(self, key: _PublicRaw, where: str = "<memory>") -> None:
        self._key = key
        self.algorithm = _algorithm_of(key, where)
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = hashlib.sha256(der).digest()

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is this key's signature over ``message``. Never raises for
        a bad signature (wrong length included): a verifier reports, it does not crash."""
        if len(signature) != self.algorithm.signature_size:
            return False
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, message)
            else:
                r = int.from_bytes(signature[:_P384_HALF], "big")
                s = int.from_bytes(signature[_P384_HALF:], "big")
                self._key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the PEM public key (mode 0644); refuses to overwrite (DIA-6003)."""
        _write_new(Path(path), self.pem(), 0o644)

    def __repr__(self) -> str:
        return f"PublicKey({self.algorithm.name}, key_id={self.key_id.hex()[:16]}…)"


class PrivateKey:
    """A signing key. Its repr shows the algorithm and key id, never the key."""

    __slots__ = ("_key", "public")

    def __init__(self, key: _PrivateRaw, where: str = "<memory>") -> None:
        self._key = key
        self.public = PublicKey(key.public_key(), where)

    @property
    def algorithm(self) -> KeyAlgorithm:
        return self.public.algorithm

    @property
    def key_id(self) -> bytes:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        """The signature over ``message`` (64 bytes Ed25519, 96 bytes raw P-384)."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(message)
        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(hashes.SHA384())))
        return r.to_bytes(_P384_HALF, "big") + s.to_bytes(_P384_HALF, "big")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the PEM (PKCS#8) private key with mode 0600; refuses to overwrite."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(Path(path), pem, 0o600)

    def __repr__(self) -> str:
        return f"PrivateKey({self.algorithm.name}, key_id={self.key_id.hex()[:16]}…)"


def generate(algorithm: KeyAlgorithm = KeyAlgorithm.ED25519) -> PrivateKey:
    """A fresh private key from the operating system's random source."""
    if algorithm is KeyAlgorithm.ED25519:
        return PrivateKey(ed25519.Ed25519PrivateKey.generate())
    return PrivateKey(ec.generate_private_key(ec.SECP384R1()))


def load_private(
    path: str | os.PathLike[str], *, algorithm: KeyAlgorithm | None = None
) -> PrivateKey:
    """Read a PEM private key written by :meth:`PrivateKey.save`.

    Raises:
        KeyFileError: DIA-6001 unreadable or not a key; DIA-6002 the file is accessible to
            group or others (fix with ``chmod 600``); DIA-6004 not ``algorithm``.
    """
    p = Path(path)
    try:
        data, st = read_regular(str(p), "private key", KEY_FILE_LIMIT)
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {p}: {exc.strerror}", path=str(p)) from None
    check_private_mode(p, st)
    _one_block(data, p)
    try:
        raw = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{p} is not an unencrypted PEM private key", path=str(p)) from None
    if not isinstance(raw, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) or (
        isinstance(raw, ec.EllipticCurvePrivateKey) and not isinstance(raw.curve, ec.SECP384R1)
    ):
        raise _unsupported(raw, p, algorithm)
    key = PrivateKey(raw, str(p))
    _check_algorithm(key.algorithm, algorithm, p)
    return key


def load_public(
    path: str | os.PathLike[str], *, algorithm: KeyAlgorithm | None = None
) -> PublicKey:
    """Read a PEM public key (or take the public half of a private key file).

    Raises:
        KeyFileError: DIA-6001 unreadable or not a key; DIA-6004 not ``algorithm``.
    """
    p = Path(path)
    try:
        data, _ = read_regular(str(p), "public key", KEY_FILE_LIMIT)
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {p}: {exc.strerror}", path=str(p)) from None
    _one_block(data, p)
    try:
        raw = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if b"PRIVATE KEY" in data:
            return load_private(p, algorithm=algorithm).public
        raise KeyFileError(f"{p} is not a PEM public key", path=str(p)) from None
    if not isinstance(raw, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) or (
        isinstance(raw, ec.EllipticCurvePublicKey) and not isinstance(raw.curve, ec.SECP384R1)
    ):
        raise _unsupported(raw, p, algorithm)
    key = PublicKey(raw, str(p))
    _check_algorithm(key.algorithm, algorithm, p)
    return key


_NAMES = {KeyAlgorithm.ED25519: "Ed25519", KeyAlgorithm.ECDSA_P384: "ECDSA P-384"}


def _unsupported(raw: object, path: Path, wanted: KeyAlgorithm | None) -> KeyFileError:
    need = "an Ed25519 or ECDSA P-384 key" if wanted is None else f"an {_NAMES[wanted]} key"
    curve = getattr(raw, "curve", None)
    held = f"an ECDSA {curve.name} key" if curve is not None else f"a {type(raw).__name__}"
    return KeyFileError(
        f"{path} holds {held}; this use requires {need}",
        diagnostic=codes.KEY_ALGORITHM,
        path=str(path),
    )


def _check_algorithm(actual: KeyAlgorithm, wanted: KeyAlgorithm | None, path: Path) -> None:
    if wanted is not None and actual is not wanted:
        raise KeyFileError(
            f"{path} is an {_NAMES[actual]} key; this use requires an {_NAMES[wanted]} key",
            diagnostic=codes.KEY_ALGORITHM,
            path=str(path),
        )


def _one_block(data: bytes, path: Path) -> None:
    """A key file holds one PEM block: a second one would be ignored silently."""
    blocks = data.count(b"-----BEGIN ")
    if blocks > 1:
        raise KeyFileError(
            f"{path} holds {blocks} PEM blocks; a key file holds exactly one key",
            path=str(path),
        )


def check_private_mode(path: Path, st: os.stat_result, what: str = "private key") -> None:
    """Refuse a secret file that its group or others can access (DIA-6002)."""
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(
            f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: others may have "
            "read it; run `chmod 600` on it (and consider it leaked if others really could)",
            diagnostic=codes.KEY_PERMISSIONS,
            path=str(path),
        )


def read_secret(path: str | os.PathLike[str], what: str = "secret file") -> bytes:
    """The bytes of a secret file, after checking its mode (DIA-6001, DIA-6002; DIA-1010
    for a named pipe or other non-regular file)."""
    p = Path(path)
    try:
        data, st = read_regular(str(p), what, KEY_FILE_LIMIT)
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {p}: {exc.strerror}", path=str(p)) from None
    check_private_mode(p, st, what)
    return data


def write_secret(path: str | os.PathLike[str], data: bytes, *, replace: bool = False) -> None:
    """Write a secret file with mode 0600. ``replace=True`` swaps it in atomically (temporary
    file, fsync, rename, fsync of the directory), so that a crash leaves the old or the new
    contents, never a mix; without it an existing file is refused (DIA-6003)."""
    p = Path(path)
    if not replace:
        _write_new(p, data, 0o600)
        return
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    _write_new(tmp, data, 0o600)
    try:
        os.replace(tmp, p)
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise KeyFileError(f"cannot replace {p}: {exc.strerror}", path=str(p)) from None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no window with wider permissions) and
    refuse an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(
            f"{path} exists; refusing to overwrite a key file",
            diagnostic=codes.KEY_EXISTS,
            path=str(path),
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}", path=str(path)) from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)  # the umask may have narrowed a public key's mode; keep it exact
        f.write(data)
        f.flush()
        os.fsync(fd)
