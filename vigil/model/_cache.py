"""A fixed-capacity key/value cache that the caller owns.

Theory of operation. The cache holds two preallocated tensors, keys and values, shaped
``(num_layers, batch, num_kv_heads, capacity, head_dim)``, and one host-side integer, the
number of filled slots (:attr:`KVCache.length`). A forward pass with a cache writes the new
tokens' rotated keys and values into slots ``[length, length + T)`` of every layer and attends
over slots ``[0, length + T)``; the cache never grows, never reallocates and never copies old
slots.

Invariants:

* :attr:`length` advances only after a forward pass has run every layer. A pass that raises
  (a bad input is rejected before any write; a device error may strike mid-pass) leaves
  ``length`` where it was, and slots at or beyond ``length`` are never read, so a failed call
  cannot corrupt what the cache already holds.
* Capacity overflow is checked on the host, from ``length`` and the input's shape, before
  anything is written.
* :meth:`reset` empties the cache in O(1): it only sets ``length`` to 0.

Create and use a cache under the same autograd mode: a cache built under
``torch.inference_mode()`` holds inference tensors, which may not be written outside it.
"""

from __future__ import annotations

import torch

from vigil.errors import InvalidArgument
from vigil.model._config import DecoderConfig

__all__ = ["KVCache"]


class KVCache:
    """Preallocated keys and values for every layer of one decoder and one batch size.

    Args:
        config: the decoder's config (geometry and ``kv_cache_capacity``).
        batch_size: rows of every ``input_ids`` this cache will serve.
        device: where the tensors live (the model's device).
        dtype: their dtype (the model's parameter dtype); defaults to ``config.dtype``.

    Raises:
        InvalidArgument: ``batch_size`` is not a positive int.
    """

    def __init__(
        self,
        config: DecoderConfig,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidArgument(
                f"KVCache batch_size={batch_size!r}: must be an int >= 1",
                field="batch_size",
                value=batch_size,
            )
        shape = (
            config.num_layers,
            batch_size,
            config.num_kv_heads,
            config.kv_cache_capacity,
            config.head_dim,
        )
        dtype = config.torch_dtype if dtype is None else dtype
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self._length = 0

    @property
    def length(self) -> int:
        """Filled slots: the tokens the cache holds for every row."""
        return self._length

    @property
    def capacity(self) -> int:
        """Slots in all, fixed at construction."""
        return self.keys.shape[3]

    @property
    def batch_size(self) -> int:
        """Rows the cache was built for."""
        return self.keys.shape[1]

    @property
    def remaining(self) -> int:
        """Tokens that still fit."""
        return self.capacity - self._length

    def reset(self) -> None:
        """Forget every cached token (O(1): the slots are overwritten by later calls)."""
        self._length = 0

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of one layer's keys and values, ``(batch, kv_heads, capacity, head_dim)``."""
        return self.keys[index], self.values[index]

    def _advance(self, tokens: int) -> None:
        """Count ``tokens`` new slots as filled; called once a forward pass has completed."""
        self._length += tokens

    def __repr__(self) -> str:
        return (
            f"KVCache(batch_size={self.batch_size}, length={self._length}, "
            f"capacity={self.capacity}, dtype={self.keys.dtype}, device={self.keys.device})"
        )
