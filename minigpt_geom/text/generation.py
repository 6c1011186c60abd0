"""Text generation: continue a prompt one token at a time, reusing the keys and values already computed.

    prefill   logits = model(prompt, cache=cache, last_only=True)   the whole prompt once, [B, 1, vocab]
    decode    logits = model(x_t, cache=cache)                      one new position per step, [B, 1, vocab]
    choose    x_t+1 ~ softmax(filter(logits / τ))      or argmax when τ = 0 (greedy); see `Sampling`

Without the cache every step recomputes every earlier position: O(T²) work for T tokens instead of O(T).

Past the context, a sliding window, as nanoGPT's sampling does: the model reads the last n_ctx tokens at
positions 0 … n_ctx − 1 (GPT-2's positions are absolute, so a key computed at position p cannot move to p − 1).
When the cache is full it is restarted: the window's last n_ctx − s + 1 tokens are re-encoded from position 0
(a prefill) and the next s − 1 tokens are decoded with the cache again (s = `window_step`). With s = 1, the
default, every token past the context reads the full n_ctx tokens before it, the tokens of nanoGPT's crop
`idx[:, -n_ctx:]` at every step, at the price of one n_ctx-token forward pass per token; a larger s re-encodes
once every s tokens, and the tokens just after a restart read n_ctx − s + 1 tokens. A prompt longer than the
context is cropped the same way: the model reads its last n_ctx tokens.

Text in, text out: `generate_text` encodes a batch of prompts, stops each continuation at <|endoftext|> or at
the first of its stop strings (left out of the text), and returns the new text of each. GPT-2's positions are
absolute and the model takes no padding mask, so prompts of the same length in tokens run as one batch, and
prompts of different lengths in separate batches: each continuation is the one its prompt would get alone.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..model.cache import KVCache
from ..model.dropout import in_mode
from ..errors import InputError

from .tokenizer import ENDOFTEXT

if TYPE_CHECKING:
    from ..model.edits import Edit
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


def check_length(model: GPT2, idx: Tensor, max_new_tokens: int, window_step: int = 1) -> None:
    """Raise InputError unless the window of idx the model reads is valid input, max_new_tokens ≥ 0 and
    1 ≤ window_step ≤ n_ctx."""
    model.check_input(idx[:, -model.config.n_ctx:])  # a longer prompt is cropped: the model never reads the rest
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be a whole number ≥ 0, got {max_new_tokens}")
    n_ctx = model.config.n_ctx
    if not (isinstance(window_step, int) and 1 <= window_step <= n_ctx):
        raise InputError(f"window_step must be a whole number from 1 to the context of {n_ctx}, got {window_step}")


# ---- the generation loop ----------------------------------------------------------------------


def generate_stream(model: GPT2, idx: Tensor, max_new_tokens: int, sampling: Sampling = Sampling(), *,
                    eos_id: int | None = None, use_cache: bool = True, window_step: int = 1,
                    edits: Sequence[Edit] = ()) -> Iterator[Tensor]:
    """Yield the next token of each sequence, ids [B], as soon as it is chosen; prompt idx [B, T].

    A sequence that produced `eos_id` is finished: it yields `eos_id` from then on, and the stream ends
    once every sequence is finished (or after max_new_tokens). Past the context the window slides (see the
    module doc; `window_step` s). `edits` (model/edits.py; steering, say) apply to every position of every
    forward pass: the prompt's and each new token's. Bad input raises InputError here, before the first
    token is asked for; the ids are checked once, not at every step."""
    check_length(model, idx, max_new_tokens, window_step)
    check_generation_edits(model, idx, max_new_tokens, edits)
    idx = idx.to(model.wte.weight.device).long()  # a CPU prompt for a CUDA model: sample where the logits are
    return decode_loop(model, idx, max_new_tokens, sampling, sampling.generator(idx.device), eos_id, use_cache,
                       window_step, tuple(edits))


def check_generation_edits(model: GPT2, idx: Tensor, max_new_tokens: int, edits: Sequence[Edit]) -> None:
    """InputError unless each edit names no positions (generation edits every token, and past the context the
    positions slide) and holds for the prompt and for the longest window generation reaches."""
    for n, edit in enumerate(edits if isinstance(edits, (list, tuple)) else ()):
        if getattr(edit, "positions", None) is not None:
            raise InputError(f"edits[{n}].positions: generation edits every token, so its edits name no positions; "
                             "edit a prompt's positions with model(idx, edits=...)")
    B, T = idx[:, -model.config.n_ctx:].shape
    model.check_edits(edits, B, T)
    model.check_edits(edits, B, min(T + max_new_tokens - 1, model.config.n_ctx))  # their sources cover it too


@torch.inference_mode()
def decode_loop(model: GPT2, idx: Tensor, max_new_tokens: int, sampling: Sampling, generator: torch.Generator,
                eos_id: int | None, use_cache: bool, window_step: int = 1, edits: tuple[Edit, ...] = ()
                ) -> Iterator[Tensor]:
    """The loop behind generate_stream (input already checked): prefill, then one position per step, the
    cache restarted on the last n_ctx − window_step + 1 tokens whenever it is full."""
    if max_new_tokens == 0:
        return
    n_ctx = model.config.n_ctx

    def run(ids: Tensor, last_only: bool = False) -> Tensor:
        """The logits of the last position after a pass over ids, the edits applied to each of its positions."""
        start = cache.length if cache is not None else 0
        plan = model.check_edits(list(edits), ids.shape[0], ids.shape[1], start)
        with in_mode(model, training=False):  # no dropout, even in a model being trained (a sample of it)
            return model.run(ids, cache=cache, last_only=last_only, edits=plan)[:, -1]

    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)  # [B]
    cache = KVCache(model.config.n_layer, n_ctx) if use_cache else None
    window = idx[:, -n_ctx:]  # [B, ≤ n_ctx]: the last tokens, all the model can read
    logits = run(window, last_only=True)  # prefill: every position at once -> [B, V]
    for step in range(max_new_tokens):
        token = next_token(logits, sampling, generator)  # [B], always a valid id: no check needed
        if eos_id is not None:
            token = token.masked_fill(finished, eos_id)
            finished |= token == eos_id
        yield token
        if step == max_new_tokens - 1 or (eos_id is not None and bool(finished.all())):
            return
        window = torch.cat([window, token[:, None]], dim=1)[:, -n_ctx:]
        if cache is not None and cache.length < n_ctx:
            logits = run(token[:, None])  # one new position; the cache grows by one
        elif cache is not None:  # full: restart from position 0 on the window's last n_ctx − s + 1 tokens
            cache.clear()
            logits = run(window[:, window_step - 1:], last_only=True)
        else:
            logits = run(window, last_only=True)  # recompute every position of the window


def generate(model: GPT2, idx: Tensor, max_new_tokens: int, sampling: Sampling = Sampling(), *,
             eos_id: int | None = None, use_cache: bool = True, window_step: int = 1,
             edits: Sequence[Edit] = ()) -> Tensor:
    """Prompt idx [B, T] -> idx followed by n ≤ max_new_tokens new tokens, [B, T + n] (see generate_stream)."""
    tokens = list(generate_stream(model, idx, max_new_tokens, sampling, eos_id=eos_id, use_cache=use_cache,
                                  window_step=window_step, edits=edits))
    return torch.cat([idx.long(), torch.stack(tokens, dim=1).to(idx.device)], dim=1) if tokens else idx.long()


# ---- ids to text, as they arrive ----------------------------------------------------------------


class TextStream:
    """One sequence's new text as its ids arrive: whole UTF-8 characters only, cut before its first stop string.

    `push(id)` returns the text that can be shown now. A character whose bytes span ids waits for its last
    byte (an incremental UTF-8 decoder: bytes that can never become valid UTF-8 become U+FFFD, as in
    `tokenizer.decode`), and text that might be the start of a stop string waits until it is clear: the
    longest end of the text that begins some stop string is held back, so a stop string split across ids
    is still found and never shown. After a stop string `done` is set and later ids are ignored."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = check_stop_strings(stop)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""  # text held back: it might begin a stop string
        self.done = False

    def push(self, token_id: int) -> str:
        """The text that token_id completes and that is clear of every stop string ("" if none yet)."""
        if self.done:
            return ""
        return self.release(self.held + self.decoder.decode(self.tokenizer.decode_bytes([token_id])))

    def finish(self) -> str:
        """The text still held back at the end of the sequence (an unfinished character as U+FFFD); then done."""
        if self.done:
            return ""
        text = self.release(self.held + self.decoder.decode(b"", final=True))
        text, self.held, self.done = text + self.held, "", True  # no stop string can complete any more
        return text

    def release(self, text: str) -> str:
        """Cut `text` at its first stop string (done), or hold back its end that could begin one."""
        found = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if found:
            self.done, self.held = True, ""
            return text[:min(found)]
        keep = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep]


