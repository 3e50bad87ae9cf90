"""Serving the reference decoder from a signed directory, as real worker processes.

The directory is written by ``vigil model export-reference`` (the tiny decoder); the input
contract and the warm-up input come from a ``[model.input]`` table with token bounds, as
``vigil serve`` builds them. A token id outside ``[0, vocab)`` must be REJECTED at the
boundary -- the worker never sees it and the state machine never counts it. Without the bounds
the same id reaches the decoder in the worker, whose own validation refuses it
(``InputRefused``): REJECTED with the decoder's code, still not held against the model.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import vigil
from vigil import _diagnostics as D
from vigil import keys as _keys
from vigil.auditlog import LogReader
from vigil.cli import main
from vigil.errors import InvalidInput, Unavailable
from vigil.fsm import Policy
from vigil.model import Decoder, DecoderConfig, load_model
from vigil.schemas import CallFlags, Outcome, RecordType, ServedBy, State
from vigil.service._client import Client
from vigil.service._config import ServeConfig
from vigil.supervisor import Supervisor
from vigil.testing._models import KNOWN_ANSWER, build_reference, known_answer_file
from vigil.workers._pool import WorkerPool, WorkerSpec

from conftest import FakeClock

VOCAB = DecoderConfig.tiny().vocab_size
POLICY = Policy(consecutive_failures=2, cooldown_ns=60_000_000_000)
"""Two model failures in a row trip NORMAL -> DEGRADED: a counted bad input would show."""
START_S = 120.0
BAD_IDS = [
    (torch.tensor([[1, 2, VOCAB]]), "max", (0, 2)),  # one past the last id
    (torch.tensor([[-1, 7]]), "min", (0, 0)),
]


@pytest.fixture(scope="module")
def signed_decoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A signed tiny decoder directory (seed 3) and its public key file."""
    tmp = tmp_path_factory.mktemp("decoder")
    key, model = tmp / "signer", tmp / "model"
    assert main(["model", "keygen", "--out", str(key)]) == 0
    assert main(["model", "export-reference", str(model), "--key", str(key), "--seed", "3"]) == 0
    return model, Path(f"{key}.pub")


def serve_config(model: Path, public: Path, **input_keys: Any) -> ServeConfig:
    """A service configuration for the signed decoder, ``[model.input]`` as given."""
    return ServeConfig.from_dict(
        {
            "service": {"socket": "vigil.sock"},
            "log": {"path": "flight.vigil"},
            "model": {"dir": str(model), "public_key": str(public), "input": input_keys},
            "supervisor": {"deadline_ms": 10_000},
        }
    )


@pytest.fixture
def reference(signed_decoder: tuple[Path, Path]) -> torch.nn.Module:
    """The same signed directory, loaded in this process."""
    model, public = signed_decoder
    module = load_model(model, _keys.load_public(public), build_reference).module
    assert isinstance(module, Decoder)
    return module


def supervise(cfg: ServeConfig, log: Path) -> tuple[Supervisor, WorkerPool]:
    """A process-isolated supervisor built from ``cfg`` as the service builds it."""
    m = cfg.model
    spec = WorkerSpec(
        model_dir=str(m.dir),
        public_key=str(m.public_key),
        warmup_input=None if m.input is None else m.input.warmup_input(),
        threads=1,
    )
    pool = WorkerPool(spec, standby=False)
    sup = Supervisor(
        pool,
        isolation="process",
        log=log,
        policy=POLICY,
        deadline_ns=cfg.supervisor.deadline_ns,
        input_contract=cfg.input_contract(),
    )
    return sup, pool


@pytest.fixture
def bounded(
    signed_decoder: tuple[Path, Path], tmp_path: Path
) -> Iterator[tuple[Supervisor, WorkerPool]]:
    model, public = signed_decoder
    cfg = serve_config(model, public, dtype="int64", shape=[-1, -1], min=0, max=VOCAB - 1)
    sup, pool = supervise(cfg, tmp_path / "flight.vigil")
    try:
        yield sup, pool
    finally:
        sup.close()


def test_valid_token_ids_are_served_by_the_worker_as_the_decoder_computes_them(
    bounded: tuple[Supervisor, WorkerPool], reference: torch.nn.Module
) -> None:
    sup, pool = bounded
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    ids[0, 0], ids[1, -1] = 0, VOCAB - 1  # both ends of the range are valid
    result = sup.infer(ids)
    assert (result.served_by, result.outcome) == (ServedBy.PRIMARY, Outcome.OK)
    assert pool.statistics().calls == 1  # the warm-up ran inside the worker, uncounted
    assert result.output.shape == (2, 9, VOCAB) and result.output.dtype == torch.float32
    with torch.no_grad():
        expected = reference(ids)
    torch.testing.assert_close(result.output, expected, rtol=0, atol=1e-6)
    other = Decoder(DecoderConfig.tiny(), seed=0)(ids)  # another seed's weights differ
    assert (result.output - other).abs().max() > 1e-3


