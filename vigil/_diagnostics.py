"""The registry of diagnostic codes.

Every error vigil raises and every finding its verifier reports carries one stable code
``DIA-xxxx``. Codes are never renumbered or reused; a retired code stays here, marked as such.
Ranges: 1xxx configuration and usage, 2xxx caller input, 3xxx the flight recorder (3000-3099
errors raised, 3100-3199 findings reported by ``vigil verify``). ``docs/DIAGNOSTICS.md``
documents each one; a test keeps the two in step.

This module imports nothing from vigil, so that ``vigil.errors`` can depend on it; the public
face of the registry is :mod:`vigil.schemas`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One registered diagnostic code.

    Attributes:
        code: the stable identifier, ``DIA-`` and four digits.
        name: an UPPER_CASE name for the condition.
        summary: what went wrong, in one line.
        action: what the operator or caller should do next.
    """

    code: str
    name: str
    summary: str
    action: str

    @property
    def number(self) -> int:
        """The numeric part of the code, as stored in binary records."""
        return int(self.code[4:])


def _d(code: str, name: str, summary: str, action: str) -> Diagnostic:
    return Diagnostic(code, name, summary, action)


CONFIG_INVALID = _d(
    "DIA-1001",
    "CONFIG_INVALID",
    "a configuration value is out of range or inconsistent",
    "fix the named setting; the message states the allowed range",
)
USAGE = _d(
    "DIA-1002",
    "USAGE",
    "a command was called with invalid arguments",
    "run the command with --help and correct the arguments",
)
INVALID_ARGUMENT = _d(
    "DIA-2047",
    "INVALID_ARGUMENT",
    "an argument or input violates its declared contract",
    "correct the value named in the message; the call had no other effect",
)
LOG_IO = _d(
    "DIA-3001",
    "LOG_IO",
    "the flight log file could not be opened, read, written or synced",
    "check the path, permissions and free space; the OS error is in the message",
)
LOG_LOCKED = _d(
    "DIA-3002",
    "LOG_LOCKED",
    "another writer already holds the flight log",
    "stop the other writer, or open the log read-only with LogReader",
)
NOT_A_LOG = _d(
    "DIA-3003",
    "NOT_A_LOG",
    "the file is not a vigil flight log (no superblock magic)",
    "check the path; create a new log with FlightRecorder.create",
)
LOG_VERSION = _d(
    "DIA-3004",
    "LOG_VERSION",
    "the flight log uses a format version this vigil cannot read",
    "read it with the vigil release that wrote it (see docs/FORMAT.md, versioning)",
)
LOG_GEOMETRY = _d(
    "DIA-3005",
    "LOG_GEOMETRY",
    "the file's size or geometry does not match its superblock (truncated or resized)",
    "do not write to it; verify it with `vigil verify` and keep it as evidence",
)
SUPERBLOCK_CORRUPT = _d(
    "DIA-3006",
    "SUPERBLOCK_CORRUPT",
    "both copies of the superblock fail their CRC",
    "the geometry cannot be trusted; keep the file as evidence and start a new log",
)
RECORD_TOO_LARGE = _d(
    "DIA-3010",
    "RECORD_TOO_LARGE",
    "a record does not fit the log's limits",
    "shorten the payload or text; limits are in the message and in docs/FORMAT.md",
)
LOG_CLOSED = _d(
    "DIA-3011",
    "LOG_CLOSED",
    "the flight recorder was used after close()",
    "open the log again with FlightRecorder.open",
)
FREEZE_QUOTA = _d(
    "DIA-3012",
    "FREEZE_QUOTA",
    "freezing these segments would exceed the frozen-segment quota",
    "unfreeze older incident windows first, or create the log with a larger quota",
)
LOG_CORRUPT = _d(
    "DIA-3020",
    "LOG_CORRUPT",
    "a record or header failed an integrity check while reading",
    "run `vigil verify` for the full report; the reader skips what it cannot trust",
)
TORN_TAIL = _d(
    "DIA-3101",
    "TORN_TAIL",
    "incomplete bytes after the last whole record: a crash interrupted a write (expected)",
    "nothing; the torn bytes were never acknowledged and are never returned as records",
)
MEDIA_CORRUPTION = _d(
    "DIA-3102",
    "MEDIA_CORRUPTION",
    "stored bytes changed after they were written (CRC mismatch)",
    "suspect the storage medium; keep the file as evidence and check the device",
)
TAMPERING = _d(
    "DIA-3103",
    "TAMPERING",
    "well-formed bytes that break the hash chain, the order or the identity of the log",
    "treat the log as edited; secure the device and compare with an external anchor",
)
GAP = _d(
    "DIA-3104",
    "GAP",
    "records are missing inside the range the log guarantees to retain",
    "treat as data loss or deletion; see the neighbouring findings for the cause",
)
EVICTED = _d(
    "DIA-3105",
    "EVICTED",
    "old records were overwritten by normal ring wrap-around (expected)",
    "nothing; enlarge the ring or freeze incident windows to keep more history",
)
CLOCK = _d(
    "DIA-3106",
    "CLOCK",
    "monotonic time ran backwards within one boot session",
    "treat as a writer fault or an edited log; compare with the neighbouring findings",
)
SUPERSEDED = _d(
    "DIA-3107",
    "SUPERSEDED",
    "records after a tear were not part of the log: recovery resumed in a later segment",
    "nothing for a crash; if no crash happened, investigate the storage medium",
)
HEADER_COPY = _d(
    "DIA-3108",
    "HEADER_COPY",
    "one copy of a redundant segment header is torn or damaged; the other copy is in force",
    "nothing after a crash; repeated findings suggest failing storage",
)

REGISTRY: dict[str, Diagnostic] = {
    d.code: d
    for d in (
        CONFIG_INVALID,
        USAGE,
        INVALID_ARGUMENT,
        LOG_IO,
        LOG_LOCKED,
        NOT_A_LOG,
        LOG_VERSION,
        LOG_GEOMETRY,
        SUPERBLOCK_CORRUPT,
        RECORD_TOO_LARGE,
        LOG_CLOSED,
        FREEZE_QUOTA,
        LOG_CORRUPT,
        TORN_TAIL,
        MEDIA_CORRUPTION,
        TAMPERING,
        GAP,
        EVICTED,
        CLOCK,
        SUPERSEDED,
        HEADER_COPY,
    )
}
"""Every registered code, by its ``DIA-xxxx`` string."""


def lookup(code: str | int) -> Diagnostic:
    """Return the registered diagnostic for ``"DIA-2047"`` or ``2047``.

    Raises:
        KeyError: the code is not registered.
    """
    key = f"DIA-{code:04d}" if isinstance(code, int) else code
    return REGISTRY[key]
