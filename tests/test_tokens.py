"""Token output (issue 16): the greedy next token and its log-probability instead of logits.

What is served must be what the logits path would give (the argmax at the last position, and
``log_softmax`` there), a non-finite logit anywhere must still refuse the call with the code
a NaN in served logits gets, and the record's output digest must cover what was served.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import LogReader
from vigil.errors import InvalidArgument, ProtocolError, ServiceConfigError
from vigil.model import Decoder, DecoderConfig, NextTokens, next_tokens, token_contract
from vigil.schemas import Outcome, RecordType, ServedBy
from vigil.service._client import Client, TokenResult
from vigil.service._config import ServeConfig
from vigil.service._service import Service
from vigil.supervisor import LastGood, Supervisor
from vigil.supervisor import _tensors as T
from vigil.testing._models import TRIGGERS

VOCAB = DecoderConfig.tiny().vocab_size


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return Decoder(DecoderConfig.tiny(), seed=5)


def ids_of(batch: int, tokens: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, tokens), generator=torch.Generator().manual_seed(seed))


def test_tokens_are_the_argmax_of_the_logits_path_and_logprobs_its_log_softmax(
    decoder: Decoder,
) -> None:
    ids = ids_of(3, 7)
    with torch.no_grad():
        logits = decoder(ids)
        out = NextTokens(decoder)(ids)
    assert sorted(out) == ["logprobs", "tokens"]
    tokens, logprobs = out["tokens"], out["logprobs"]
    assert tokens.shape == logprobs.shape == (3,)
    assert (tokens.dtype, logprobs.dtype) == (torch.int64, torch.float32)
    last = logits[:, -1, :].float()
    assert torch.equal(tokens, last.argmax(-1))
    want = torch.log_softmax(last, -1)[torch.arange(3), tokens]
    torch.testing.assert_close(logprobs, want, rtol=0, atol=0)
    assert bool((logprobs <= 0).all())
    # the greedy token is the most probable one: no other token has a higher log-probability
    assert bool((torch.log_softmax(last, -1).max(-1).values == logprobs).all())


def test_arguments_pass_through_to_the_decoder_cache_included(decoder: Decoder) -> None:
    ids = ids_of(1, 6, seed=2)
    cache = decoder.new_cache(1)
    with torch.no_grad():
        whole = decoder(ids)[:, -1].float().argmax(-1)
        NextTokens(decoder)(ids[:, :5], cache=cache)
        step = NextTokens(decoder)(ids[:, 5:], cache=cache)
    assert cache.length == 6
    assert torch.equal(step["tokens"], whole)


@pytest.mark.parametrize(
    ("where", "value"),
    [((0, 0, 3), math.nan), ((1, 2, 0), math.inf), ((0, 4, VOCAB - 1), -math.inf)],
)
def test_a_non_finite_logit_at_any_position_makes_every_logprob_nan(
    decoder: Decoder, where: tuple[int, int, int], value: float
) -> None:
    with torch.no_grad():
        logits = decoder(ids_of(2, 5))
    logits[where] = value  # positions 0 and 2 are not the last one: they still count
    out = next_tokens(logits)
    assert bool(out["logprobs"].isnan().all())


@pytest.mark.parametrize(
    "bad", [torch.zeros(2, 5), torch.zeros(2, 0, 4), torch.zeros(1, 2, 3, dtype=torch.int64)]
)
def test_a_model_that_does_not_return_logits_is_refused_with_its_code(bad: torch.Tensor) -> None:
    with pytest.raises(InvalidArgument) as info:
        NextTokens(lambda x: bad)(torch.zeros(1))
    assert info.value.code == D.TOKEN_OUTPUT_LOGITS.code


class NaNLogits(torch.nn.Module):
    """The decoder, with a NaN written into one logit when the first id is 0 (the trigger)."""

    def __init__(self, decoder: Decoder, where: tuple[int, int, int]) -> None:
        super().__init__()
        self.decoder, self.where = decoder, where

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.decoder(ids)
        if int(ids[0, 0]) == 0:
            logits[self.where] = math.nan
        return logits


@pytest.mark.parametrize("contract", [True, False], ids=["token-contract", "default-check"])
def test_nan_logits_are_refused_as_a_nan_in_served_logits_is(
    decoder: Decoder, tmp_path: Path, contract: bool
) -> None:
    """Supervised in tokens mode and in logits mode, the same NaN trigger gets the same
    outcome and code (INVALID_OUTPUT, DIA-2105) and nothing is served."""
    model = NaNLogits(decoder, (0, 1, 7))  # position 1 of 4: not the one the token comes from
    good, bad = ids_of(1, 4, seed=3), ids_of(1, 4, seed=3)
    good[0, 0], bad[0, 0] = 1, 0
    reasons = {}
    for mode, primary in (("tokens", NextTokens(model)), ("logits", model)):
        sup = Supervisor(
            primary,
            log=tmp_path / f"{mode}.vigil",
            output_contract=token_contract() if contract and mode == "tokens" else None,
            fallback=[LastGood(10**12)],
            deadline_ns=60 * 10**9,  # a loaded host must not turn the test into a timeout
        )
        try:
            first = sup.infer(good)
            assert first.outcome is Outcome.OK
            result = sup.infer(bad)
            assert result.served_by is ServedBy.LAST_GOOD
            assert result.outcome is Outcome.INVALID_OUTPUT
            assert result.code == D.INVALID_OUTPUT
            reasons[mode] = result.reason
        finally:
            sup.close()
    for mode, reason in reasons.items():
        assert D.NOT_FINITE.code in reason, (mode, reason)


def test_the_record_digest_covers_the_tokens_served(decoder: Decoder, tmp_path: Path) -> None:
    sup = Supervisor(
        NextTokens(decoder),
        log=tmp_path / "t.vigil",
        output_contract=token_contract(),
        deadline_ns=60 * 10**9,
    )
    try:
        result = sup.infer(ids_of(2, 3))
    finally:
        sup.close()
    with LogReader(tmp_path / "t.vigil") as r:
        (rec,) = [x.body for x in r.records() if x.type is RecordType.INFERENCE]
    assert rec["output_digest"] == T.digest(result.output)
    assert rec["output_digest"] == T.digest(
        {"tokens": result.output["tokens"].clone(), "logprobs": result.output["logprobs"]}
    )
    other = dict(result.output, tokens=result.output["tokens"] + 1)
    assert rec["output_digest"] != T.digest(other)


# --- the service ----------------------------------------------------------------------------


def config(tmp: Path, **model: Any) -> ServeConfig:
    return ServeConfig.from_dict(
        {
            "service": {"socket": str(tmp / "vigil.sock")},
            "log": {"path": str(tmp / "flight.vigil"), "segment_kb": 256, "segments": 8},
            "model": {
                "factory": "vigil.testing._models:triggered_model",
                "input": {"dtype": "float32", "shape": [-1, -1, 8]},
                **model,
            },
            "workers": {"standby": False, "heartbeat_timeout_ms": 5000},
            "supervisor": {"deadline_ms": 10_000, "fallback": ["last_good"]},
        }
    )


def test_output_is_logits_by_default_and_a_typo_or_a_constant_fallback_is_refused(
    tmp_path: Path,
) -> None:
    assert config(tmp_path).model.output == "logits"
    assert config(tmp_path).output_contract() is None
    assert config(tmp_path, output="tokens").output_contract() is not None
    with pytest.raises(ServiceConfigError) as info:
        config(tmp_path, output="token")
    assert info.value.code == D.SERVICE_CONFIG_RANGE.code
    raw = {
        "service": {"socket": "s"},
        "log": {"path": "f"},
        "model": {"factory": "a.b:c", "output": "tokens"},
        "supervisor": {"deadline_ms": 10, "fallback": ["constant"], "constant_shape": [1]},
    }
    with pytest.raises(ServiceConfigError) as info:
        ServeConfig.from_dict(raw)
    assert info.value.code == D.SERVICE_CONFIG_INCONSISTENT.code
    assert "[model].output" in info.value.message


@pytest.fixture
def service_of(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Starts a Service of :func:`config`; stops it at the end unless the test did."""
    started: list[Service] = []

    def start(**model: Any) -> Service:
        service = Service(config(tmp_path, **model))
        started.append(service)
        service.start()
        return service

    yield start
    for service in started:
        if service.log is not None and not service.log._closed:
            service.stop()


