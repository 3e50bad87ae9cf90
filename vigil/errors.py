"""vigil's one error hierarchy.

Every exception vigil raises derives from :class:`VigilError` and carries a stable diagnostic
code (``DIA-xxxx``, registered in :mod:`vigil._diagnostics` and published by
:mod:`vigil.schemas`) plus the structured facts of the failure as attributes, so that callers
can branch on the class or the code and tools can log the fields without parsing the message.
Messages say what was wrong, where, and what to do.
"""

from __future__ import annotations

from typing import Any

from vigil import _diagnostics as codes

__all__ = [
    "ArtifactError",
    "ArtifactFileMissing",
    "ArtifactKeyMismatch",
    "ArtifactSignatureInvalid",
    "ArtifactTampered",
    "CandidateRefused",
    "ClockUnavailable",
    "ConfigError",
    "DeviceFatal",
    "ExportDestinationError",
    "ExportForked",
    "ExportKeyMismatch",
    "ExportSourceInvalid",
    "ExtraMissing",
    "FallbackFailed",
    "FleetError",
    "FreezeQuotaExceeded",
    "InputRefused",
    "InvalidArgument",
    "InvalidInput",
    "KeyFileError",
    "LogClosed",
    "LogCorrupt",
    "LogError",
    "LogGeometryError",
    "LogIOError",
    "LogLocked",
    "LogVersionError",
    "ManifestInvalid",
    "NotARegularFile",
    "NotAVigilLog",
    "ProtocolError",
    "RecordTooLarge",
    "RemoteModelError",
    "ReportError",
    "ServiceBusy",
    "ServiceConfigError",
    "ServiceError",
    "ServiceUnreachable",
    "SimulatedPowerCut",
    "SuperblockCorrupt",
    "Unavailable",
    "UnsignedArtifact",
    "UsageError",
    "VigilError",
    "WeightsInvalid",
    "WorkerBusy",
    "WorkerError",
    "WorkerLost",
    "WorkerTimeout",
    "WorkerUnavailable",
]


class VigilError(Exception):
    """Base of every error vigil raises.

    Attributes:
        diagnostic: the registered :class:`~vigil.schemas.Diagnostic`.
        code: its ``DIA-xxxx`` string.
        context: the structured facts passed as keyword arguments (also set as attributes).
    """

    diagnostic: codes.Diagnostic

    def __init__(
        self, message: str, *, diagnostic: codes.Diagnostic | None = None, **context: Any
    ) -> None:
        """``diagnostic`` replaces the class's code by a more specific one of the same
        family (an :class:`InvalidInput` for a shape mismatch carries DIA-2101)."""
        super().__init__(message)
        if diagnostic is not None:
            self.diagnostic = diagnostic
        self.message = message
        self.context = context
        for key, value in context.items():
            setattr(self, key, value)

    @property
    def code(self) -> str:
        return self.diagnostic.code

    def __str__(self) -> str:
        return f"{self.diagnostic.code} {self.diagnostic.name}: {self.message}"


class ConfigError(VigilError, ValueError):
    """A configuration value is out of range or inconsistent."""

    diagnostic = codes.CONFIG_INVALID


class UsageError(VigilError):
    """A command-line call with invalid arguments."""

    diagnostic = codes.USAGE


class NotARegularFile(UsageError):
    """A file vigil reads is a named pipe, directory, device or socket (DIA-1010).

    Reading one could block forever (a pipe with no writer) or never end (a device), so it
    is refused before any read. Attributes ``path`` and ``kind``.
    """

    diagnostic = codes.NOT_A_REGULAR_FILE


class InvalidArgument(VigilError, ValueError):
    """An argument violates its declared contract (DIA-2047, as in the seed SOP)."""

    diagnostic = codes.INVALID_ARGUMENT


class InvalidInput(InvalidArgument):
    """A tensor violates its contract: DIA-2047, or a specific DIA-21xx code.

    Attributes ``field`` (which tensor, when named) and ``rule`` (which check). A bad input
    raised to the caller of ``Supervisor.infer`` is recorded as a REJECTED record and, by
    default, not held against the model.
    """

    diagnostic = codes.INVALID_ARGUMENT


class InputRefused(InvalidInput):
    """A model refused its input at its own boundary, before any layer ran (the DIA-50xx codes
    of :class:`vigil.model.Decoder`, or a code of the model's own).

    Raise it from a model's input validation. The supervisor then treats the call like one that
    broke the input contract: a REJECTED record with this code, the error raised to the caller,
    and -- by default -- nothing held against the model, so a bad client cannot trip the state
    machine. Only input checks may raise it: a model that finds its own *output* wrong raises
    something else (that is the model's failure, and it counts).
    """


