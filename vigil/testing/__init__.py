"""Fault injection: prove that the safety mechanisms work (as ``trio.testing`` for trio).

:class:`FaultPlan` schedules :class:`Fault` s (exceptions, NaN, hangs, slow calls, wrong
shapes, device-fatal errors) by call index or at random from a seed; :class:`FaultyModel`
(or :func:`inject`) wraps a model so that it misbehaves on schedule. :func:`triggered_model`
is a model whose input picks its fault (``TRIGGERS``), for worker processes and the service;
:func:`build_reference` builds the small reference model the examples serve. The pytest plugin
(:mod:`vigil.testing.pytest_plugin`, installed as a ``pytest11`` entry point) gives every test
a seeded ``fault_plan`` and a ``faulty`` factory. docs/FAULTS.md.
"""

from vigil.testing._faults import Fault, FaultPlan, FaultyModel, inject
from vigil.testing._models import TRIGGERS, build_reference, triggered_model

__all__ = [
    "TRIGGERS",
    "Fault",
    "FaultPlan",
    "FaultyModel",
    "build_reference",
    "inject",
    "triggered_model",
]