def test_the_service_serves_tokens_end_to_end_and_refuses_nan_logits(
    service_of: Callable[..., Service], tmp_path: Path
) -> None:
    """``triggered_model`` answers ``2 * x``: with a (batch, tokens, 8) input those are the
    logits; the worker serves their next tokens, the client gets them typed."""
    token_service = service_of(output="tokens")
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(4))
    with Client(tmp_path / "vigil.sock") as client:
        got = client.infer_tokens(x)
        assert isinstance(got, TokenResult)
        assert got.result.served_by is ServedBy.PRIMARY
        want = next_tokens(2 * x)
        assert torch.equal(got.tokens, want["tokens"])
        torch.testing.assert_close(got.logprobs, want["logprobs"])
        plain = client.infer(x)  # the same answer through infer: the mapping
        assert torch.equal(plain.output["tokens"], want["tokens"])
        nan = x.clone()
        nan[0, 0, 0] = TRIGGERS["nan"]  # the model writes NaN at position 0 of 3
        refused = client.infer_tokens(nan)
        assert refused.result.served_by is ServedBy.LAST_GOOD
        assert refused.result.outcome is Outcome.INVALID_OUTPUT
        assert D.NOT_FINITE.code in refused.result.reason
    token_service.stop()
    with LogReader(tmp_path / "flight.vigil") as r:
        assert r.verify().intact
        calls = [x.body for x in r.records() if x.type is RecordType.INFERENCE]
    outcomes = [b["outcome"] for b in calls]
    assert outcomes == [Outcome.OK, Outcome.OK, Outcome.INVALID_OUTPUT]
    assert calls[0]["output_digest"] == T.digest(got.result.output)


def test_infer_tokens_refuses_a_logits_answer_with_its_code(
    service_of: Callable[..., Service], tmp_path: Path
) -> None:
    service_of()
    with Client(tmp_path / "vigil.sock") as client, pytest.raises(ProtocolError) as info:
        client.infer_tokens(torch.zeros(1, 2, 8))
    assert info.value.code == D.TOKEN_RESULT_INVALID.code
