"""The safety requirements (tests/safety/requirements.toml) and their tests.

Every test that proves a requirement carries ``@pytest.mark.requirement("SR-xxx")``. The hooks
in conftest.py collect what each requirement's tests did in this run and :func:`findings` says
what is wrong: a marker naming no requirement, a requirement without a passing test, or the
data saying ``runs = "slow"`` for a requirement one of whose tests runs by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tomllib

PATH = Path(__file__).parent / "safety" / "requirements.toml"


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    text: str
    design: str
    mechanism: tuple[str, ...]
    codes: tuple[str, ...]
    runs: str = "default"  # or "slow": every test of it is slow or gpu


def load(path: Path = PATH) -> dict[str, Requirement]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    out: dict[str, Requirement] = {}
    for raw in data["requirement"]:
        req = Requirement(
            id=raw["id"],
            title=raw["title"],
            text=raw["text"],
            design=raw["design"],
            mechanism=tuple(raw["mechanism"]),
            codes=tuple(raw["codes"]),
            runs=raw.get("runs", "default"),
        )
        if req.id in out:
            raise ValueError(f"{path}: {req.id} is defined twice")
        if req.runs not in ("default", "slow"):
            raise ValueError(f"{path}: {req.id}: runs={req.runs!r}, write default or slow")
        out[req.id] = req
    return out


@dataclass
class Tally:
    """What the tests of one requirement did in this run."""

    collected: list[str] = field(default_factory=list)  # node ids, before -m deselection
    by_default: list[str] = field(default_factory=list)  # not marked slow or gpu
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def findings(
    requirements: dict[str, Requirement], tallies: dict[str, Tally], *, whole_suite: bool
) -> list[str]:
    """What is wrong with the binding of requirements to tests, one line each.

    Unknown requirement ids are always findings; the rest only when ``whole_suite`` (a run of
    a single file cannot see every requirement's tests).
    """
    out = [
        f"{node}: marks unknown requirement {rid} (not in {PATH.name})"
        for rid, tally in sorted(tallies.items())
        if rid not in requirements
        for node in tally.collected
    ]
    if not whole_suite:
        return out
    for rid, req in requirements.items():
        tally = tallies.get(rid, Tally())
        if not tally.collected:
            out.append(f"{rid} ({req.title}): no test carries @pytest.mark.requirement({rid!r})")
        elif req.runs == "slow" and tally.by_default:
            out.append(
                f"{rid}: the data says runs='slow' but {tally.by_default[0]} runs by default"
            )
        elif tally.failed:
            out.append(f"{rid}: its test {tally.failed[0]} failed")
        elif not tally.passed and not (req.runs == "slow" and not tally.by_default):
            out.append(f"{rid} ({req.title}): none of its tests passed in this run")
    return out
