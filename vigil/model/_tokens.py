"""Token output: serve the greedy next token and its log-probability instead of the logits.

Theory of operation. A decoder's logits are ``(batch, tokens, vocab)``: at 16 tokens and a
32000-word vocabulary that is 1 MB of bfloat16 per row, copied to the host, checked, hashed,
recorded and sent for every call, while a caller that generates text uses one token per row.
:class:`NextTokens` wraps any model that returns such logits and serves, per row, the greedy
next token (the argmax at the **last** position: the token that follows the prompt; with left
padding the last position is every row's last real token) and its log-probability
(``log_softmax`` at that argmax, in float32)::

    {"tokens": (batch,) int64, "logprobs": (batch,) float32}

The finiteness check stays on the logits, on the device, before the argmax: one
``isfinite(logits).all()`` over **every** position (what the model computed, as in logits
mode), reduced on the device to one flag without a host synchronisation. Where the flag is
False every log-probability of the call is set to NaN, so the one synchronisation the
supervisor's output check makes (a contract with ``finite=True``, or the default finiteness
check) refuses the call with DIA-2105 NOT_FINITE, recorded INVALID_OUTPUT -- exactly what a
NaN in served logits gets. The argmax of a NaN row is meaningless; it is never served.

The served value is what the record's output digest covers (the two small tensors), and what
the output contract describes (:func:`token_contract`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vigil import _diagnostics as D
from vigil.errors import InvalidArgument
from vigil.schemas import Contract, TensorSpec

__all__ = ["NextTokens", "next_tokens", "token_contract"]

TOKENS = "tokens"
LOGPROBS = "logprobs"


def next_tokens(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The greedy next token of each row and its log-probability, from ``(batch, tokens,
    vocab)`` logits (any floating dtype, on any device), with no host synchronisation.

    Returns:
        ``{"tokens": (batch,) int64, "logprobs": (batch,) float32}`` on the logits' device.
        Every log-probability is NaN when any logit (at any position) is NaN or Inf.

    Raises:
        InvalidArgument: DIA-5030 when ``logits`` is not a floating tensor of three dims with
            at least one position and one vocabulary entry.
    """
    if (
        not isinstance(logits, torch.Tensor)
        or logits.dim() != 3
        or not logits.is_floating_point()
        or logits.shape[1] == 0
        or logits.shape[2] == 0
    ):
        what = (
            f"{tuple(logits.shape)} {logits.dtype}"
            if isinstance(logits, torch.Tensor)
            else type(logits).__name__
        )
        raise InvalidArgument(
            f"token output needs (batch, tokens, vocab) floating logits with tokens and vocab "
            f">= 1; the model returned {what}",
            diagnostic=D.TOKEN_OUTPUT_LOGITS,
        )
    finite = torch.isfinite(logits).all()  # on the device: a 0-dim flag, no sync
    last = logits[:, -1, :].float()
    tokens = last.argmax(dim=-1)
    logprobs = torch.log_softmax(last, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    logprobs = torch.where(finite, logprobs, torch.full_like(logprobs, float("nan")))
    return {TOKENS: tokens, LOGPROBS: logprobs}


class NextTokens(nn.Module):
    """A model serving :func:`next_tokens` of the logits the wrapped ``model`` returns.

    ``NextTokens(Decoder(config))`` is the reference decoder serving tokens; the service wraps
    its model this way with ``[model] output = "tokens"``. Arguments pass through to ``model``
    (a decoder's ``positions``, ``attention_mask``, ``cache``), so its input validation and
    its DIA-50xx refusals are unchanged.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """``{"tokens", "logprobs"}`` (see :func:`next_tokens`); raises what ``model``
        raises, and InvalidArgument DIA-5030 when its output is not logits."""
        return next_tokens(self.model(*args, **kwargs))


def token_contract(device: str | None = None, batch: int | None = None) -> Contract:
    """The output contract of token output: a mapping of exactly ``tokens`` (int64) and
    ``logprobs`` (float32, finite), of shape ``(batch,)`` when ``batch`` is given, on
    ``device`` when given.

    No value bounds and no named or free dims: an argmax is never negative, a log-probability
    never positive and both tensors ``(batch,)`` by construction (:func:`next_tokens`), and
    any of those rules would cost the check its compiled fast path (dtype and shape reads and
    one ``np.isfinite`` on a view, against an ``aminmax`` and its bookkeeping per tensor:
    ~100 µs a call on a loaded 2-vCPU VM, measured with ``bench/bench_gpu_shaped.py``).
    """
    shape = None if batch is None else (batch,)
    return Contract(
        {
            TOKENS: TensorSpec(shape=shape, dtype=torch.int64, device=device),
            LOGPROBS: TensorSpec(shape=shape, dtype=torch.float32, device=device),
        },
        name="model.output",
    )
