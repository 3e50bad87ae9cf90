"""Model factories for worker processes: the reference models, and a model that misbehaves
when asked to.

A worker process builds its model from a *factory* named ``"package.module:function"`` and
keyword arguments (plain data), so nothing but a name crosses the process boundary. A signed
model directory is built by a *builder* that maps the manifest's config to a fresh module.

:func:`triggered_model` is the fault-injection toolkit's process-level half: a model whose
input selects the fault (a hang, a crash of the whole process, a process-fatal device error,
an exception, NaN), so that a test or an acceptance run can break one specific call of a real
worker process -- see docs/FAULTS.md.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import torch
from torch import nn

from vigil.errors import ConfigError, DeviceFatal

__all__ = [
    "KNOWN_ANSWER",
    "TRIGGERS",
    "build_reference",
    "known_answer_file",
    "save_reference_decoder",
    "triggered_model",
]

KNOWN_ANSWER = "known_answer.safetensors"
"""The file of a model directory that holds its known answer: safetensors with exactly the
tensors ``input`` and ``expected`` (signed with the weights, so it cannot be swapped alone)."""

TRIGGERS = {
    "hang": -1001.0,  # block forever (the worker is killed at the deadline)
    "crash": -1002.0,  # SIGKILL its own process mid-call
    "fatal": -1003.0,  # a process-fatal device error (a real device-side assert on CUDA)
    "error": -1004.0,  # raise RuntimeError
    "nan": -1005.0,  # return NaN
    "exit": -1006.0,  # os._exit(3) mid-call
    "slow": -1007.0,  # run for x[1] milliseconds (a slow but healthy call), then answer
    "wrong_shape": -1008.0,  # return one extra element along the last dimension
    "wrong_dtype": -1009.0,  # return float64 instead of the input's dtype
    "out_of_range": -1010.0,  # return 1e9 in the first element (finite, out of any sane bound)
    "oom": -1011.0,  # raise torch.OutOfMemoryError
    "wrong_answer": -1012.0,  # return (scale + 1) * x: finite, plausible, wrong
}
"""Input values that trigger a fault in :func:`triggered_model`: the first element of the
input tensor selects it."""


def build_reference(config: dict[str, Any]) -> nn.Module:
    """The builder for signed model directories written by vigil: ``tiny-reference`` (from
    ``vigil model export-reference``) or ``decoder`` (a :class:`vigil.model.Decoder` whose
    config is ``config["decoder"]``).

    Raises:
        ConfigError: the manifest's config names another model.
    """
    kind = config.get("model")
    if kind == "tiny-reference":
        from vigil.model import TinyReference  # noqa: PLC0415

        return TinyReference(seed=int(config.get("seed", 0)), hidden=int(config["hidden"]))
    if kind == "decoder":
        from vigil.model import Decoder, DecoderConfig  # noqa: PLC0415

        return Decoder(DecoderConfig.from_dict(config["decoder"]))
    raise ConfigError(
        f"the manifest's config names model {kind!r}: build_reference knows 'tiny-reference' "
        "and 'decoder'; pass your own builder for other models"
    )


def save_reference_decoder(
    directory: str | os.PathLike[str],
    key: Any,
    *,
    preset: str = "tiny",
    seed: int = 0,
    version: str = "1",
) -> tuple[bytes, Any]:
    """Draw the reference decoder's weights (``DecoderConfig.preset(preset)``, ``seed``) and
    write them, signed with ``key`` (ECDSA P-384), as a model directory that
    :func:`build_reference` builds again, with its known answer (:data:`KNOWN_ANSWER`: eight
    token ids and the logits this CPU computes for them). Returns the model digest and the
    config.
    """
    from vigil.model import Decoder, DecoderConfig, save_model_dir  # noqa: PLC0415

    config = DecoderConfig.preset(preset)
    manifest_config = {"model": "decoder", "preset": preset, "seed": seed}
    model = Decoder(config, seed=seed)
    ids = torch.randint(0, config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(seed))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, KNOWN_ANSWER), "wb") as f:  # signed below, with the rest
        f.write(known_answer_file(ids, model(ids)))
    digest = save_model_dir(
        directory,
        model.state_dict(),
        name="decoder",
        version=version,
        config=manifest_config | {"decoder": config.to_dict()},
        key=key,
    )
    return digest, config


def known_answer_file(inputs: torch.Tensor, expected: torch.Tensor) -> bytes:
    """The bytes of a :data:`KNOWN_ANSWER` file: ``inputs`` and ``expected`` as safetensors."""
    import safetensors.torch  # noqa: PLC0415

    tensors = {"input": inputs, "expected": expected}
    return safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


class _Triggered(nn.Module):
    """``y = scale * x`` (a copy), unless ``x``'s first element is one of :data:`TRIGGERS`."""

    def __init__(self, scale: float, device: str) -> None:
        super().__init__()
        self.scale: torch.Tensor
        self.register_buffer("scale", torch.tensor(float(scale), device=device))
        self._never = threading.Event()

    def _out_of_memory(self) -> None:
        if self.scale.is_cuda:  # a real one: the caching allocator refuses 1 PiB
            torch.empty(1 << 50, dtype=torch.uint8, device=self.scale.device)
        raise torch.OutOfMemoryError("vigil fault injection: out of memory")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = float(x.reshape(-1)[0]) if x.numel() else 0.0
        if first == TRIGGERS["hang"]:
            self._never.wait()
        elif first == TRIGGERS["crash"]:
            os.kill(os.getpid(), signal.SIGKILL)
        elif first == TRIGGERS["exit"]:
            os._exit(3)
        elif first == TRIGGERS["fatal"]:
            if x.is_cuda or self.scale.is_cuda:
                device = x.device if x.is_cuda else self.scale.device
                table = torch.zeros(1, device=device)
                table[torch.tensor([1 << 20], device=device)]  # a device-side assert
                torch.cuda.synchronize(device)
            raise DeviceFatal("vigil fault injection: process-fatal device error")
        elif first == TRIGGERS["error"]:
            raise RuntimeError("vigil fault injection: exception")
        elif first == TRIGGERS["oom"]:
            self._out_of_memory()
        elif first == TRIGGERS["slow"]:
            self._never.wait(float(x.reshape(-1)[1]) / 1e3)
        scale = self.scale + 1 if first == TRIGGERS["wrong_answer"] else self.scale
        y = x.to(self.scale.device) * scale
        if first == TRIGGERS["nan"]:
            y.reshape(-1)[0] = float("nan")
        elif first == TRIGGERS["out_of_range"]:
            y.reshape(-1)[0] = 1e9
        elif first == TRIGGERS["wrong_dtype"]:
            y = y.double()
        elif first == TRIGGERS["wrong_shape"]:
            y = torch.cat([y, torch.zeros(*y.shape[:-1], 1, dtype=y.dtype, device=y.device)], -1)
        return y


def triggered_model(*, device: str = "cpu", scale: float = 2.0) -> nn.Module:
    """A model for fault-injection runs: ``scale * x``, or the fault its input selects.

    The first element of the input picks the fault (:data:`TRIGGERS`): ``-1001`` hangs,
    ``-1002`` SIGKILLs the worker process, ``-1003`` raises a process-fatal device error (a
    real device-side assert on CUDA), ``-1004`` raises, ``-1005`` returns NaN, ``-1006``
    exits the process, ``-1007`` runs for ``x[1]`` milliseconds then answers, ``-1008`` ..
    ``-1012`` return a wrong shape, a wrong dtype, an out-of-range value, raise out-of-memory
    (a real CUDA out-of-memory on CUDA), answer wrongly but finitely. Any other input is
    served normally.
    """
    return _Triggered(scale, device).eval()