def test_out_of_range_token_ids_are_rejected_before_the_worker_and_never_counted(
    bounded: tuple[Supervisor, WorkerPool], tmp_path: Path
) -> None:
    sup, pool = bounded
    assert sup.infer(torch.tensor([[5, 6]])).served_by is ServedBy.PRIMARY
    calls = pool.statistics().calls
    rounds = 10  # far more than the two failures in a row that would trip
    for _ in range(rounds):
        for ids, rule, index in BAD_IDS:
            with pytest.raises(InvalidInput) as info:
                sup.infer(ids)
            err = info.value
            assert (err.diagnostic, err.rule, err.index) == (D.OUT_OF_RANGE, rule, index)
            assert f"[0, {VOCAB - 1}]" in err.message
            assert pool.statistics().calls == calls  # the worker never saw it
            assert sup.state is State.NORMAL
    stats = sup.statistics()
    assert stats.rejected == rounds * len(BAD_IDS)
    assert stats.machine.state is State.NORMAL
    after = sup.infer(torch.tensor([[VOCAB - 1]]))
    assert (after.served_by, after.outcome) == (ServedBy.PRIMARY, Outcome.OK)
    assert pool.statistics().calls == calls + 1
    sup.close()
    with LogReader(tmp_path / "flight.vigil") as r:
        assert r.verify().intact
        recs = list(r.records())
    rejected = [x.body for x in recs if x.type is RecordType.REJECTED]
    assert [b["code"] for b in rejected] == [D.OUT_OF_RANGE.number] * (rounds * len(BAD_IDS))
    assert all(f"values must lie in [0, {VOCAB - 1}]" in b["reason"] for b in rejected)
    outcomes = [x.body["outcome"] for x in recs if x.type is RecordType.INFERENCE]
    assert outcomes == [Outcome.OK, Outcome.OK]
    assert not [x for x in recs if x.type is RecordType.TRANSITION]


@pytest.mark.slow
def test_without_token_bounds_the_decoder_refuses_a_bad_id_in_the_worker_uncounted(
    signed_decoder: tuple[Path, Path], tmp_path: Path
) -> None:
    """Without the bounds a bad request reaches the worker, and the decoder's own boundary
    refuses it (``InputRefused``): REJECTED with the decoder's code, never a model failure --
    also for what no contract can bound yet, an empty sequence."""
    model, public = signed_decoder
    cfg = serve_config(model, public, dtype="int64", shape=[-1, -1])
    sup, pool = supervise(cfg, tmp_path / "flight.vigil")
    bad = [(ids, D.TOKEN_ID_OUT_OF_RANGE) for ids, _, _ in BAD_IDS]
    bad.append((torch.zeros(1, 0, dtype=torch.int64), D.TOKEN_IDS_SHAPE))
    with sup:
        for n, (ids, code) in enumerate(bad * 3, start=1):
            with pytest.raises(InvalidInput) as info:
                sup.infer(ids)
            assert info.value.diagnostic is code  # the decoder's own check, in the worker
            assert pool.statistics().calls == n  # the worker saw it
        assert sup.state is State.NORMAL  # a policy that trips after 2 failures: none counted
        assert sup.statistics().rejected == len(bad) * 3
        assert sup.infer(torch.tensor([[1, 2]])).served_by is ServedBy.PRIMARY
    with LogReader(tmp_path / "flight.vigil") as r:
        rejected = [x.body["code"] for x in r.records() if x.type is RecordType.REJECTED]
        kinds = {x.type for x in r.records()}
    assert rejected == [code.number for _, code in bad] * 3
    assert RecordType.TRANSITION not in kinds


