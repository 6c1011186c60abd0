"""A text through the model: encode it within the context, then run one traced forward pass.

The lens, trajectory, norms and report analyses all start here. A text longer than the context is refused
before it is encoded whole: a token covers at most `longest` bytes of text (the vocabulary's longest entry),
so a text of more than n_ctx · longest bytes needs more than n_ctx tokens and is refused unread, and a
shorter one costs at most that many bytes of encoding before its length is known. (The tokenizer's own
`max_tokens` limit, once it has one, makes the same promise; this function is the one place to switch.)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Literal, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..model.gpt2 import GPT2
from ..model.trace import Trace, TraceRequest

if TYPE_CHECKING:
    from ..text.tokenizer import Tokenizer


def longest_token_bytes(tokenizer: Tokenizer) -> int:
    """The most bytes of text one token stands for."""
    return max(len(token) for token in tokenizer.decoder.values())


def encode_text(tokenizer: Tokenizer, text: str, n_ctx: int,
                allowed_special: Collection[str] | Literal["all"] = frozenset()) -> list[int]:
    """Token ids of `text`; InputError if it is empty or needs more than n_ctx tokens (see the module doc)."""
    if not text or not text.strip():
        raise InputError("the text is empty: give at least one word")
    longest = longest_token_bytes(tokenizer)
    n_bytes = len(text.encode("utf-8", "surrogatepass"))
    if n_bytes > n_ctx * longest:
        raise InputError(f"the text is {n_bytes} bytes long, at least {-(-n_bytes // longest)} tokens, longer than "
                         f"the model's context of {n_ctx} tokens; shorten it")
    ids = tokenizer.encode(text, allowed_special=allowed_special)
    if len(ids) > n_ctx:
        raise InputError(f"the text is {len(ids)} tokens long, longer than the model's context of {n_ctx} tokens; "
                         f"shorten it")
    return ids


def token_words(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of each token id on its own (" one", "stone", ...)."""
    return [tokenizer.decode([int(i)]) for i in ids]


@torch.inference_mode()
def trace_text(model: GPT2, tokenizer: Tokenizer, text: str, keep_attention: bool = False
               ) -> tuple[list[int], Tensor, Trace]:
    """Encode `text` and run one traced forward pass: (ids, logits [1, T, V], trace with states).

    keep_attention also keeps every head's pattern [L, 1, H, T, T] (L·H·T² floats: 600 MB at T = 1024 on 124M)."""
    ids = encode_text(tokenizer, text, model.config.n_ctx)
    idx = torch.tensor([ids], dtype=torch.long, device=model.wte.weight.device)
    logits, trace = model(idx, trace=TraceRequest(states=True, patterns=keep_attention))
    return ids, logits, trace
