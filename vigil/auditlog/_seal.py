"""Sealing: signed checkpoints and forward-secure sealing of the chain.

Theory of operation
-------------------
The chain makes every record depend on all records before it, but anyone who can write the
file can recompute it. A *checkpoint* is a CHECKPOINT record whose body names the last
record it covers (``covered_seq``, always its own seq - 1) and that record's chain digest, and
seals those facts with a key the file's writer holds and an attacker editing the file does not:

* **signed** (``key``): an Ed25519 or ECDSA P-384 signature. The verifier needs only the
  public key. Whoever holds the private key can sign anything, so a device that is taken over
  while it holds the key can rewrite its whole log;
* **forward-secure** (``fss``): an HMAC-SHA256 tag under the key of the checkpoint's *epoch*.
  Epoch ``e + 1``'s key is a one-way hash of epoch ``e``'s, and the writer erases epoch ``e``'s
  key once its checkpoint is durable. An attacker who takes the running device learns the
  current key and every later one, never an earlier one: the records sealed before the
  compromise stay provably unchanged. The verifier holds the seed and derives every key.

Both can be on at once. What a checkpoint signs is the log's identity and the first 128 bytes
of its body (every field but the tag and the signature); the signature also covers the tag.
Since the body names the chain digest of ``covered_seq``, and that digest depends on every
byte of every record before it, one valid checkpoint authenticates everything before it that
the log still holds. Records after the last checkpoint are *unauthenticated*; the verifier
says how many (see :mod:`vigil.auditlog._sealcheck`).

Epochs number the checkpoints of a log 1, 2, 3 ... without gaps, across restarts. The writer
finds the last one at open; under forward-secure sealing the state file only moves forward
after the checkpoint that used its key is durable, so a crash never leaves the state ahead of
the log (which would look like a dropped epoch).

Key erasure is best effort where Python and storage allow: the current key lives in one
``bytearray`` overwritten in place, and the state file is replaced atomically; copies made by
``hmac``/``hashlib`` internals and old blocks on flash or in filesystem journals are beyond a
library's reach (docs/SECURITY.md says so).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil import _diagnostics as codes
from vigil.auditlog._crc import crc32c
from vigil.errors import ConfigError, KeyFileError
from vigil.keys import PrivateKey, read_secret, write_secret
from vigil.schemas import _records as R
from vigil.schemas._enums import CheckpointReason, RecordType
from vigil.schemas._layout import Layout

__all__ = [
    "ForwardSecureKey",
    "FssSeed",
    "Sealer",
    "checkpoint_message",
    "fss_generate",
]

_CHECKPOINT_DOMAIN = b"vigil/checkpoint/v1\x00"
_FLAG_FSS = 1
_BODY = R.BODIES[RecordType.CHECKPOINT]


def checkpoint_message(log_id: bytes, body: bytes) -> bytes:
    """What a checkpoint's FSS tag covers: domain, log id, body bytes 0-127."""
    return _CHECKPOINT_DOMAIN + log_id + body[: R.CHECKPOINT_SIGNED_PREFIX]


def signed_message(log_id: bytes, body: bytes) -> bytes:
    """What a checkpoint's signature covers: the tagged message and the tag (bytes 0-159)."""
    return _CHECKPOINT_DOMAIN + log_id + body[: R.CHECKPOINT_SIGNED_PREFIX + 32]


# --- the forward-secure ratchet -------------------------------------------------------------


def _h(label: bytes, data: bytes | bytearray) -> bytes:
    return hashlib.sha256(b"vigil/fss/" + label + b"\x00" + bytes(data)).digest()


def fss_id_of(seed: bytes) -> bytes:
    return _h(b"id", seed)[:16]


def first_key(seed: bytes) -> bytes:
    """Epoch 1's key."""
    return _h(b"k1", seed)


def next_key(key: bytes | bytearray) -> bytes:
    """Epoch ``e + 1``'s key from epoch ``e``'s (one way)."""
    return _h(b"next", key)


def fss_tag(key: bytes | bytearray, message: bytes) -> bytes:
    """The HMAC-SHA256 tag of ``message`` under the epoch key's MAC key."""
    return hmac.new(_h(b"mac", key), message, hashlib.sha256).digest()


