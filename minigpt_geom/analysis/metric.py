"""What a causal experiment measures: how strongly the model prefers an answer to a wrong word.

    logit difference   m = z_answer − z_wrong           (logits z at the last position; the softmax's
                                                          normaliser cancels, so m is linear in x̂ = LN_f(x_L))
    probability        m = p(answer) = softmax(z)_answer

A patching sweep reports each patched run's m raw, and normalised as is customary,

    (m − m_corrupted) / (m_clean − m_corrupted)        0 = the corrupted run, 1 = the clean run,

so that 1 means "this one activation restores the whole clean behaviour".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import InputError

if TYPE_CHECKING:
    from ..text.tokenizer import Tokenizer

METRICS = ("logit_diff", "probability")
METRIC_WORDS = {"logit_diff": "logit difference answer − wrong", "probability": "p(answer)"}


@dataclass(frozen=True)
class Contrast:
    """The answer a prompt should lead to, the wrong word it is measured against, and how."""

    answer: int  # token id
    wrong: int | None = None  # token id; needed by the logit difference
    metric: str = "logit_diff"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}", "metric")
        if self.metric == "logit_diff" and self.wrong is None:
            raise InputError("the logit difference needs a wrong word to compare the answer with", "wrong")
        if self.wrong is not None and self.wrong == self.answer:
            raise InputError("the answer and the wrong word are the same token: the logit difference would be 0",
                             "wrong")

    def check(self, vocab_size: int) -> None:
        """InputError unless both words are ids of a vocabulary of `vocab_size`."""
        for field, token in (("answer", self.answer), ("wrong", self.wrong)):
            if token is not None and not 0 <= token < vocab_size:
                raise InputError(f"{field} id {token} is outside the vocabulary [0, {vocab_size})", field)

    def measure(self, logits: Tensor) -> Tensor:
        """logits [..., V] (one position) -> m [...] in float32."""
        logits = logits.float()
        if self.metric == "logit_diff":
            return logits[..., self.answer] - logits[..., self.wrong]
        return torch.softmax(logits, dim=-1)[..., self.answer]


def normalised(values: Tensor, clean: float, corrupted: float) -> Tensor:
    """(m − m_corrupted) / (m_clean − m_corrupted): 0 = the corrupted run, 1 = the clean one.

    InputError when the two runs measure the same (nothing to restore, the ratio is undefined)."""
    gap = clean - corrupted
    if gap == 0:
        raise InputError(f"the clean and corrupted prompts give the same metric ({clean:.6g}): patching cannot "
                         "restore anything; choose prompts whose answers differ")
    return (values - corrupted) / gap


def single_token(tokenizer: Tokenizer, word: str, option: str) -> int:
    """The id of `word` if it is one token; InputError naming `option` otherwise (with the spaced form as a hint)."""
    ids = tokenizer.encode(word) if word else []
    if len(ids) == 1:
        return ids[0]
    hint = ""
    if word and not word.startswith(" ") and len(tokenizer.encode(" " + word)) == 1:
        hint = f" (did you mean {' ' + word!r}, with its leading space?)"
    pieces = ", ".join(repr(tokenizer.decode([i])) for i in ids)
    raise InputError(f"{option} {word!r} is {len(ids)} tokens ({pieces or 'none'}), not one{hint}", option)


def choose_contrast(tokenizer: Tokenizer, logits: Tensor, answer: str | None, wrong: str | None,
                    metric: str = "logit_diff", wrong_logits: Tensor | None = None) -> tuple[Contrast, str, str]:
    """The contrast the words name, or by default the most likely word of `logits` [V] as the answer and the
    most likely other word of `wrong_logits` (default: `logits`) as the wrong one; with the two words' texts."""
    answer_id = single_token(tokenizer, answer, "--answer") if answer is not None else int(logits.argmax())
    if wrong is not None:
        wrong_id = single_token(tokenizer, wrong, "--wrong")
    else:
        others = (logits if wrong_logits is None else wrong_logits).float().clone()
        others[answer_id] = float("-inf")
        wrong_id = int(others.argmax())
    contrast = Contrast(answer_id, wrong_id, metric)
    contrast.check(logits.shape[-1])
    return contrast, tokenizer.decode([answer_id]), tokenizer.decode([wrong_id])
