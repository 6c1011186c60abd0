"""Text generation: continue a prompt one token at a time, reusing the keys and values already computed.

    prefill   logits = model(prompt, cache=cache, last_only=True)   the whole prompt once, [B, 1, vocab]
    decode    logits = model(x_t, cache=cache)                      one new position per step, [B, 1, vocab]
    choose    x_t+1 ~ softmax(filter(logits / τ))      or argmax when τ = 0 (greedy); see `Sampling`

Without the cache every step recomputes every earlier position: O(T²) work for T tokens instead of O(T).
The prompt plus the new tokens must fit the context: `prompt + max_new_tokens > n_ctx` is an InputError
(asked up front, so a generation never stops half-way for lack of positions).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..model.cache import KVCache
from ..errors import InputError

if TYPE_CHECKING:
    from ..model.gpt2 import GPT2
    from .tokenizer import Tokenizer


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen; checked once, here. temperature 0 is greedy (argmax)."""

    temperature: float = 1.0
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set of most likely tokens with probability ≥ p
    seed: int | None = None  # a private generator's seed (None: fresh from the OS); the global RNG is untouched

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature < float("inf")):
            raise InputError(f"temperature must be a finite number ≥ 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise InputError(f"top_k must be a whole number ≥ 1, got {self.top_k}")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not (isinstance(self.seed, int) and 0 <= self.seed < 2**64):
            raise InputError(f"seed must be a whole number in [0, 2^64), got {self.seed}")

    def generator(self, device: torch.device) -> torch.Generator:
        """A generator on `device`, seeded with `seed` (or from the OS when None)."""
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator

# ---- choosing the next token ------------------------------------------------------------------


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (ties with the k-th kept too), −∞ elsewhere: [B, V] -> [B, V]."""
    if k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # [B, 1]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability sums to ≥ p, −∞ elsewhere."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # Σ of the strictly more likely tokens
    drop_sorted = mass_before >= p  # the set already reached p without this token
    drop_sorted[..., 0] = False  # the top one always stays (mass 0 before it; p far below float32's range too)
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token(logits: Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> Tensor:
    """The next token of each row, logits [B, V] -> ids [B]: argmax when temperature == 0, else a sample.

    InputError when a logit is NaN or +inf (weights so large that the forward pass overflows): no token is
    more likely than another then, and a sample or an argmax would be an arbitrary one."""
    if bool((logits.isnan() | logits.isposinf()).any()):
        raise InputError("the model's logits are NaN or infinite (its weights overflow in the forward pass): "
                         "no next token can be chosen")
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    # subtract the maximum before dividing: (s − max)/τ ≤ 0 never overflows; in float64, where τ may be as small
    # as 1e-300 (0 in float32, which would make the maximum 0/0 = NaN)
    logits = (logits.double() - logits.double().amax(dim=-1, keepdim=True)) / sampling.temperature
    if sampling.top_k is not None:
        logits = filter_top_k(logits, sampling.top_k)
    if sampling.top_p is not None:
        logits = filter_top_p(logits, sampling.top_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def check_length(model: GPT2, idx: Tensor, max_new_tokens: int) -> None:
    """Raise InputError unless idx is valid input and the prompt plus max_new_tokens fits the context."""
    model.check_input(idx)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be a whole number ≥ 0, got {max_new_tokens}")
    T, n_ctx = idx.shape[1], model.config.n_ctx
    if T + max_new_tokens > n_ctx:
        raise InputError(
            f"prompt of {T} tokens + {max_new_tokens} new tokens = {T + max_new_tokens} is longer than the "
            f"context of {n_ctx} positions; ask for at most {max(n_ctx - T, 0)} new tokens or shorten the prompt"
        )


# ---- the generation loop ----------------------------------------------------------------------


def generate_stream(model: GPT2, idx: Tensor, max_new_tokens: int, sampling: Sampling = Sampling(), *,
                    eos_id: int | None = None, use_cache: bool = True) -> Iterator[Tensor]:
    """Yield the next token of each sequence, ids [B], as soon as it is chosen; prompt idx [B, T].

    A sequence that produced `eos_id` is finished: it yields `eos_id` from then on, and the stream ends
    once every sequence is finished (or after max_new_tokens). Bad input raises InputError here, before the
    first token is asked for; the ids are checked once, not at every step."""
    check_length(model, idx, max_new_tokens)
    idx = idx.to(model.wte.weight.device).long()  # a CPU prompt for a CUDA model: sample where the logits are
    return decode_loop(model, idx, max_new_tokens, sampling, sampling.generator(idx.device), eos_id, use_cache)


@torch.inference_mode()
def decode_loop(model: GPT2, idx: Tensor, max_new_tokens: int, sampling: Sampling, generator: torch.Generator,
                eos_id: int | None, use_cache: bool) -> Iterator[Tensor]:
    """The loop behind generate_stream (input already checked): prefill, then one position per step."""
    if max_new_tokens == 0:
        return
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)  # [B]
    cache = KVCache(model.config.n_layer, model.config.n_ctx) if use_cache else None
    sequence = idx  # [B, T + t], only kept without the cache
    logits = model.run(idx, cache=cache, last_only=True)[:, -1]  # prefill: every prompt position at once -> [B, V]
    for step in range(max_new_tokens):
        token = next_token(logits, sampling, generator)  # [B], always a valid id: no check needed
        if eos_id is not None:
            token = token.masked_fill(finished, eos_id)
            finished |= token == eos_id
        yield token
        if step == max_new_tokens - 1 or (eos_id is not None and bool(finished.all())):
            return
        if use_cache:
            logits = model.run(token[:, None], cache=cache)[:, -1]  # one new position; the cache grows by one
        else:
            sequence = torch.cat([sequence, token[:, None]], dim=1)
            logits = model.run(sequence, last_only=True)[:, -1]  # recompute every position


def generate(model: GPT2, idx: Tensor, max_new_tokens: int, sampling: Sampling = Sampling(), *,
             eos_id: int | None = None, use_cache: bool = True) -> Tensor:
    """Prompt idx [B, T] -> idx followed by n ≤ max_new_tokens new tokens, [B, T + n] (see generate_stream)."""
    tokens = list(generate_stream(model, idx, max_new_tokens, sampling, eos_id=eos_id, use_cache=use_cache))
    return torch.cat([idx.long(), torch.stack(tokens, dim=1).to(idx.device)], dim=1) if tokens else idx.long()


# ---- ids to text, as they arrive ----------------------------------------------------------------


def stream_text(tokenizer: Tokenizer, ids: Iterable[int]) -> Iterator[str]:
    """Yield the new complete text after each id; a character whose UTF-8 bytes span ids waits for its last byte.

    `tokenizer.decode_bytes(ids)` gives the raw bytes; an incremental UTF-8 decoder holds back an
    unfinished multi-byte character instead of printing U+FFFD for each half (bytes that can never
    become valid UTF-8 do become U+FFFD, as in `tokenizer.decode`)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for i in ids:
        text = decoder.decode(tokenizer.decode_bytes([i]))
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail
