"""``Supervisor.infer`` fails closed before routing: whatever is wrong with a call's arguments,
and whatever examining them raises, ends in one REJECTED record and an ``InvalidInput`` with a
code -- never another exception, never a call without its record. In every isolation mode,
since the checks run in the caller's thread before any of them differ."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import LogReader
from vigil.errors import ConfigError, InvalidInput
from vigil.schemas import RecordType, ServedBy
from vigil.supervisor import Constant, Supervisor, replay

from conftest import SMALL

X = torch.ones(1, 4)
MODES = ["inline", "thread"]
# each test writes a handful of records: the small ring (8 x 8 KiB) holds them without a wrap,
# and creating it costs nothing next to the default 64 MiB log
RING = SMALL


class Unprintable:
    """An input whose ``__repr__`` (what a digest of a non-tensor uses) raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Nasty(Exception):
    def __str__(self) -> str:
        raise RuntimeError("nor a message")


class NastyKey:
    def __str__(self) -> str:
        raise Nasty


class Explodes:
    """An input contract whose check raises something other than InvalidInput."""

    def check(self, x: Any, field: str = "input") -> None:
        if x.shape[0] != 1:  # a list has no .shape: AttributeError
            raise InvalidInput(f"{field}: batch of one only")


@pytest.fixture(params=MODES)
def sup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Supervisor]:
    with Supervisor(
        lambda x: x * 2,
        log=tmp_path / "log.vigil",
        ring=RING,
        isolation=request.param,
        fallback=Constant(torch.zeros(1, 4)),
    ) as s:
        yield s


def rejected(sup: Supervisor) -> list[tuple[int, bytes]]:
    with LogReader(sup.log.path) as r:
        assert r.verify().intact
        return [
            (x.body["code"], x.body["request_id"])
            for x in r.records()
            if x.type is RecordType.REJECTED
        ]


@pytest.mark.parametrize(
    ("bad", "cause"),
    [
        (Unprintable(), RuntimeError),  # was: RuntimeError, and no record
        ({NastyKey(): X}, Nasty),  # a mapping whose keys cannot be formatted
        ([X, Unprintable()], RuntimeError),
    ],
    ids=["repr", "mapping-key", "nested"],
)
def test_an_input_that_cannot_be_examined_is_rejected_and_recorded(
    sup: Supervisor, bad: Any, cause: type[BaseException]
) -> None:
    with pytest.raises(InvalidInput) as info:
        sup.infer(bad)
    err = info.value
    assert err.code == D.INPUT_UNREADABLE.code and err.field == "input"  # type: ignore[attr-defined]
    assert isinstance(err.__cause__, cause) and cause.__name__ in err.message
    assert [code for code, _ in rejected(sup)] == [D.INPUT_UNREADABLE.number]
    assert sup.infer(X).served_by is ServedBy.PRIMARY  # it keeps serving
    assert sup.statistics().rejected == 1


def test_a_contract_check_that_raises_is_a_rejection(tmp_path: Path) -> None:
    for mode in MODES:
        with Supervisor(
            lambda x: x,
            log=tmp_path / f"{mode}.vigil",
            ring=RING,
            isolation=mode,
            input_contract=Explodes(),
        ) as s:
            with pytest.raises(InvalidInput) as info:
                s.infer([1, 2])
            assert info.value.code == "DIA-2010"
            assert isinstance(info.value.__cause__, AttributeError)
            assert [c for c, _ in rejected(s)] == [2010]


@pytest.mark.parametrize(
    "request_id",
    [b"short", b"x" * 17, "a string of 16ch", 12345, bytearray(3), Unprintable()],
    ids=["short", "long", "str", "int", "bytearray", "unprintable"],
)
def test_a_bad_request_id_is_an_invalid_input_and_recorded(
    sup: Supervisor, request_id: Any
) -> None:
    with pytest.raises(InvalidInput) as info:  # was: ConfigError (a str: a later crash)
        sup.infer(X, request_id=request_id)
    assert not isinstance(info.value, ConfigError)
    assert info.value.code == D.REQUEST_ID_INVALID.code
    ((code, rid),) = rejected(sup)
    assert code == D.REQUEST_ID_INVALID.number and len(rid) == 16  # a generated id
    good = bytearray(b"R" * 16)
    assert sup.infer(X, request_id=good).served_by is ServedBy.PRIMARY  # bytes-like is fine


def test_the_log_of_hostile_calls_verifies_and_replays(tmp_path: Path) -> None:
    path = tmp_path / "log.vigil"
    with Supervisor(lambda x: x, log=path, ring=RING, isolation="inline") as s:
        for bad in (Unprintable(), {NastyKey(): X}):
            with pytest.raises(InvalidInput):
                s.infer(bad)
        with pytest.raises(InvalidInput):
            s.infer(X, request_id=b"?")
        s.infer(X)
    assert replay(path).agrees


@pytest.mark.slow  # ~14 s on the 2-core CI machine: spawns and warms two workers
def test_process_isolation_fails_closed_the_same_way(tmp_path: Path) -> None:
    """One pool for all the hostile calls."""
    from vigil.workers._pool import WorkerPool, WorkerSpec

    spec = WorkerSpec(factory="vigil.testing._models:triggered_model", warmup_input=X, threads=1)
    with Supervisor(
        WorkerPool(spec, heartbeat_timeout_ns=5_000_000_000),
        isolation="process",
        log=tmp_path / "log.vigil",
        fallback=Constant(torch.zeros(1, 4)),
        deadline_ns=2_000_000_000,
    ) as s:
        for bad in (Unprintable(), {NastyKey(): X}, [X, Unprintable()]):
            with pytest.raises(InvalidInput):
                s.infer(bad)
        with pytest.raises(InvalidInput) as info:
            s.infer(X, request_id="a string of 16ch")
        assert info.value.code == D.REQUEST_ID_INVALID.code
        assert s.infer(X).served_by is ServedBy.PRIMARY
        codes = [c for c, _ in rejected(s)]
    assert len(codes) == 4 and codes[-1] == D.REQUEST_ID_INVALID.number
