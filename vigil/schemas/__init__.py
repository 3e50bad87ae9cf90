"""Declared structures: on-disk record layouts, enumerations and diagnostic codes.

The construct declarations in this package are the single source of truth for every byte vigil
writes; ``docs/FORMAT.md`` describes them in prose and ``docs/DIAGNOSTICS.md`` the codes.
"""

import importlib
from typing import TYPE_CHECKING, Any

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
from vigil.schemas._result import Result

if TYPE_CHECKING:
    from vigil.schemas._contracts import Contract, Rule, TensorSpec, perception_contract

_LAZY = frozenset({"Contract", "Rule", "TensorSpec", "perception_contract"})
"""Imported on first use: they need torch (~1.4 s to import), which the flight recorder, its
reader and the ``vigil`` command do not."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module("vigil.schemas._contracts"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BODIES",
    "DIAGNOSTICS",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "AnnotationBody",
    "CallFlags",
    "CheckpointBody",
    "ClockSource",
    "Contract",
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
    "Result",
    "Rule",
    "SegmentHeader",
    "ServedBy",
    "State",
    "Superblock",
    "TensorSpec",
    "TransitionBody",
    "lookup",
    "perception_contract",
]