class Unavailable(VigilError):
    """No trustworthy answer exists for this call (DIA-4009); ``reason`` says why.

    Raised by ``Supervisor.infer`` when the primary may not or cannot answer and no fallback
    can. The call is still recorded, as an INFERENCE record served by NONE.
    """

    diagnostic = codes.UNAVAILABLE


class FallbackFailed(VigilError):
    """A fallback cannot answer this call (DIA-4011); the next one in the chain is tried.

    Raise it from a custom fallback's ``answer``; ``reason`` is recorded.
    """

    diagnostic = codes.FALLBACK_FAILED


class DeviceFatal(VigilError, RuntimeError):
    """A process-fatal device error: after it the device context cannot be trusted.

    On a GPU a device-side assert poisons every later CUDA call in the process. vigil raises
    this class itself only for fault injection on the CPU, where no device can be poisoned;
    the runtime classifies real sticky CUDA errors the same way.
    """

    diagnostic = codes.DEVICE_FATAL


class KeyFileError(VigilError):
    """A key file could not be used (unreadable, unprotected, existing, wrong algorithm)."""

    diagnostic = codes.KEY_FILE


class ArtifactError(VigilError):
    """A model artifact was refused or could not be read or written (DIA-5110 for I/O).

    Every refusal of the artifact loader is a subclass with its own code. Attributes:
    ``path`` (the model directory or the file concerned) and, where known, ``file``.
    """

    diagnostic = codes.ARTIFACT_IO


class UnsignedArtifact(ArtifactError):
    """The model directory has no ``manifest.sig`` (DIA-5101)."""

    diagnostic = codes.ARTIFACT_UNSIGNED


class ArtifactSignatureInvalid(ArtifactError):
    """The manifest's signature does not verify (DIA-5102), or is not a signature at all:
    wrong length (DIA-5104)."""

    diagnostic = codes.ARTIFACT_SIGNATURE_INVALID


class ArtifactKeyMismatch(ArtifactError):
    """The manifest names another signer than the trusted public key (DIA-5103).

    Attributes ``expected`` and ``actual``: the two key ids, hex.
    """

    diagnostic = codes.ARTIFACT_WRONG_KEY


class ArtifactFileMissing(ArtifactError):
    """A file the manifest names, or the manifest itself, is absent (DIA-5105)."""

    diagnostic = codes.ARTIFACT_FILE_MISSING


class ArtifactTampered(ArtifactError):
    """A file's size or SHA-256 differs from the signed manifest (DIA-5106).

    Attributes ``file``, ``expected`` and ``actual`` (sizes, or digests in hex).
    """

    diagnostic = codes.ARTIFACT_TAMPERED


class ManifestInvalid(ArtifactError):
    """The manifest is malformed (DIA-5107), oversize (DIA-5108) or names a path outside
    the model directory (DIA-5109)."""

    diagnostic = codes.ARTIFACT_MANIFEST_INVALID


class WeightsInvalid(ArtifactError):
    """The weights are not valid safetensors (DIA-5111), do not fit the model (DIA-5112), or
    the model could not be built from the manifest's config (DIA-5113)."""

    diagnostic = codes.ARTIFACT_WEIGHTS_INVALID


class CandidateRefused(ArtifactError):
    """A verified candidate model failed its warm-up (DIA-5120) or probe (DIA-5121) during a
    hot reload; the serving model was kept."""

    diagnostic = codes.RELOAD_PROBE_FAILED


class LogError(VigilError):
    """Base of the flight recorder's errors. Attribute ``path`` names the file when known."""

    diagnostic = codes.LOG_IO


class LogIOError(LogError):
    """The operating system refused an open, read, write or sync; ``errno`` is kept."""

    diagnostic = codes.LOG_IO


class LogLocked(LogError):
    """Another writer holds the exclusive lock on the log."""

    diagnostic = codes.LOG_LOCKED


class NotAVigilLog(LogError):
    """Neither superblock copy carries the vigil magic."""

    diagnostic = codes.NOT_A_LOG


class LogVersionError(LogError):
    """The superblock announces a format major version this code cannot read."""

    diagnostic = codes.LOG_VERSION


class LogGeometryError(LogError):
    """File size or superblock geometry is inconsistent (e.g. a truncated file)."""

    diagnostic = codes.LOG_GEOMETRY


class SuperblockCorrupt(LogError):
    """Both superblock copies carry the magic but fail their CRC."""

    diagnostic = codes.SUPERBLOCK_CORRUPT


class RecordTooLarge(LogError, InvalidArgument):
    """A record exceeds the body-size or segment limits. Attributes ``size`` and ``limit``."""

    diagnostic = codes.RECORD_TOO_LARGE


class LogClosed(LogError):
    """The recorder was used after :meth:`close`."""

    diagnostic = codes.LOG_CLOSED


class FreezeQuotaExceeded(LogError):
    """Freezing would exceed the quota. Attributes ``requested``, ``frozen`` and ``quota``."""

    diagnostic = codes.FREEZE_QUOTA


