"""The KV cache: keys and values of the positions already seen, so that generation computes each once.

Without it, step t of generation recomputes k, v for all t earlier positions: O(T²) work for T tokens.
With it, step t computes only its own position's k, v and reads the others from here.
"""

from __future__ import annotations

from torch import Tensor


class LayerCache:
    """One layer's keys and values, [B, H, capacity, d_head] each, filled up to `length`.

    The buffers are allocated on the first `append` (when batch, heads, dtype and device are known) with room
    for the whole context, so each later step writes only its own positions: no concatenation, no copies."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions' k, v [B, H, T, d_head]; return every position's, [B, H, length, d_head]."""
        if self.keys is None:
            shape = (*k.shape[:2], self.capacity, k.shape[-1])
            self.keys, self.values = k.new_empty(shape), v.new_empty(shape)
        end = self.length + k.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions for a capacity of {self.capacity}")
        self.keys[:, :, self.length:end] = k
        self.values[:, :, self.length:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Every layer's LayerCache, sized once: `KVCache(n_layer, n_ctx)`; pass it to `model(idx, cache=...)`."""

    def __init__(self, n_layer: int, n_ctx: int) -> None:
        self.layers = [LayerCache(n_ctx) for _ in range(n_layer)]

    @property
    def length(self) -> int:
        """Positions cached so far (the position of the next token)."""
        return self.layers[0].length

    def clear(self) -> None:
        """Forget every position (the buffers stay, to be overwritten): generation's sliding window restarts here."""
        for layer in self.layers:
            layer.length = 0
