"""The answer to one call, as the supervisor returns it and the service's client receives it.

One type on both sides of the socket: :meth:`vigil.supervisor.Supervisor.infer` builds it,
the protocol's RESULT frame carries its fields (docs/PROTOCOL.md), and
:meth:`vigil.service.Client.infer` rebuilds it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from vigil._diagnostics import REGISTRY, Diagnostic
from vigil.schemas._enums import Outcome, ServedBy, State


class Result(NamedTuple):
    """The answer to one ``infer`` call, and how it came about (immutable).

    Attributes:
        output: what the caller may use (through the client: CPU tensors sharing the memory
            of the received frame).
        state: the state machine's state when the call was routed.
        served_by: who produced ``output`` (PRIMARY, FALLBACK, LAST_GOOD, CONSTANT).
        outcome: how the primary's attempt ended, when it ran; else OK.
        seq: the sequence number of the call's INFERENCE record.
        code: the diagnostic explaining a non-OK outcome or a fallback answer, or None
            (``code.code`` is the ``DIA-xxxx`` string).
        reason: the same, in words.
        answer_age_ns: age of a LAST_GOOD answer (0 otherwise).
        latency_ns: time inside ``infer`` (the supervisor's, not the socket's).
        request_id: the 16-byte id the flight log holds for this call.
    """

    output: Any
    state: State
    served_by: ServedBy
    outcome: Outcome
    seq: int
    code: Diagnostic | None
    reason: str
    answer_age_ns: int
    latency_ns: int
    request_id: bytes

    @property
    def from_primary(self) -> bool:
        return self.served_by is ServedBy.PRIMARY


def diagnostic_of(code: str) -> Diagnostic:
    """The registered diagnostic for ``code``; for a code this vigil does not know (a newer
    peer's), a stand-in that keeps the code, so that nothing received is dropped."""
    known = REGISTRY.get(code)
    if known is not None:
        return known
    return Diagnostic(code, "UNKNOWN", "a code this version of vigil does not know", "")
