"""The GPU-shaped model stand-in of bench_gpu_shaped.py, importable by a worker process.

A call spends :data:`GPU_SECONDS` in ``time.sleep``, which releases the GIL and uses no CPU:
what the host thread of a real GPU call does while the device computes (PyTorch releases the
GIL while it waits on the stream: a synchronising ``.item()``, ``.cpu()`` or
``torch.cuda.synchronize()``). A CPU op standing in for the device would compete with the
supervisor for the CPU, which a GPU does not. The answer is allocated once (the device would
have written it; the device-to-host copy of a real output is not modelled, except in process
isolation, where the worker copies it into shared memory):

* ``logits``: a ``(1, 16, 32000)`` bfloat16 tensor (1 000 000 bytes);
* ``tokens``: what ``vigil.model.next_tokens`` makes of those logits, ``{"tokens": (1,)
  int64, "logprobs": (1,) float32}``: on a GPU the head runs on the device within the call's
  time, so the stand-in returns it precomputed, in the same 2.5 ms.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from vigil.model import next_tokens

GPU_SECONDS = 0.0025
LOGITS = (1, 16, 32000)


def standin(output: str = "logits", seconds: float = GPU_SECONDS) -> Any:
    """The stand-in model (a factory for ``WorkerSpec``): ``x -> answer`` after ``seconds``."""
    logits = torch.randn(LOGITS, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    answer: Any = logits if output == "logits" else next_tokens(logits)

    def gpu_call(x: torch.Tensor) -> Any:
        time.sleep(seconds)  # releases the GIL, as a GPU call does while the device works
        return answer

    return gpu_call
