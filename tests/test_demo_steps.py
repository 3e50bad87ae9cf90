"""The demo's steps on their own: a fresh log each run, and which input each call sends."""

from __future__ import annotations

from pathlib import Path

import torch

from vigil.cli import _demo
from vigil.errors import InvalidInput
from vigil.model import DecoderConfig
from vigil.schemas import Contract


def test_a_second_run_starts_a_fresh_log(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = _demo._fresh_log(str(out))
    assert path == str(out / "flight.vigil") and out.is_dir()
    Path(path).write_bytes(b"the log of a previous run")
    assert _demo._fresh_log(str(out)) == path
    assert not Path(path).exists()


def refused(contract: Contract, x: torch.Tensor) -> bool:
    try:
        contract.check(x)
    except InvalidInput:
        return True
    return False


def test_every_250th_call_sends_a_bad_input_in_turn() -> None:
    config = DecoderConfig.tiny()
    inputs = _demo._Inputs.for_model(config, torch.device("cpu"))
    sent = [inputs.frame(i) for i in range(1000)]
    bad_at = [i for i, x in enumerate(sent) if refused(inputs.contract, x)]
    assert bad_at == [249, 499, 749, 999]
    assert sent[249] is inputs.bad[0] and sent[499] is inputs.bad[1]
    assert sent[749] is inputs.bad[2] and sent[999] is inputs.bad[0]
    assert torch.equal(sent[64], inputs.frames[0]) and torch.equal(sent[65], inputs.frames[1])
    assert inputs.zeros.shape == (1, _demo.TOKENS, config.vocab_size)
