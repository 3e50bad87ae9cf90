"""pytest fixtures for fault injection: ``fault_plan``, ``faulty`` and ``--vigil-fault-seed``.

Each test gets its own :class:`~vigil.testing.FaultPlan`, seeded from a stable hash (CRC-32)
of its node id, so a test sees the same schedule on every run and on every machine. When a
test that used the plan fails, its report gains a "vigil fault plan" section with the seed;
``--vigil-fault-seed N`` overrides the seed of every plan (to replay a run, or to explore
other schedules), and the header of the run names it. At teardown the plan is released, so no
hanging call outlives its test.

Installed with vigil as the ``pytest11`` plugin; without the entry point, load it with
``-p vigil.testing.pytest_plugin``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # importing the toolkit imports torch: only when a fixture is used
    from vigil.testing._faults import FaultPlan, FaultyModel

__all__ = ["fault_plan", "faulty", "seed_for"]

_SEED = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vigil", "vigil fault injection")
    group.addoption(
        "--vigil-fault-seed",
        type=int,
        default=None,
        metavar="N",
        help="seed every fault_plan fixture with N instead of the hash of the test's node id",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("vigil_fault_seed")
    if seed is None:
        return None
    return f"vigil fault seed: {seed} (--vigil-fault-seed, for every fault_plan)"


def seed_for(nodeid: str) -> int:
    """The default seed of a test's ``fault_plan``: CRC-32 of its node id (stable across runs
    and machines, unlike ``hash``)."""
    return zlib.crc32(nodeid.encode("utf-8"))


@pytest.fixture
def fault_plan(request: pytest.FixtureRequest) -> Iterator[FaultPlan]:
    """A fresh :class:`FaultPlan` without rules, seeded from the test's node id (or from
    ``--vigil-fault-seed``); released at teardown."""
    override = request.config.getoption("vigil_fault_seed")
    seed = seed_for(request.node.nodeid) if override is None else int(override)
    request.node.stash[_SEED] = seed
    request.node.user_properties.append(("vigil_fault_seed", seed))
    from vigil.testing._faults import FaultPlan  # noqa: PLC0415 - see the imports above

    plan = FaultPlan(seed)
    yield plan
    plan.release()


@pytest.fixture
def faulty(fault_plan: FaultPlan) -> Callable[..., FaultyModel]:
    """A factory ``faulty(model, plan=None)`` wrapping ``model`` in a :class:`FaultyModel`
    that follows ``plan``, by default the test's ``fault_plan``."""

    from vigil.testing._faults import FaultyModel  # noqa: PLC0415 - see the imports above

    def make(model: Callable[..., Any], plan: FaultPlan | None = None) -> FaultyModel:
        return FaultyModel(model, fault_plan if plan is None else plan)

    return make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = item.stash.get(_SEED, None)
    if report.failed and seed is not None:
        report.sections.append(
            ("vigil fault plan", f"seed {seed}; replay with --vigil-fault-seed {seed}")
        )
    return report
