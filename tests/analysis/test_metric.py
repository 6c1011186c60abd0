"""The metric of the causal experiments against NumPy, its checks, and the batch sizes a memory budget allows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minigpt_geom.analysis.batching import chunks, row_bytes, rows_per_pass
from minigpt_geom.analysis.metric import Contrast, normalised, single_token
from minigpt_geom.config import GPT2Config
from minigpt_geom.errors import InputError
from minigpt_geom.text.tokenizer import Tokenizer


def test_logit_difference_and_probability_match_numpy():
    logits = torch.randn(5, 37, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = logits.numpy()
    assert np.allclose(Contrast(3, 7).measure(logits).numpy(), z[:, 3] - z[:, 7], atol=1e-6)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert np.allclose(Contrast(3, None, "probability").measure(logits).numpy(), p[:, 3], atol=1e-6)


def test_normalised_is_zero_at_corrupted_one_at_clean_and_refuses_no_gap():
    values = torch.tensor([-1.0, 3.0, 1.0, 5.0])
    assert normalised(values, clean=3.0, corrupted=-1.0).tolist() == [0.0, 1.0, 0.5, 1.5]
    with pytest.raises(InputError, match="same metric"):
        normalised(values, 2.0, 2.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(answer=1, wrong=None), "needs a wrong word"),
    (dict(answer=1, wrong=1), "the same token"),
    (dict(answer=1, wrong=2, metric="loss"), "metric must be one of"),
])
def test_contrast_refuses_what_cannot_be_measured(kwargs, message):
    with pytest.raises(InputError, match=message):
        Contrast(**kwargs)


def test_contrast_checks_ids_against_the_vocabulary():
    Contrast(0, 99).check(100)
    with pytest.raises(InputError, match="wrong id 100 is outside"):
        Contrast(0, 100).check(100)


def test_single_token_words_and_a_hint_for_the_missing_space(tiny_checkpoint):
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    spaced = next(word for word in (" the", " a", " to", " of") if len(tokenizer.encode(word)) == 1)
    assert single_token(tokenizer, spaced, "--answer") == tokenizer.encode(spaced)[0]
    bare = spaced.strip()
    assert len(tokenizer.encode(bare)) != 1  # in a vocabulary of 300 the bare form is more tokens
    with pytest.raises(InputError, match=f"did you mean {spaced!r}"):  # the hint names the spaced form
        single_token(tokenizer, bare, "--answer")
    with pytest.raises(InputError, match=r"--wrong 'zzzzqqqq' is \d+ tokens"):
        single_token(tokenizer, "zzzzqqqq", "--wrong")
    with pytest.raises(InputError, match="is 0 tokens"):
        single_token(tokenizer, "", "--answer")


def test_rows_per_pass_follows_the_budget_and_chunks_cover_every_row():
    config = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_ctx=1024, vocab_size=50257)
    one = row_bytes(config, 16)
    assert rows_per_pass(config, 16, 10 * one) == 10 and rows_per_pass(config, 16, one // 2) == 1
    assert row_bytes(config, 32) > 2 * row_bytes(config, 16) - config.vocab_size * 8  # grows at least with T
    with pytest.raises(InputError, match="budget must be positive"):
        rows_per_pass(config, 16, 0)
    parts = list(chunks(10, 4))
    assert [list(p) for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
