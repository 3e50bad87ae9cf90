"""The stand-in supervisor of the network fronts' harnesses (``fuzz_kserve``, ``fuzz_grpc``):
it answers ``2 * x`` and remembers what it was given, so a harness can check what reached the
model. Imported inside a harness's ``instrumenting`` block, after it, like the code under test."""

from __future__ import annotations

from typing import Any

from vigil.schemas import Outcome, Result, ServedBy, State


class Doubling:
    """Answers ``2 * x`` and remembers what it was given."""

    def __init__(self) -> None:
        self.given: list[Any] = []

    def infer(self, x: Any, **_: Any) -> Result:
        self.given.append(x)
        return Result(
            2 * x, State.NORMAL, ServedBy.PRIMARY, Outcome.OK, 1, None, "", 0, 0, b"\0" * 16
        )
