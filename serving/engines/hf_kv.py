"""The running batch's KV cache for the transformers engine.

Rows are left-padded: each row's real tokens sit at the right end, padding (zeros, masked out) on the left.
Sequences join (a prefilled group is merged in, the shorter side padded on the left), finished ones leave
(rows selected away), and columns that became padding for every row are trimmed. Keys and values live in
buffers with spare room at the end, so a decode step writes one column in place instead of concatenating
the whole cache again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

# Spare columns allocated when a buffer grows (plus half the current length).
_GROW_MIN = 64


class BufferedLayer(DynamicLayer):
    """A full-attention cache layer whose tensors are views into a buffer that grows geometrically."""

    def __init__(self) -> None:
        super().__init__()
        self._k_buf: torch.Tensor | None = None
        self._v_buf: torch.Tensor | None = None
        self._length = 0

    def set_states(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the layer's contents with ``keys``/``values`` of shape (batch, heads, length, dim)."""
        self._k_buf, self._v_buf = keys, values
        self._length = keys.shape[-2]
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new columns in place (growing the buffer when full); return the whole cache as views."""
        if self._k_buf is None:
            self.set_states(key_states, value_states)
            return self.keys, self.values
        n, q = self._length, key_states.shape[-2]
        if n + q > self._k_buf.shape[-2]:
            capacity = n + q + max(_GROW_MIN, (n + q) // 2)
            self._k_buf = _resized(self._k_buf, n, capacity)
            self._v_buf = _resized(self._v_buf, n, capacity)
        self._k_buf[:, :, n : n + q].copy_(key_states)
        self._v_buf[:, :, n : n + q].copy_(value_states)
        self._length = n + q
        self.keys = self._k_buf[:, :, : n + q]
        self.values = self._v_buf[:, :, : n + q]
        return self.keys, self.values


def _resized(buffer: torch.Tensor, used: int, capacity: int) -> torch.Tensor:
    shape = (*buffer.shape[:2], capacity, buffer.shape[-1])
    grown = buffer.new_zeros(shape)
    grown[:, :, :used].copy_(buffer[:, :, :used])
    return grown


class BatchCache(DynamicCache):
    """A DynamicCache made of :class:`BufferedLayer` layers."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=BufferedLayer)


def _pad_left(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - x.shape[dim]
    if missing == 0:
        return x
    # F.pad lists (left, right) pairs starting from the last dimension.
    pads = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [missing, 0]
    return F.pad(x, pads)


class KVBatch:
    """A left-padded batch of sequences: KV cache plus the attention mask over its columns."""

    def __init__(self, cache: BatchCache, mask: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask
        """(rows, columns) int64: 1 where a column holds a real token of that row."""

    @property
    def rows(self) -> int:
        """Number of sequences in the batch."""
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        """Number of cache columns (longest row plus its left padding)."""
        return self.mask.shape[1]

    def _layers(self) -> list[BufferedLayer]:
        return self.cache.layers  # type: ignore[return-value]

    def append_column(self) -> torch.Tensor:
        """Mask for a decode step (one new real token per row); becomes the batch's mask."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.rows, 1)], dim=1)
        return self.mask

    def merge(self, other: KVBatch) -> None:
        """Append ``other``'s rows below this batch's, padding the shorter on the left."""
        length = max(self.length, other.length)
        for mine, theirs in zip(self._layers(), other._layers(), strict=True):
            keys = torch.cat([_pad_left(mine.keys, length, 2), _pad_left(theirs.keys, length, 2)])
            values = torch.cat([_pad_left(mine.values, length, 2), _pad_left(theirs.values, length, 2)])
            mine.set_states(keys, values)
        self.mask = torch.cat([_pad_left(self.mask, length, 1), _pad_left(other.mask, length, 1)])

    def select(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order), then drop columns that are padding in every row."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = mask.any(dim=0)
        first = int(used.int().argmax()) if bool(used.any()) else mask.shape[1]
        for layer in self._layers():
            keys = layer.keys.index_select(0, index)[:, :, first:]
            values = layer.values.index_select(0, index)[:, :, first:]
            layer.set_states(keys, values)
        self.mask = mask[:, first:]
