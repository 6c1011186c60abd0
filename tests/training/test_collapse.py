"""A run that learned nothing beyond word frequencies says so (issue 28, item 5): one note when its final
validation loss stays near the unigram entropy of the training tokens (oracle: the entropy counted by hand)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from minigpt_geom.cli import main
from minigpt_geom.text.token_files import load_tokens
from minigpt_geom.training.loop import CollapseWarning, unigram_entropy

from tiny_training import run, tiny_model


def test_unigram_entropy_is_the_frequencies_entropy(tokens):
    ids = load_tokens(tokens).train
    counts = Counter(ids.tolist())
    expected = -sum(n / len(ids) * math.log(n / len(ids)) for n in counts.values())
    assert unigram_entropy(ids) == pytest.approx(expected, rel=1e-12)
    assert unigram_entropy(np.array([7, 7, 7])) == 0


def test_a_run_that_learned_nothing_is_one_note(tokens, tiny_checkpoint, tmp_path, one_thread):
    with pytest.warns(CollapseWarning, match="stayed near the training tokens' unigram entropy"):
        run(tiny_model("dyt"), tokens, tiny_checkpoint, tmp_path, steps=3, warmup_steps=1, eval_interval=3,
            learning_rate=1e-9)


@pytest.mark.slow
def test_the_command_line_prints_the_note_in_one_line(corpus, tiny_checkpoint, tmp_path, capsys):
    argv = ["train", str(corpus), "-o", str(tmp_path), "--tokenizer", str(tiny_checkpoint), "--pattern", "*.py",
            "--n-layer", "1", "--n-head", "1", "--n-embd", "16", "--n-ctx", "16", "--steps", "3", "--warmup", "1",
            "--lr", "1e-9", "--eval-interval", "3", "--eval-windows", "2", "--sample-tokens", "0"]  # not --quiet, which silences notes
    assert main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "unigram entropy" in line]
    assert len(notes) == 1 and notes[0].startswith("minigpt-geom train: note: the validation loss")
