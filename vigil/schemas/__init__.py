"""Declared structures: on-disk record layouts, enumerations and diagnostic codes.

The construct declarations in this package are the single source of truth for every byte vigil
writes; ``docs/FORMAT.md`` describes them in prose and ``docs/DIAGNOSTICS.md`` the codes.
"""

from vigil._diagnostics import REGISTRY as DIAGNOSTICS
from vigil._diagnostics import Diagnostic, lookup
from vigil.schemas._enums import (
    CallFlags,
    ClockSource,
    Durability,
    LifecycleEvent,
    Outcome,
    RecordType,
    ServedBy,
    State,
)
from vigil.schemas._layout import Layout
from vigil.schemas._records import (
    BODIES,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    AnnotationBody,
    CheckpointBody,
    InferenceBody,
    LifecycleBody,
    Record,
    RecordHeader,
    RecordTrailer,
    RejectedBody,
    SegmentHeader,
    Superblock,
    TransitionBody,
)

__all__ = [
    "BODIES",
    "DIAGNOSTICS",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "AnnotationBody",
    "CallFlags",
    "CheckpointBody",
    "ClockSource",
    "Diagnostic",
    "Durability",
    "InferenceBody",
    "Layout",
    "LifecycleBody",
    "LifecycleEvent",
    "Outcome",
    "Record",
    "RecordHeader",
    "RecordTrailer",
    "RecordType",
    "RejectedBody",
    "SegmentHeader",
    "ServedBy",
    "State",
    "Superblock",
    "TransitionBody",
    "lookup",
]