def check_stop_strings(stop: Sequence[str]) -> tuple[str, ...]:
    """The stop strings as a tuple; InputError for an empty one or a bare string (a string is not a list)."""
    if isinstance(stop, str):
        raise InputError(f"stop must be a list of strings, got the string {stop!r}: write [{stop!r}]")
    stop = tuple(stop)
    if not all(isinstance(s, str) and s for s in stop):
        raise InputError(f"every stop string must be a non-empty string, got {list(stop)!r}")
    return stop


def stream_text(tokenizer: Tokenizer, ids: Iterable[int]) -> Iterator[str]:
    """Yield the new complete text after each id; a character whose UTF-8 bytes span ids waits for its last byte."""
    stream = TextStream(tokenizer)
    for i in ids:
        text = stream.push(i)
        if text:
            yield text
    tail = stream.finish()
    if tail:
        yield tail


# ---- text in, text out: a batch of prompts ------------------------------------------------------------


def stream_completions(model: GPT2, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int,
                       sampling: Sampling = Sampling(), *, stop: Sequence[str] = (), use_cache: bool = True,
                       window_step: int = 1) -> Iterator[tuple[int, str]]:
    """Yield (prompt number, new text) as each piece of each prompt's continuation is complete.

    Each continuation ends at <|endoftext|> (when the vocabulary has it), at its first stop string (left out)
    or after max_new_tokens. An empty prompt starts after <|endoftext|>, as GPT-2's unconditional samples do.
    Prompts of one length in tokens run as one batch, the batches in the order their first prompt comes;
    every argument is checked here, before the first piece is asked for."""
    if isinstance(prompts, str):
        raise InputError(f"prompts must be a list of strings, got the string {prompts!r}: write [{prompts!r}]")
    check_stop_strings(stop)
    eos_id = tokenizer.special_tokens.get(ENDOFTEXT)
    batches: dict[int, list[int]] = {}  # length in tokens -> the prompts of that length
    encoded = [prompt_ids(tokenizer, prompt, eos_id) for prompt in prompts]
    for number, ids in enumerate(encoded):
        batches.setdefault(len(ids), []).append(number)
    streams = [generate_stream(model, torch.tensor([encoded[n] for n in numbers]), max_new_tokens, sampling,
                               eos_id=eos_id, use_cache=use_cache, window_step=window_step)
               for numbers in batches.values()]  # every batch checked here, before any runs
    return completion_pieces(tokenizer, list(batches.values()), streams, stop, eos_id)


