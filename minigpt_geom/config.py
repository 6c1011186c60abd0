"""GPT-2 hyper-parameters, with the four published sizes as presets."""

from __future__ import annotations

import math

from dataclasses import dataclass

# Plausible upper bounds: far beyond any published GPT-2 (xl: 48 layers, 1600 wide, 1024 positions, 50257 words),
# small enough that a hostile file or config cannot ask for a model that fills memory.
LIMITS = {"n_layer": 1000, "n_embd": 2**16, "n_head": 2**16, "n_ctx": 2**20, "vocab_size": 2**21}
FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: the model computes in float32, so no ε or scale beyond it


def check_count(name: str, value: object, limit: int) -> None:
    """Raise TypeError unless value is an int (a bool is not), ValueError unless 1 <= value <= limit."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if not 1 <= value <= limit:
        raise ValueError(f"{name} must be between 1 and {limit}, got {value}")


def check_epsilon(name: str, value: object) -> None:
    """Raise TypeError unless value is a real number, ValueError unless 0 < value ≤ float32's largest.

    Large values are legitimate: LN-free checkpoints switch layer norm off with ε = 1e12 (see lnfree.py)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not 0 < value < math.inf:  # ε ≤ 0, NaN or inf makes σ² + ε zero or NaN for some x: every logit NaN
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    if value > FLOAT32_MAX:  # σ² + ε is computed in float32: ε = 1e300 would be inf there
        raise ValueError(f"{name} must be at most float32's largest, {FLOAT32_MAX:.4g}, got {value:g}")


def check_probability(name: str, value: object) -> None:
    """Raise TypeError unless value is a real number, ValueError unless 0 ≤ value < 1 (a dropout probability:
    p = 1 would zero everything and scale by 1/(1 − p) = ∞)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not 0 <= value < 1:  # NaN fails this too
        raise ValueError(f"{name} must be a probability with 0 ≤ p < 1, got {value}")


@dataclass(frozen=True)
class GPT2Config:
    """Shape of a GPT-2: n_layer blocks of n_head heads over an n_embd-dimensional residual stream."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_ctx: int = 1024
    vocab_size: int = 50257
    ln_eps: float = 1e-5
    dropout: float = 0.0  # p of GPT-2's three dropouts, in training mode only (model/dropout.py); nanoGPT's one p

    def __post_init__(self) -> None:
        for name, limit in LIMITS.items():
            check_count(f"GPT2Config.{name}", getattr(self, name), limit)
        check_epsilon("GPT2Config.ln_eps", self.ln_eps)
        check_probability("GPT2Config.dropout", self.dropout)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        """d_head = n_embd / n_head (64 in every published GPT-2)."""
        return self.n_embd // self.n_head


def site_name(layer: int, kind: str) -> str:
    """The name of a block's norm site, as checkpoints and traces write it: site_name(3, "ln_1") = "h.3.ln_1"."""
    return f"h.{layer}.{kind}"


def norm_site_names(n_layer: int) -> list[str]:
    """Every norm site of an n_layer model in forward order: h.0.ln_1, h.0.ln_2, …, ln_f."""
    return [site_name(layer, kind) for layer in range(n_layer) for kind in ("ln_1", "ln_2")] + ["ln_f"]


PRESETS: dict[str, GPT2Config] = {
    "gpt2": GPT2Config(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPT2Config(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": GPT2Config(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPT2Config(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}