class ClockUnavailable(LogError):
    """The configured clock source (CLOCK_TAI, a PTP device) cannot be opened or read."""

    diagnostic = codes.CLOCK_UNAVAILABLE


class LogCorrupt(LogError):
    """A record failed an integrity check in a strict read.

    Attributes: ``seq``, ``segment``, ``offset``, ``expected`` and ``actual`` where known.
    """

    diagnostic = codes.LOG_CORRUPT


class SimulatedPowerCut(BaseException):
    """Raised by the power-cut emulator when the emulated power fails during a sync.

    Deliberately *not* a :class:`VigilError` (nor an ``Exception``): nothing in the writer may
    catch it, just as nothing runs after a real power cut. Tests catch it and recover from
    the emulated disk image.
    """


class WorkerError(VigilError):
    """The family of worker-process failures: a worker could not be started, loaded or
    reached (DIA-70xx, this class itself), or a call on it was lost, timed out, found it busy
    or raised (the subclasses). Catch it to handle everything process isolation adds."""

    diagnostic = codes.WORKER_FAILED


class WorkerUnavailable(WorkerError):
    """No worker process is ready to take the call (DIA-7004): both were lost and a
    replacement is still starting."""

    diagnostic = codes.NO_WORKER


class WorkerLost(WorkerError):
    """The worker process died during the call (DIA-4007); the standby took over."""

    diagnostic = codes.WORKER_LOST


class WorkerTimeout(WorkerError):
    """No answer within the deadline (DIA-4002): the worker was killed and replaced."""

    diagnostic = codes.DEADLINE_MISSED


class WorkerBusy(WorkerError):
    """Overload (DIA-7010): no worker came free within the call's deadline, or too many calls
    were queued already. No worker saw the call; it is not the model's failure."""

    diagnostic = codes.WORKER_OVERLOADED


class RemoteModelError(WorkerError):
    """The model raised inside its worker process (DIA-4001, or the code it was classified
    as there: DIA-4005 out of memory, DIA-4006 process-fatal). Attribute ``outcome``: the
    worker's classification (a ``vigil.schemas.Outcome``). After a process-fatal error the
    worker has already been replaced."""

    diagnostic = codes.MODEL_ERROR
    outcome: Any


class ProtocolError(VigilError):
    """A frame on the service socket broke the protocol (DIA-71xx); ``docs/PROTOCOL.md``."""

    diagnostic = codes.PROTOCOL_ERROR


class ServiceError(VigilError):
    """The family of a client's failures to get an answer from ``vigil serve`` that are not
    the peer's protocol violations: unreachable, busy (DIA-711x)."""

    diagnostic = codes.SERVICE_UNREACHABLE


class ServiceUnreachable(ServiceError):
    """The service socket could not be reached, or the connection was lost or timed out
    (DIA-7112). A call cut off after it was sent may have been served and recorded: look its
    ``request_id`` up in the flight log before retrying a call that must not run twice."""

    diagnostic = codes.SERVICE_UNREACHABLE


class ServiceBusy(ServiceUnreachable):
    """The service refused the connection or request (too many clients, or shutting down;
    DIA-7111). Nothing was done: retry later or elsewhere."""

    diagnostic = codes.SERVICE_BUSY


class ServiceConfigError(ConfigError):
    """The service configuration is invalid (DIA-72xx); the message names the key."""

    diagnostic = codes.SERVICE_CONFIG


class FleetError(VigilError):
    """The family of :mod:`vigil.fleet` failures: exporting verified logs, fleet reports."""

    diagnostic = codes.FLEET_FAILED


class ExtraMissing(FleetError, ImportError):
    """An optional package (pyarrow, duckdb, mcap, asammdf, pyspark) is not installed.
    Attributes ``package`` and ``extra``."""

    diagnostic = codes.FLEET_EXTRA_MISSING


class ExportSourceInvalid(FleetError):
    """A path given to export is not a regular file. Attribute ``path``."""

    diagnostic = codes.EXPORT_NOT_A_FILE


class ExportKeyMismatch(FleetError):
    """No key or seed given matches the log's sealing key. Attributes ``path``, ``key_id``."""

    diagnostic = codes.EXPORT_KEY_MISMATCH


class ExportForked(FleetError):
    """A log's log id is already in the export, with other records at the same seq (a fork of
    the log, not a later copy of it): not exported. Attributes ``path``, ``seq``."""

    diagnostic = codes.EXPORT_FORKED


class ExportDestinationError(FleetError):
    """The export directory cannot be used. Attribute ``path``."""

    diagnostic = codes.EXPORT_DESTINATION


class ReportError(FleetError):
    """A fleet report failed: a query (DIA-8007) or a directory with no export (DIA-8008)."""

    diagnostic = codes.REPORT_QUERY