def completion_pieces(tokenizer: Tokenizer, batches: list[list[int]], streams: list[Iterator[Tensor]],
                      stop: Sequence[str], eos_id: int | None) -> Iterator[tuple[int, str]]:
    """The loop behind stream_completions: each batch's token stream as text, prompt by prompt."""
    for numbers, tokens in zip(batches, streams):
        texts = [TextStream(tokenizer, stop) for _ in numbers]
        for token in tokens:
            for number, text, i in zip(numbers, texts, token.tolist()):
                piece = text.finish() if i == eos_id else text.push(i)
                if piece:
                    yield number, piece
            if all(text.done for text in texts):
                break  # every row stopped (eos or a stop string): no more tokens are computed
        for number, text in zip(numbers, texts):
            piece = text.finish()
            if piece:
                yield number, piece


def prompt_ids(tokenizer: Tokenizer, prompt: str, eos_id: int | None) -> list[int]:
    """A prompt's ids (special tokens such as <|endoftext|> read as such); [eos] for an empty prompt."""
    if not isinstance(prompt, str):
        raise InputError(f"a prompt must be a string, got {type(prompt).__name__}")
    if prompt:
        return tokenizer.encode(prompt, allowed_special="all")
    if eos_id is None:
        raise InputError("an empty prompt starts after <|endoftext|>, which this vocabulary lacks: give a prompt")
    return [eos_id]


def generate_text(model: GPT2, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int,
                  sampling: Sampling = Sampling(), *, stop: Sequence[str] = (), use_cache: bool = True,
                  window_step: int = 1) -> list[str]:
    """The new text after each prompt, in order (see stream_completions): a batch of prompts in, their
    continuations out, each ending at <|endoftext|>, before its first stop string, or after max_new_tokens."""
    texts = [""] * len(prompts)
    for number, piece in stream_completions(model, tokenizer, prompts, max_new_tokens, sampling, stop=stop,
                                            use_cache=use_cache, window_step=window_step):
        texts[number] += piece
    return texts
