"""GPT-2 hyper-parameters, with the four published sizes as presets."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class GPT2Config:
    """Shape of a GPT-2: n_layer blocks of n_head heads over an n_embd-dimensional residual stream."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_ctx: int = 1024
    vocab_size: int = 50257
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "n_ctx", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPT2Config.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        """d_head = n_embd / n_head (64 in every published GPT-2)."""
        return self.n_embd // self.n_head

    def replace(self, **changes) -> "GPT2Config":
        """A copy with some fields changed."""
        return replace(self, **changes)


PRESETS: dict[str, GPT2Config] = {
    "gpt2": GPT2Config(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPT2Config(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": GPT2Config(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPT2Config(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}
