"""Loading signed models into the supervisor, audited, and swapping them atomically.

Theory of operation
-------------------
:func:`load_signed_model` loads a model directory through :func:`vigil.model.load_model` and
records the outcome in the flight log: a LIFECYCLE MODEL_LOADED record naming the directory,
model name, version, digest and signer, or MODEL_REFUSED with the diagnostic code and reason.

:class:`ModelReloader` watches a model directory for a new version. A check (its thread's,
every ``interval`` seconds, or :meth:`ModelReloader.check_now`) compares the signature file's
``stat``; when it changed, the candidate goes through four gates, all off to the side on the
checking thread while the supervisor serves the old model:

1. **verify and load**: signature, manifest and every file (the loader's DIA-51xx refusals);
   the module is built and its weights loaded completely before anyone can see it;
2. **same version?** a candidate whose digest is the serving one is not swapped again;
3. **warm up**: a few calls on the warm-up inputs; an exception or a NaN/Inf refuses it
   (DIA-5120);
4. **probe**: the known answer (:class:`~vigil.supervisor.KnownAnswer`) and/or the caller's
   check; a wrong answer refuses it (DIA-5121).

Only then does :meth:`Supervisor.swap_primary` replace the (model, digest) pair in one
assignment under the supervisor's lock, recording MODEL_SWAPPED (old and new digest). Any
refusal keeps the old model and records RELOAD_FAILED with the code and reason, once per
change of the signature file. Guarantee: every call runs exactly one complete model, and its
INFERENCE record names that model's digest.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vigil import _diagnostics as codes
from vigil import keys as _keys
from vigil.auditlog import FlightRecorder
from vigil.errors import (
    CandidateRefused,
    ConfigError,
    InvalidInput,
    KeyFileError,
    LogClosed,
    VigilError,
)
from vigil.model import SIGNATURE, LoadedModel, VerifiedArtifact, load_model
from vigil.schemas import LifecycleEvent
from vigil.supervisor import _tensors as T
from vigil.supervisor._supervisor import KnownAnswer, Supervisor

__all__ = [
    "ModelReloader",
    "ReloadResult",
    "ReloadStatistics",
    "ReloadStatus",
    "load_signed_model",
]

_MAX_REASON = 2000
_NEVER = object()  # the signature's stat before the first check

Build = Callable[[dict[str, Any]], nn.Module]


def artifact_detail(artifact: VerifiedArtifact) -> dict[str, Any]:
    """The facts a LIFECYCLE record's detail states about a verified artifact."""
    return {
        "dir": artifact.directory,
        "name": artifact.name,
        "version": artifact.version,
        "model_digest": artifact.digest.hex(),
        "key_id": artifact.key_id.hex(),
    }


def _refusal(exc: BaseException) -> tuple[str, str]:
    """The code and reason recorded for a refusal; unexpected failures count as I/O."""
    if isinstance(exc, VigilError):
        return exc.code, str(exc)[:_MAX_REASON]
    return codes.ARTIFACT_IO.code, f"unexpected {T.describe(exc, _MAX_REASON)}"


def load_signed_model(
    directory: str | os.PathLike[str],
    public_key: _keys.PublicKey,
    build: Build,
    *,
    log: FlightRecorder,
) -> LoadedModel:
    """Load a signed model directory and record the outcome in ``log``.

    Pass the result to the supervisor as ``Supervisor(loaded.module,
    model_digest=loaded.digest, log=log)`` so that its records name the artifact.

    Returns:
        The loaded model (after a LIFECYCLE MODEL_LOADED record).

    Raises:
        ArtifactError: the refusal (after a LIFECYCLE MODEL_REFUSED record with its code);
            see :func:`vigil.model.load_model` for the codes.
        KeyFileError: ``public_key`` is not a P-384 key (recorded as a refusal too).
    """
    try:
        loaded = load_model(directory, public_key, build)
    except Exception as exc:  # recorded whatever it is, then the caller gets it
        code, reason = _refusal(exc)
        log.record_lifecycle(
            LifecycleEvent.MODEL_REFUSED,
            {"dir": os.fspath(directory), "code": code, "reason": reason},
        )
        raise
    log.record_lifecycle(LifecycleEvent.MODEL_LOADED, artifact_detail(loaded.artifact))
    return loaded


