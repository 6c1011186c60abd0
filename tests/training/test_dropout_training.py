"""`train --dropout P` (issue 28): the run's steps drop out with p, its evaluations do not, and the checkpoint's
config.json states p under transformers' three names."""

from __future__ import annotations

import json

import pytest

from minigpt_geom.cli import main

from tiny_training import run, tiny_model


@pytest.mark.slow  # two training runs
def test_dropout_changes_the_training_loss_not_the_evaluations_and_is_saved(tokens, tiny_checkpoint, tmp_path,
                                                                            one_thread):
    logs = {}
    for p in (0.0, 0.2):
        model = tiny_model().eval()
        logs[p] = run(model, tokens, tiny_checkpoint, tmp_path / str(p), steps=1, warmup_steps=0, dropout=p)
        assert not model.training and model.config.dropout == p  # its own mode again; p is the model's now
        stated = json.loads((tmp_path / str(p) / "config.json").read_text())
        assert [stated[k] for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop")] == [p, p, p]
    plain, dropped = logs[0.0][0], logs[0.2][0]  # step 0: the same weights in both runs
    assert dropped.val_loss == plain.val_loss  # evaluated in eval mode: no mask
    assert abs(dropped.train_loss - plain.train_loss) > 1e-3  # the step itself ran with masks


@pytest.mark.parametrize("value", ["1", "-0.1", "nan"])
def test_an_impossible_dropout_is_one_line_naming_the_option(value, corpus, tiny_checkpoint, tmp_path, capsys):
    argv = ["train", str(corpus), "-o", str(tmp_path / "run"), "--tokenizer", str(tiny_checkpoint), "--dropout", value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--dropout must be a probability with 0 ≤ p < 1" in err
    assert not (tmp_path / "run").exists()
