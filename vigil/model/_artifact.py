"""Signed model artifacts: a directory of safetensors weights, a manifest, a signature.

Theory of operation
-------------------
A model directory holds ``weights.safetensors`` (and any other plain files), ``manifest.json``
naming every file with its SHA-256 and size (:mod:`vigil.model._manifest`), and
``manifest.sig``: an ECDSA P-384 / SHA-384 signature (raw ``r || s``, 96 bytes) over the
manifest's exact bytes. The model's *digest*, recorded in every INFERENCE record, is the
SHA-256 of those bytes: it names the signed manifest and through it every byte of every file.

Loading is one pass with no window between check and use. The directory is opened once and
every file is opened relative to that handle (``O_NOFOLLOW``: a symlink is refused), so a
directory swapped mid-load cannot mix versions. Each file is read once into memory; those
bytes are hashed, compared with the manifest, and the tensors are decoded from the *same*
bytes. Checks run in a fixed order and each refusal has its own code: manifest size, the
signature's presence, its length, its validity under the trusted key (telling a wrong key
from a bad signature), the manifest's schema, each file (missing, unsafe, tampered), the
safetensors encoding, and finally the model built from the config must take the weights
exactly (same keys, shapes and dtypes). There is no unsigned escape hatch: signing a
directory is one command.

A valid signature proves who published the bytes, not that the model is good: the runtime's
hot reload (:mod:`vigil.supervisor._reload`) probes a candidate before it serves.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import os
import stat
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import safetensors.torch
import torch
from torch import nn

from vigil import _diagnostics as codes
from vigil import keys as _keys
from vigil.errors import (
    ArtifactError,
    ArtifactFileMissing,
    ArtifactKeyMismatch,
    ArtifactSignatureInvalid,
    ArtifactTampered,
    KeyFileError,
    ManifestInvalid,
    UnsignedArtifact,
    WeightsInvalid,
)
from vigil.model import _manifest as M

__all__ = [
    "LoadedModel",
    "VerifiedArtifact",
    "load_model",
    "load_state_dict",
    "save_model_dir",
    "sign_model_dir",
    "verify_model_dir",
]

_MAX_SIGNATURE_BYTES = 1024  # read at most this much of manifest.sig; it must be 96 bytes
_CHUNK = 1 << 30  # os.read returns at most ~2 GiB at once on Linux
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class VerifiedArtifact:
    """A model directory whose signature and files were verified, with the verified bytes.

    Attributes:
        directory: the directory as given.
        name, version: from the manifest.
        config: the manifest's ``config`` object (the caller's build function reads it).
        key_id: the signer's key id (SHA-256 of its DER public key).
        digest: SHA-256 of the manifest bytes: the model digest recorded by the supervisor.
        manifest: the exact signed manifest bytes.
        files: every file the manifest names, as the bytes that were verified.
    """

    directory: str
    name: str
    version: str
    config: dict[str, Any]
    key_id: bytes
    digest: bytes
    manifest: bytes = field(repr=False)
    files: Mapping[str, bytes] = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"VerifiedArtifact({self.directory!r}, {self.name!r} version {self.version!r}, "
            f"digest={self.digest.hex()[:16]}…, key_id={self.key_id.hex()[:16]}…)"
        )


@dataclass(frozen=True)
class LoadedModel:
    """A model built from a verified artifact: the module (eval mode) and its artifact."""

    module: nn.Module
    artifact: VerifiedArtifact

    @property
    def digest(self) -> bytes:
        return self.artifact.digest


# --- writing -----------------------------------------------------------------------------


def save_model_dir(
    directory: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    *,
    name: str,
    version: str,
    config: dict[str, Any],
    key: _keys.PrivateKey,
) -> bytes:
    """Write ``state_dict`` as ``weights.safetensors`` into ``directory`` and sign it.

    Files are written in the order weights, manifest, signature, each to a temporary name,
    synced and renamed into place. To publish a new version to a running reloader, write a new
    directory and rename or re-point a symlink to it: a directory changed in place is refused
    (never half-loaded) until its signature is rewritten.

    Returns:
        The model digest (SHA-256 of the manifest).

    Raises:
        KeyFileError: ``key`` is not an ECDSA P-384 key (DIA-6004).
        ManifestInvalid: ``name``, ``version`` or ``config`` is not acceptable.
        WeightsInvalid: the tensors cannot be stored (e.g. tensors sharing memory).
        ArtifactError: the directory cannot be written (DIA-5110).
    """
    _require_p384(key.algorithm)
    path = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    try:
        data = safetensors.torch.save(tensors)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise WeightsInvalid(f"cannot store the state dict as safetensors: {exc}") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _io_error(path, exc) from None
    _write_atomic(path, M.WEIGHTS, data)
    return sign_model_dir(path, key, name=name, version=version, config=config)


def sign_model_dir(
    directory: str | os.PathLike[str],
    key: _keys.PrivateKey,
    *,
    name: str,
    version: str,
    config: dict[str, Any],
) -> bytes:
    """Write ``manifest.json`` over every file present in ``directory`` and sign it.

    Every regular, non-hidden file except the manifest and its signature is listed;
    ``weights.safetensors`` must be among them and must be valid safetensors.

    Returns:
        The model digest (SHA-256 of the manifest).

    Raises:
        KeyFileError: ``key`` is not an ECDSA P-384 key (DIA-6004).
        ArtifactFileMissing: no ``weights.safetensors`` (DIA-5105).
        ManifestInvalid: a file that cannot be listed (a symlink, a subdirectory, an odd name:
            DIA-5109), or an unacceptable ``name``, ``version`` or ``config`` (DIA-5107).
        WeightsInvalid: the weights are not valid safetensors (DIA-5111).
        ArtifactError: the directory cannot be read or written (DIA-5110).
    """
    _require_p384(key.algorithm)
    path = Path(directory)
    entries: dict[str, M.FileEntry] = {}
    with _Dir(path) as d:
        try:
            names = sorted(os.listdir(d.fd))
        except OSError as exc:
            raise _io_error(path, exc) from None
        for fname in names:
            if fname.startswith(".") or fname in (M.MANIFEST, M.SIGNATURE):
                continue
            if not M.is_plain_name(fname):
                raise ManifestInvalid(
                    f"{path / fname}: not a plain file name (letters, digits, '._-'); rename it",
                    diagnostic=codes.ARTIFACT_UNSAFE_PATH,
                    path=str(path),
                    file=fname,
                )
            data = d.read(fname, M.MAX_FILE_SIZE)
            entries[fname] = M.FileEntry(hashlib.sha256(data).digest(), len(data))
            if fname == M.WEIGHTS:
                _decode_weights(data, path)
    if M.WEIGHTS not in entries:
        raise ArtifactFileMissing(f"{path}: no {M.WEIGHTS} to sign", path=str(path), file=M.WEIGHTS)
    manifest = M.encode(name=name, version=version, config=config, key_id=key.key_id, files=entries)
    _write_atomic(path, M.MANIFEST, manifest)
    _write_atomic(path, M.SIGNATURE, key.sign(manifest))
    return hashlib.sha256(manifest).digest()


# --- reading -----------------------------------------------------------------------------


def verify_model_dir(
    directory: str | os.PathLike[str], public_key: _keys.PublicKey
) -> VerifiedArtifact:
    """Verify a model directory against the trusted ``public_key``; keep the verified bytes.

    Returns:
        A :class:`VerifiedArtifact`; decode its weights with :func:`load_state_dict` (from the
        same bytes: nothing is read again).

    Raises:
        KeyFileError: ``public_key`` is not an ECDSA P-384 key (DIA-6004).
        ArtifactFileMissing: no manifest, or a file it names is absent (DIA-5105).
        UnsignedArtifact: no ``manifest.sig`` (DIA-5101).
        ArtifactSignatureInvalid: the signature is not 96 bytes (DIA-5104) or does not verify
            (DIA-5102).
        ArtifactKeyMismatch: the manifest names another signer (DIA-5103).
        ManifestInvalid: oversize (DIA-5108), malformed (DIA-5107), or naming a path that is
            not a plain file in the directory (DIA-5109).
        ArtifactTampered: a file's size or digest differs from the manifest (DIA-5106).
        ArtifactError: a file cannot be read (DIA-5110).
    """
    _require_p384(public_key.algorithm)
    path = Path(directory)
    with _Dir(path) as d:
        manifest = d.read(M.MANIFEST, M.MAX_MANIFEST_BYTES, oversize=_manifest_too_large)
        try:
            signature = d.read(M.SIGNATURE, _MAX_SIGNATURE_BYTES, oversize=_signature_malformed)
        except ArtifactFileMissing:
            raise UnsignedArtifact(
                f"{path}: no {M.SIGNATURE}; sign the directory with `vigil model sign`",
                path=str(path),
            ) from None
        _check_signature(path, manifest, signature, public_key)
        try:
            m = M.parse(manifest)
        except ManifestInvalid as exc:
            context = {**exc.context, "path": str(path)}
            raise type(exc)(
                f"{path / M.MANIFEST}: {exc.message}", diagnostic=exc.diagnostic, **context
            ) from None
        if m.key_id != public_key.key_id:
            raise ManifestInvalid(
                f"{path / M.MANIFEST} names signer {m.key_id.hex()[:16]}… but was signed by "
                f"{public_key.key_id.hex()[:16]}…",
                path=str(path),
            )
        files: dict[str, bytes] = {}
        for fname, entry in sorted(m.files.items()):
            data = d.read(fname, entry.size, oversize=_grew(entry.size))
            if len(data) != entry.size:
                raise ArtifactTampered(
                    f"{path / fname}: {len(data)} bytes, the manifest says {entry.size}",
                    path=str(path),
                    file=fname,
                    expected=entry.size,
                    actual=len(data),
                )
            actual = hashlib.sha256(data).digest()
            if actual != entry.sha256:
                raise ArtifactTampered(
                    f"{path / fname}: SHA-256 {actual.hex()[:16]}… differs from the manifest's "
                    f"{entry.sha256.hex()[:16]}…",
                    path=str(path),
                    file=fname,
                    expected=entry.sha256.hex(),
                    actual=actual.hex(),
                )
            files[fname] = data
    return VerifiedArtifact(
        directory=str(path),
        name=m.name,
        version=m.version,
        config=m.config,
        key_id=m.key_id,
        digest=hashlib.sha256(manifest).digest(),
        manifest=manifest,
        files=MappingProxyType(files),
    )


def load_state_dict(artifact: VerifiedArtifact) -> dict[str, torch.Tensor]:
    """Decode the verified weights (from the bytes that were verified).

    Raises:
        WeightsInvalid: not valid safetensors (DIA-5111).
    """
    return _decode_weights(artifact.files[M.WEIGHTS], Path(artifact.directory))


def load_model(
    directory: str | os.PathLike[str],
    public_key: _keys.PublicKey,
    build: Callable[[dict[str, Any]], nn.Module],
) -> LoadedModel:
    """Verify a model directory, build its module from the config, and load the weights.

    ``build`` receives a copy of the manifest's config and returns a fresh module; the
    weights must fit it exactly: the same tensor names, shapes and dtypes. The module is
    complete before it is returned (and in eval mode); nothing is shared with the caller
    until then.

    ``build`` is called twice, so it must have no side effects: first under
    ``torch.device("meta")``, where a module allocates no memory, and the weights must fit
    that module before the real one is built. The memory a load takes is thus bounded by the
    weights actually present: a config of a few bytes cannot make it allocate a model of
    terabytes (a builder that cannot build on the meta device is only built for real).

    Raises:
        The errors of :func:`verify_model_dir` and :func:`load_state_dict`, and
        WeightsInvalid: ``build`` failed (DIA-5113) or the weights do not fit (DIA-5112).
    """
    artifact = verify_model_dir(directory, public_key)
    state = load_state_dict(artifact)
    where = artifact.directory
    try:
        with torch.device("meta"):
            shadow = build(copy.deepcopy(artifact.config))
    except Exception:  # the real build below raises it with its code, or succeeds
        shadow = None
    if isinstance(shadow, nn.Module):
        _check_fit(shadow, state, where)  # before a single parameter is allocated
    try:
        module = build(copy.deepcopy(artifact.config))
    except Exception as exc:  # the builder is the caller's code: any failure refuses
        raise WeightsInvalid(
            f"{where}: building the model from its config raised {type(exc).__name__}: {exc}",
            diagnostic=codes.ARTIFACT_BUILD_FAILED,
            path=where,
        ) from None
    if not isinstance(module, nn.Module):
        raise WeightsInvalid(
            f"{where}: build returned a {type(module).__name__}, not a torch.nn.Module",
            diagnostic=codes.ARTIFACT_BUILD_FAILED,
            path=where,
        )
    _check_fit(module, state, where)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsInvalid(
            f"{where}: the weights do not fit the model: {exc}",
            diagnostic=codes.ARTIFACT_WEIGHTS_MISMATCH,
            path=where,
        ) from None
    module.eval()
    return LoadedModel(module, artifact)


def _check_fit(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Same names, shapes and dtypes (``load_state_dict`` would silently convert dtypes)."""
    wanted = module.state_dict()
    missing, unexpected = sorted(wanted.keys() - state.keys()), sorted(state.keys() - wanted)
    wrong = [
        f"{k}: {tuple(state[k].shape)} {state[k].dtype} for {tuple(v.shape)} {v.dtype}"
        for k, v in wanted.items()
        if k in state and (state[k].shape != v.shape or state[k].dtype != v.dtype)
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(items[:8])}{' …' if len(items) > 8 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", wrong),
            )
            if items
        ]
        raise WeightsInvalid(
            f"{where}: the weights do not fit the model: {'; '.join(parts)}",
            diagnostic=codes.ARTIFACT_WEIGHTS_MISMATCH,
            path=where,
        )


