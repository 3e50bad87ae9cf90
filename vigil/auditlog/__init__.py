"""The flight recorder: sealed binary audit records in a crash-safe, wear-levelled mmap ring.

Write with :class:`FlightRecorder`, read and verify with :class:`LogReader`. The byte-level
format is specified in ``docs/FORMAT.md``.
"""

from vigil.auditlog._clock import Clock, PosixClock, SystemClock, clock_from_config
from vigil.auditlog._clocksteps import ClockStep, clock_steps
from vigil.auditlog._crc import BACKEND as CRC_BACKEND
from vigil.auditlog._crc import crc32c
from vigil.auditlog._format import Geometry, SegmentInfo, genesis_chain
from vigil.auditlog._powercut import PowerCutDisk
from vigil.auditlog._reader import LogReader, LogRecord, decode_body
from vigil.auditlog._ringconfig import RingConfig, format_image
from vigil.auditlog._seal import ForwardSecureKey, FssSeed, Sealer, fss_generate
from vigil.auditlog._sealcheck import Anchor, SealReport
from vigil.auditlog._storage import FileStorage, Storage
from vigil.auditlog._verify import EXPECTED_KINDS, Finding, VerifyReport
from vigil.auditlog._writer import FlightRecorder, InferenceRow, WriterStatistics

__all__ = [
    "CRC_BACKEND",
    "EXPECTED_KINDS",
    "Anchor",
    "Clock",
    "ClockStep",
    "FileStorage",
    "Finding",
    "FlightRecorder",
    "ForwardSecureKey",
    "FssSeed",
    "Geometry",
    "InferenceRow",
    "LogReader",
    "LogRecord",
    "PosixClock",
    "PowerCutDisk",
    "RingConfig",
    "SealReport",
    "Sealer",
    "SegmentInfo",
    "Storage",
    "SystemClock",
    "VerifyReport",
    "WriterStatistics",
    "clock_from_config",
    "clock_steps",
    "crc32c",
    "decode_body",
    "format_image",
    "fss_generate",
    "genesis_chain",
]