@pytest.mark.slow
def test_vigil_serve_serves_a_signed_decoder_and_refuses_bad_token_ids(
    signed_decoder: tuple[Path, Path], tmp_path: Path, reference: torch.nn.Module
) -> None:
    """``vigil serve`` as a process: its workers warm up on ``[model.input]``'s int64 input."""
    model, public = signed_decoder
    (tmp_path / "vigil.toml").write_text(
        f"""
[service]
socket = "vigil.sock"
[log]
path = "flight.vigil"
segment_kb = 256
segments = 8
[model]
dir = "{model}"
public_key = "{public}"
[model.input]
dtype = "int64"
shape = [-1, -1]
min = 0
max = {VOCAB - 1}
[workers]
heartbeat_timeout_ms = 5000
[supervisor]
deadline_ms = 10000
[supervisor.known_answer]
file = "known_answer.safetensors"
[supervisor.policy]
consecutive_failures = 2
probe_interval_ms = 1
"""
    )
    root = str(Path(vigil.__file__).resolve().parent.parent)  # the code under test
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil", "serve", "--config", "vigil.toml"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # printed once both workers are warm
        assert "serving on" in banner, banner
        ids = torch.tensor([[0, 17, VOCAB - 1]])
        with Client(tmp_path / "vigil.sock") as client:
            good = client.infer(ids)
            assert good.served_by is ServedBy.PRIMARY
            with torch.no_grad():
                torch.testing.assert_close(good.output, reference(ids), rtol=0, atol=1e-6)
            for bad, _, _ in BAD_IDS * 3:
                with pytest.raises(InvalidInput) as info:
                    client.infer(bad)
                assert info.value.code == D.OUT_OF_RANGE.code
            assert client.health()["state"] == "NORMAL"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(START_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    with LogReader(tmp_path / "flight.vigil") as r:
        assert r.verify().intact
        recs = list(r.records())
    codes = [x.body["code"] for x in recs if x.type is RecordType.REJECTED]
    assert codes == [D.OUT_OF_RANGE.number] * (3 * len(BAD_IDS))
    calls = [x.body for x in recs if x.type is RecordType.INFERENCE]
    known = [b["outcome"] for b in calls if b["flags"] & CallFlags.KNOWN_ANSWER]
    assert [b["outcome"] for b in calls if not b["flags"] & CallFlags.KNOWN_ANSWER] == [Outcome.OK]
    assert known and set(known) == {Outcome.OK}  # the signed known answer, run by the workers


@pytest.mark.slow
def test_a_known_answer_from_another_model_trips_the_supervisor(
    signed_decoder: tuple[Path, Path], tmp_path: Path
) -> None:
    """The probe catches a model that answers, finitely and quickly, but wrongly."""
    model, _ = signed_decoder
    wrong = tmp_path / "model"
    shutil.copytree(model, wrong)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    other = Decoder(DecoderConfig.tiny(), seed=4)  # not the directory's seed-3 weights
    (wrong / KNOWN_ANSWER).write_bytes(known_answer_file(ids, other(ids)))
    key = tmp_path / "signer"  # re-sign the directory, known answer included
    assert main(["model", "keygen", "--out", str(key)]) == 0
    assert main(["model", "sign", str(wrong), "--key", str(key)]) == 0
    cfg = ServeConfig.from_dict(
        {
            "service": {"socket": "vigil.sock"},
            "log": {"path": "flight.vigil"},
            "model": {"dir": str(wrong), "public_key": f"{key}.pub"},
            "supervisor": {
                "deadline_ms": 10_000,
                "known_answer": {"file": KNOWN_ANSWER},
                "policy": {"probe_interval_ms": 1000, "consecutive_failures": 2},
            },
        }
    )
    found = cfg.known_answer()
    assert found is not None
    clock = FakeClock()
    pool = WorkerPool(WorkerSpec(model_dir=str(wrong), public_key=f"{key}.pub", threads=1))
    with Supervisor(
        pool, isolation="process", log=tmp_path / "f.vigil", policy=cfg.to_policy(),
        deadline_ns=cfg.supervisor.deadline_ns, known_answer=found[0], clock=clock,
    ) as sup:  # fmt: skip
        assert pool.digest == found[1]
        assert sup.infer(ids).served_by is ServedBy.PRIMARY  # answers, finitely, quickly
        clock.advance(1_000_000_000)  # a probe is due before the next call, and fails: one
        with pytest.raises(Unavailable):  # failure trips at once (no fallback configured)
            sup.infer(ids)
        assert sup.state is State.DEGRADED
    with LogReader(tmp_path / "f.vigil") as r:
        records = list(r.records())
    probes = [
        x.body for x in records
        if x.type is RecordType.INFERENCE and x.body["flags"] & CallFlags.KNOWN_ANSWER
    ]  # fmt: skip
    assert [(b["outcome"], b["code"]) for b in probes] == [
        (Outcome.INVALID_OUTPUT, D.WRONG_ANSWER.number)
    ]
    trips = [x.body["code"] for x in records if x.type is RecordType.TRANSITION]
    assert trips == [D.TRIP_KNOWN_ANSWER.number]