def _check_signature(
    path: Path, manifest: bytes, signature: bytes, public_key: _keys.PublicKey
) -> None:
    size = _keys.KeyAlgorithm.ECDSA_P384.signature_size
    if len(signature) != size:
        raise ArtifactSignatureInvalid(
            f"{path / M.SIGNATURE} is {len(signature)} bytes; a P-384 signature is {size}",
            diagnostic=codes.ARTIFACT_SIGNATURE_MALFORMED,
            path=str(path),
        )
    if public_key.verify(signature, manifest):
        return
    claimed = M.peek_key_id(manifest)
    if claimed is not None and claimed != public_key.key_id:
        raise ArtifactKeyMismatch(
            f"{path}: signed by key {claimed.hex()[:16]}…, but the trusted key is "
            f"{public_key.key_id.hex()[:16]}…",
            path=str(path),
            expected=public_key.key_id.hex(),
            actual=claimed.hex(),
        )
    raise ArtifactSignatureInvalid(
        f"{path}: the signature does not verify: the manifest or its signature was changed",
        path=str(path),
    )


def _decode_weights(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # the parser's own error type, or anything it raises: refuse
        raise WeightsInvalid(
            f"{path / M.WEIGHTS} is not valid safetensors: {exc}", path=str(path)
        ) from None


def _require_p384(algorithm: _keys.KeyAlgorithm) -> None:
    if algorithm is not _keys.KeyAlgorithm.ECDSA_P384:
        raise KeyFileError(
            f"model artifacts are signed with ECDSA P-384; this is an {algorithm.name} key",
            diagnostic=codes.KEY_ALGORITHM,
        )


# --- files -------------------------------------------------------------------------------


def _manifest_too_large(path: Path, name: str, limit: int) -> ArtifactError:
    return ManifestInvalid(
        f"{path / name} exceeds {limit} bytes; it was not parsed",
        diagnostic=codes.ARTIFACT_MANIFEST_TOO_LARGE,
        path=str(path),
        limit=limit,
    )


def _signature_malformed(path: Path, name: str, limit: int) -> ArtifactError:
    return ArtifactSignatureInvalid(
        f"{path / name} exceeds {limit} bytes; a P-384 signature is 96",
        diagnostic=codes.ARTIFACT_SIGNATURE_MALFORMED,
        path=str(path),
    )


def _grew(size: int) -> Callable[[Path, str, int], ArtifactError]:
    def error(path: Path, name: str, limit: int) -> ArtifactError:
        return ArtifactTampered(
            f"{path / name} is larger than the {size} bytes the manifest says",
            path=str(path),
            file=name,
            expected=size,
        )

    return error


def _io_error(path: Path, exc: OSError) -> ArtifactError:
    return ArtifactError(f"{path}: {exc.strerror or exc}", path=str(path), errno=exc.errno)


class _Dir:
    """A model directory opened once; files are opened relative to it, never through a
    symlink, and must be regular files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise ArtifactFileMissing(
                f"model directory {path} does not exist", path=str(path)
            ) from None
        except OSError as exc:
            raise _io_error(path, exc) from None

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def read(
        self,
        name: str,
        limit: int,
        oversize: Callable[[Path, str, int], ArtifactError] | None = None,
    ) -> bytes:
        """The whole file, read once; ``oversize`` names the error for more than ``limit``
        bytes (by default the file is read whole)."""
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            raise ArtifactFileMissing(
                f"{self.path / name} is missing", path=str(self.path), file=name
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._unsafe(name, "is a symlink") from None
            raise _io_error(self.path / name, exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._unsafe(name, "is not a regular file")
            if oversize is not None and st.st_size > limit:
                raise oversize(self.path, name, limit)
            want = limit + 1 if oversize is not None else st.st_size + 1
            chunks = []
            while want > 0 and (chunk := os.read(fd, min(want, _CHUNK))):
                chunks.append(chunk)
                want -= len(chunk)
        except OSError as exc:
            raise _io_error(self.path / name, exc) from None
        finally:
            os.close(fd)
        data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        if oversize is not None and len(data) > limit:  # it grew after the fstat
            raise oversize(self.path, name, limit)
        return data

    def _unsafe(self, name: str, what: str) -> ManifestInvalid:
        return ManifestInvalid(
            f"{self.path / name} {what}; artifact files must be regular files in the directory",
            diagnostic=codes.ARTIFACT_UNSAFE_PATH,
            path=str(self.path),
            file=name,
        )


def _write_atomic(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` through a temporary file, synced, then renamed into place."""
    tmp = directory / f".{name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, directory / name)
        finally:
            tmp.unlink(missing_ok=True)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise _io_error(directory / name, exc) from None