def _check_file(layout: Layout, data: bytes, path: Path, what: str) -> dict[str, Any]:
    if len(data) != layout.fixed_size:
        raise KeyFileError(f"{path}: not a vigil {what} file (size {len(data)})", path=str(path))
    if crc32c(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise KeyFileError(f"{path}: {what} file is damaged (CRC mismatch)", path=str(path))
    try:
        values = layout.unpack(data)
    except Exception:
        raise KeyFileError(f"{path}: not a vigil {what} file", path=str(path)) from None
    if values["version"] != 1:
        raise KeyFileError(
            f"{path}: {what} file version {values['version']} is not supported",
            path=str(path),
        )
    return values


def _with_crc(body: bytes) -> bytes:
    return body[:-4] + crc32c(body[:-4]).to_bytes(4, "little")


@dataclass(frozen=True)
class FssSeed:
    """The verifier's secret: derives the key of every epoch. Keep it off the device."""

    fss_id: bytes
    seed: bytes

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FssSeed:
        """Raises KeyFileError: DIA-6001 unreadable or not a seed file, DIA-6002 mode."""
        p = Path(path)
        v = _check_file(R.FSS_SEED, read_secret(p, "FSS seed"), p, "FSS seed")
        return cls(bytes(v["fss_id"]), bytes(v["seed"]))

    def save(self, path: str | os.PathLike[str]) -> None:
        raw = R.FSS_SEED.pack({"version": 1, "fss_id": self.fss_id, "seed": self.seed, "crc": 0})
        write_secret(path, _with_crc(raw))

    def keys(self) -> _KeyWalk:
        """A cursor that derives epoch keys in increasing order (O(1) per next epoch)."""
        return _KeyWalk(first_key(self.seed))

    def __repr__(self) -> str:
        return f"FssSeed(fss_id={self.fss_id.hex()})"


class _KeyWalk:
    def __init__(self, k1: bytes) -> None:
        self._k1 = k1
        self._epoch = 1
        self._key = k1

    def key(self, epoch: int) -> bytes:
        """Epoch ``epoch``'s key (>= 1); going backwards restarts from epoch 1."""
        if epoch < self._epoch:
            self._epoch, self._key = 1, self._k1
        while self._epoch < epoch:
            self._key = next_key(self._key)
            self._epoch += 1
        return self._key


class ForwardSecureKey:
    """The device's side of forward-secure sealing: one epoch's key, persisted in a 0600
    state file that is replaced atomically as the key moves forward.

    Args:
        path: the state file (written by :func:`fss_generate`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        v = _check_file(R.FSS_STATE, read_secret(self.path, "FSS state"), self.path, "FSS state")
        self.fss_id: bytes = bytes(v["fss_id"])
        self.log_id: bytes = bytes(v["log_id"])
        self.epoch: int = int(v["epoch"])
        self._key = bytearray(v["key"])
        self._persisted = self.epoch
        self._lock = threading.Lock()

    def bind(self, log_id: bytes) -> None:
        """Tie this sealing chain to one log (its epochs are that log's checkpoints).

        Raises:
            ConfigError: DIA-3014 the state is bound to another log.
        """
        if self.log_id == bytes(16):
            self.log_id = log_id
            self.persist()
        elif self.log_id != log_id:
            raise ConfigError(
                f"{self.path} seals log {self.log_id.hex()}, not {log_id.hex()}: one "
                "forward-secure state per log; generate a new one with `vigil keygen --fss`",
                diagnostic=codes.SEAL_KEY_MISMATCH,
            )

    def advance_to(self, epoch: int) -> None:
        """Ratchet forward to ``epoch`` (never back), erasing the keys passed over."""
        with self._lock:
            while self.epoch < epoch:
                self._key[:] = next_key(self._key)
                self.epoch += 1

    def tag_and_advance(self, message: bytes) -> tuple[int, bytes]:
        """Tag ``message`` with the current epoch's key, then erase it and move to the next
        epoch (in memory; :meth:`persist` writes the state). Returns ``(epoch, tag)``."""
        with self._lock:
            epoch, tag = self.epoch, fss_tag(self._key, message)
            self._key[:] = next_key(self._key)
            self.epoch += 1
            return epoch, tag

    def persist(self) -> None:
        """Replace the state file with the current epoch and key (atomic, durable)."""
        with self._lock:
            if self._persisted == self.epoch and self.path.exists():
                return
            raw = R.FSS_STATE.pack(
                {
                    "version": 1,
                    "fss_id": self.fss_id,
                    "log_id": self.log_id,
                    "epoch": self.epoch,
                    "key": bytes(self._key),
                    "crc": 0,
                }
            )
            write_secret(self.path, _with_crc(raw), replace=True)
            self._persisted = self.epoch

    def __repr__(self) -> str:
        return f"ForwardSecureKey(fss_id={self.fss_id.hex()}, epoch={self.epoch})"


def fss_generate(state_path: str | os.PathLike[str], seed_path: str | os.PathLike[str]) -> bytes:
    """Create a forward-secure sealing chain: the device's state file (epoch 1's key) and the
    verifier's seed file, both 0600, neither overwritten. Returns the chain's ``fss_id``.

    Raises:
        KeyFileError: DIA-6003 a file exists; DIA-6001 it cannot be written.
    """
    seed = secrets.token_bytes(32)
    fss_id = fss_id_of(seed)
    FssSeed(fss_id, seed).save(seed_path)
    raw = R.FSS_STATE.pack(
        {
            "version": 1,
            "fss_id": fss_id,
            "log_id": bytes(16),
            "epoch": 1,
            "key": first_key(seed),
            "crc": 0,
        }
    )
    write_secret(state_path, _with_crc(raw))
    return fss_id


# --- the writer's sealer ---------------------------------------------------------------------


class Sealer:
    """What a :class:`~vigil.auditlog.FlightRecorder` needs to seal checkpoints.

    Args:
        key: the device's signing key (Ed25519 or P-384), or None.
        fss: the forward-secure state, or None. At least one of the two.
        every_records: seal after this many records (default 4096).
        every_ms: and when this long has passed since the last checkpoint, checked at the
            next append (0 = only by count). Default 1000.

    Raises:
        ConfigError: DIA-1001 neither key nor fss, or an interval out of range.
    """

    def __init__(
        self,
        key: PrivateKey | None = None,
        *,
        fss: ForwardSecureKey | None = None,
        every_records: int = 4096,
        every_ms: int = 1000,
    ) -> None:
        if key is None and fss is None:
            raise ConfigError("Sealer needs a signing key, a forward-secure state, or both")
        if not 1 <= every_records <= 2**31:
            raise ConfigError(f"every_records={every_records}: must be in [1, 2**31]")
        if not 0 <= every_ms <= 2**31:
            raise ConfigError(f"every_ms={every_ms}: must be in [0, 2**31] milliseconds")
        self.key = key
        self.fss = fss
        self.every_records = every_records
        self.every_ms = every_ms
        self._pending: int | None = None  # seq of a checkpoint whose key is not yet erased on disk

    @property
    def superblock_flags(self) -> int:
        return (R.SB_SIGNED if self.key else 0) | (R.SB_FSS if self.fss else 0)

    @property
    def key_id(self) -> bytes:
        return self.key.key_id if self.key else bytes(32)

    def body(
        self,
        *,
        log_id: bytes,
        covered_seq: int,
        chain: bytes,
        prev_checkpoint_seq: int,
        epoch: int,
        real_ns: int,
        reason: CheckpointReason,
    ) -> bytes:
        """The CHECKPOINT body sealing ``chain`` as the digest of record ``covered_seq``.
        Under forward-secure sealing ``epoch`` must equal the state's epoch."""
        values = {
            "sig_alg": int(self.key.algorithm) if self.key else 0,
            "flags": _FLAG_FSS if self.fss else 0,
            "reason": reason,
            "every_records": self.every_records,
            "every_ms": self.every_ms,
            "covered_seq": covered_seq,
            "prev_checkpoint_seq": prev_checkpoint_seq,
            "epoch": epoch,
            "real_ns": real_ns,
            "chain": chain,
            "key_id": self.key_id,
            "fss_id": self.fss.fss_id if self.fss else bytes(16),
            "fss_tag": bytes(32),
            "signature": b"",
        }
        if self.fss is not None:
            if self.fss.epoch != epoch:  # the writer keeps the two in step; never seal out of it
                raise ConfigError(f"FSS state is at epoch {self.fss.epoch}, checkpoint {epoch}")
            unsigned = _BODY.pack(values)
            _, values["fss_tag"] = self.fss.tag_and_advance(checkpoint_message(log_id, unsigned))
        if self.key is not None:
            unsigned = _BODY.pack(values)
            values["signature"] = self.key.sign(signed_message(log_id, unsigned))
        return _BODY.pack(values)

    def sealed(self, seq: int) -> None:
        """The writer appended the checkpoint ``seq``; its epoch key must go once it is
        durable (:meth:`durable`)."""
        if self.fss is not None:
            self._pending = seq

    def durable(self, seq: int) -> None:
        """Records up to ``seq`` are durable: erase used epoch keys from disk."""
        pending = self._pending
        if self.fss is not None and pending is not None and pending <= seq:
            self._pending = None
            self.fss.persist()