@enum.unique
class ReloadStatus(enum.Enum):
    """What one check of the model directory did."""

    UNCHANGED = "unchanged"  # the signature file did not change: nothing was read
    CURRENT = "current"  # a valid version, already serving (same digest): not swapped again
    SWAPPED = "swapped"  # the candidate passed every gate and serves now
    REFUSED = "refused"  # the candidate was refused; the old model serves on


@dataclass(frozen=True)
class ReloadResult:
    """The outcome of one check (see :class:`ReloadStatus`).

    Attributes:
        status: what happened.
        digest: the candidate's digest, when it verified.
        old_digest: the digest replaced, for SWAPPED.
        code: the refusal's ``DIA-xxxx`` code, for REFUSED.
        reason: the refusal's message, for REFUSED.
    """

    status: ReloadStatus
    digest: bytes | None = None
    old_digest: bytes | None = None
    code: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class ReloadStatistics:
    """A snapshot of a :class:`ModelReloader`'s counters."""

    checks: int
    swaps: int
    refusals: int
    last: ReloadResult | None


class ModelReloader:
    """Watches a signed model directory and hot-swaps the supervisor's primary.

    Args:
        supervisor: the supervisor whose primary is replaced (it keeps owning its log).
        directory: the model directory (a symlink to it may be re-pointed to publish).
        public_key: the trusted P-384 key.
        build: makes a fresh module from the manifest's config.
        known_answer: the probe's fixed input and expected output.
        check: a caller's probe, ``check(module)``: returning False or raising refuses the
            candidate. At least one of ``known_answer`` and ``check`` is required.
        warmup: warm-up inputs; by default the known answer's input.
        warmup_calls: how many times each warm-up input runs.
        interval: seconds between checks on the reloader's thread (see :meth:`start`).

    Raises:
        ConfigError: no probe, no warm-up input, or a non-positive interval.
        KeyFileError: ``public_key`` is not an ECDSA P-384 key (DIA-6004).
    """

    def __init__(
        self,
        supervisor: Supervisor,
        directory: str | os.PathLike[str],
        public_key: _keys.PublicKey,
        build: Build,
        *,
        known_answer: KnownAnswer | None = None,
        check: Callable[[nn.Module], bool | None] | None = None,
        warmup: Sequence[Any] = (),
        warmup_calls: int = 2,
        interval: float = 1.0,
    ) -> None:
        if known_answer is None and check is None:
            raise ConfigError(
                "a reload needs a probe: pass known_answer=KnownAnswer(...) or check=..."
            )
        self._warmup = list(warmup) or ([known_answer.input] if known_answer else [])
        if not self._warmup:
            raise ConfigError("pass warmup=[input, ...]: the candidate must run before it serves")
        if not isinstance(warmup_calls, int) or warmup_calls < 1:
            raise ConfigError(f"warmup_calls={warmup_calls!r}: must be at least 1")
        if not interval > 0:
            raise ConfigError(f"interval={interval!r}: must be positive (seconds)")
        if public_key.algorithm is not _keys.KeyAlgorithm.ECDSA_P384:
            raise KeyFileError(
                f"model artifacts are signed with ECDSA P-384; this is an "
                f"{public_key.algorithm.name} key",
                diagnostic=codes.KEY_ALGORITHM,
            )
        self.supervisor = supervisor
        self.directory = os.fspath(directory)
        self._public_key = public_key
        self._build = build
        self._known = known_answer
        self._check = check
        self._warmup_calls = warmup_calls
        self.interval = interval
        self._seen: object = _NEVER
        self._checking = threading.Lock()  # one check at a time: the thread's or a caller's
        self._changed = threading.Condition()
        self._checks = self._swaps = self._refusals = 0
        self._last: ReloadResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- checking ------------------------------------------------------------------------

    def check_now(self) -> ReloadResult:
        """Check the directory once, now, on the calling thread (tests call this directly).

        Returns:
            What the check did; a refusal is returned (and recorded), never raised.
        """
        with self._checking:
            seen = self._signature_stat()
            if seen == self._seen:
                result = ReloadResult(ReloadStatus.UNCHANGED)
            else:
                self._seen = seen  # a refused version is reported once, not at every check
                result = self._reload()
            with self._changed:
                self._checks += 1
                self._swaps += result.status is ReloadStatus.SWAPPED
                self._refusals += result.status is ReloadStatus.REFUSED
                self._last = result
                self._changed.notify_all()
            return result

    def _signature_stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(os.path.join(self.directory, SIGNATURE))
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _reload(self) -> ReloadResult:
        try:
            loaded = load_model(self.directory, self._public_key, self._build)
        except Exception as exc:  # fail closed: whatever went wrong, the old model serves
            return self._refuse({"dir": self.directory}, None, exc)
        detail = artifact_detail(loaded.artifact)
        if loaded.digest == self.supervisor.model_digest:
            return ReloadResult(ReloadStatus.CURRENT, loaded.digest)
        try:
            self._probe(loaded.module)
        except Exception as exc:  # a candidate failing in any way is refused
            return self._refuse(detail, loaded.digest, exc)
        old = self.supervisor.swap_primary(
            loaded.module, loaded.digest, detail={**detail, "reloaded": True}
        )
        return ReloadResult(ReloadStatus.SWAPPED, loaded.digest, old)

    def _refuse(
        self, detail: dict[str, Any], digest: bytes | None, exc: BaseException
    ) -> ReloadResult:
        code, reason = _refusal(exc)
        self.supervisor.log.record_lifecycle(
            LifecycleEvent.RELOAD_FAILED,
            {
                **detail,
                "serving_digest": self.supervisor.model_digest.hex(),
                "code": code,
                "reason": reason,
            },
        )
        return ReloadResult(ReloadStatus.REFUSED, digest, code=code, reason=reason)

    def _probe(self, module: nn.Module) -> None:
        """Warm the candidate up and probe it; raise :class:`CandidateRefused` if it fails."""
        with torch.no_grad():
            try:
                for x in self._warmup:
                    for _ in range(self._warmup_calls):
                        T.check_finite(module(x), field="warm-up output")
            except InvalidInput as exc:
                raise CandidateRefused(
                    f"{self.directory}: warm-up output: {exc.message}",
                    diagnostic=codes.RELOAD_WARMUP_FAILED,
                ) from None
            except Exception as exc:
                raise CandidateRefused(
                    f"{self.directory}: warm-up call raised {T.describe(exc)}",
                    diagnostic=codes.RELOAD_WARMUP_FAILED,
                ) from None
            if self._known is not None:
                try:
                    right = self._known.matches(module(self._known.fresh_input()))
                except Exception as exc:
                    raise CandidateRefused(
                        f"{self.directory}: the known-answer probe raised {T.describe(exc)}"
                    ) from None
                if not right:
                    raise CandidateRefused(
                        f"{self.directory}: the known-answer probe returned another answer"
                    )
        if self._check is not None:
            try:
                ok = self._check(module)
            except Exception as exc:
                raise CandidateRefused(
                    f"{self.directory}: the check raised {T.describe(exc)}"
                ) from None
            if ok is False:
                raise CandidateRefused(f"{self.directory}: the check refused the candidate")

    # --- the watching thread -------------------------------------------------------------

    def start(self) -> ModelReloader:
        """Check every ``interval`` seconds on a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="vigil-reloader", daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.check_now()
        except LogClosed:  # the supervisor closed its log: nothing more to guard
            return

    def wait_checks(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` checks have completed since construction.

        Returns:
            True when reached, False when ``timeout`` seconds passed first.
        """
        with self._changed:
            return self._changed.wait_for(lambda: self._checks >= count, timeout)

    def statistics(self) -> ReloadStatistics:
        """A consistent snapshot of the counters and the last result."""
        with self._changed:
            return ReloadStatistics(self._checks, self._swaps, self._refusals, self._last)

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread, waiting up to ``timeout`` seconds (None: no limit) for a check
        in progress to finish. A candidate that hangs in its warm-up holds the (daemon)
        thread, never the supervisor; close the supervisor after the reloader."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> ModelReloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
