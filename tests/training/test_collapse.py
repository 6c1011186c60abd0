"""A run that collapsed says so, and a run that is only short does not (issue 28, item 5).

Measured at each evaluation and logged: the share of saturated tanh outputs at each DyT site and ‖x_L‖ (oracle:
forward hooks on the sites, tanh(αx) recomputed by hand). Warned once: every DyT site saturated; or, at the end,
a validation loss that stopped improving near the held-out unigram entropy (oracle: the entropy counted by hand).
A short healthy run over a 4096-word vocabulary, still far above that entropy but falling, gets no warning."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from minigpt_geom import GPT2, GPT2Config
from minigpt_geom.cli import main
from minigpt_geom.text.token_files import TokenData, load_tokens, tokenizer_fingerprint, windows
from minigpt_geom.training.collapse import (ALL_SATURATED, NEAR_UNIGRAM, SATURATED, CollapseWarning, Health,
                                            plateau_note, saturation_note, unigram_entropy)
from minigpt_geom.training.loop import read_log

from tiny_training import FAST, SHAPE, run, tiny_model


def test_unigram_entropy_is_the_frequencies_entropy(tokens):
    ids = load_tokens(tokens).train
    counts = Counter(ids.tolist())
    expected = -sum(n / len(ids) * math.log(n / len(ids)) for n in counts.values())
    assert unigram_entropy(ids) == pytest.approx(expected, rel=1e-12)
    assert unigram_entropy(np.array([7, 7, 7])) == 0


@pytest.mark.parametrize("losses, fires", [
    ([5.0, 5.0, 5.0], True),  # flat, above 0.9 × 5.2
    ([6.0, 5.0, 4.99, 4.98], True),  # the last three fell by 0.4 % only
    ([5.6, 5.3, 5.0], False),  # still falling: a short run, not a collapse
    ([5.0, 5.0], False),  # too few evaluations to tell
    ([4.6, 4.6, 4.6], False),  # flat, but well below the entropy: learned context
])
def test_the_plateau_rule(losses, fires):
    assert (plateau_note(losses, 5.2, dyt=False) is not None) is fires


@pytest.mark.parametrize("shares, fires", [
    ({"h.0.ln_1": 0.0, "h.1.ln_2": 0.6, "ln_f": 1.0}, True),  # the collapse seen on a 12 MB corpus: ln_f first
    ({"h.0.ln_1": 0.99, "h.0.ln_2": 0.97}, True),  # ln_f is another variant: every DyT site saturated
    ({"h.0.ln_1": 1.0, "h.0.ln_2": 1.0, "ln_f": 0.9}, False),  # ln_f still passes gradient back
    ({"h.0.ln_1": 0.99, "h.0.ln_2": 0.5}, False),
    ({}, False),  # no DyT site
])
def test_the_saturation_rule(shares, fires):
    note = saturation_note(7, Health(12.5, shares))
    assert (note is not None) is fires
    if fires:
        assert note.startswith("step 7: ") and all(name in note for name in shares) and "--dyt-gamma" in note


def test_a_run_that_learned_nothing_is_one_note(tokens, tiny_checkpoint, tmp_path, one_thread):
    with pytest.warns(CollapseWarning, match="stopped improving near the held-out unigram entropy") as caught:
        run(tiny_model("dyt"), tokens, tiny_checkpoint, tmp_path, steps=3, warmup_steps=1, eval_interval=1,
            learning_rate=1e-9)
    assert len([w for w in caught if w.category is CollapseWarning]) == 1


def site_shares_by_hand(model: GPT2, tokens, context: int, n_windows: int, micro_batch: int):
    """(each DyT site's share of |tanh(αx)| > SATURATED, mean ‖x_L‖) on the first evaluation micro-batch, from
    forward hooks that keep each site's input x."""
    val = load_tokens(tokens).val
    starts = torch.linspace(0, len(val) - context - 1, n_windows).long()[:micro_batch]
    x, _ = windows(val, starts, context)
    inputs = {}
    hooks = [site.register_forward_pre_hook(lambda module, args, name=name: inputs.setdefault(name, args[0]))
             for name, site in model.norm_sites().items()]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    shares = {name: (torch.tanh(site.alpha * inputs[name]).abs() > SATURATED).double().mean().item()
              for name, site in model.norm_sites().items()}
    return shares, torch.linalg.vector_norm(inputs["ln_f"], dim=-1).mean().item()


@pytest.mark.parametrize("alpha", [100.0, 0.5])  # partly saturated at step 0; DyT's own α₀, not at all
def test_log_csv_holds_the_most_saturated_site_and_the_residual_norm(alpha, tokens, tiny_checkpoint, tmp_path,
                                                                      one_thread):
    model = tiny_model("dyt")
    for site in model.norm_sites().values():
        site.alpha.data.fill_(alpha)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(model, tokens, tiny_checkpoint, tmp_path, steps=0)
    assert not [w for w in caught if w.category is CollapseWarning]
    shares, residual_norm = site_shares_by_hand(model, tokens, SHAPE["n_ctx"], FAST["eval_windows"],
                                                FAST["batch_size"])
    row = read_log(tmp_path / "log.csv")[0]
    assert row.dyt_saturation == pytest.approx(max(shares.values()), rel=1e-5, abs=1e-12)
    assert row.residual_norm == pytest.approx(residual_norm, rel=1e-5)
    if alpha == 100.0:
        assert 0.05 < min(shares.values()) < ALL_SATURATED  # measured in between: the comparison has power


def test_a_run_whose_every_dyt_site_saturates_is_one_warning_naming_the_sites(tokens, tiny_checkpoint, tmp_path,
                                                                             one_thread):
    model = tiny_model("dyt")
    for site in model.norm_sites().values():
        site.alpha.data.fill_(1e4)  # tanh(10⁴ x) is ±1 wherever |x| > 3e-4
    with pytest.warns(CollapseWarning, match="DyT's tanh is saturated at ln_f") as caught:
        run(model, tokens, tiny_checkpoint, tmp_path, steps=2, warmup_steps=1, eval_interval=1)
    notes = [str(w.message) for w in caught if w.category is CollapseWarning and "saturated" in str(w.message)]
    assert len(notes) == 1  # once, though all three evaluations saw it
    assert all(name in notes[0] for name in model.norm_sites())
    assert all(option in notes[0] for option in ("--dyt-gamma", "--dyt-alpha", "--lr"))
    assert all(row.dyt_saturation > ALL_SATURATED for row in read_log(tmp_path / "log.csv"))


def markov_tokens(vocab: int, n: int, seed: int) -> np.ndarray:
    """n ids of a chain over `vocab` words in which each word has 8 possible successors (drawn Zipf-like, s = 0.7):
    a unigram entropy near 7 nats, as a 4096-word BPE's on English, and a conditional one of ln 8 = 2.1."""
    rng = np.random.default_rng(0)
    zipf = 1 / np.arange(1, vocab + 1) ** 0.7
    successors = rng.choice(vocab, size=(vocab, 8), p=zipf / zipf.sum())
    choice = np.random.default_rng(seed).integers(0, 8, n)
    ids, word = np.empty(n, dtype=np.uint16), 0
    for i in range(n):
        word = successors[word, choice[i]]
        ids[i] = word
    return ids


def test_a_short_healthy_run_on_a_4096_word_vocabulary_is_no_collapse(tiny_checkpoint, tmp_path, one_thread):
    """Its loss falls from ln 4096 = 8.3 towards the unigram entropy and is still above NEAR_UNIGRAM of it when
    the run ends (the old rule called that a collapse), but it is still falling."""
    from minigpt_geom.training.loop import TrainSettings, train

    vocab = 4096
    data = TokenData(markov_tokens(vocab, 40_000, 1), markov_tokens(vocab, 8_000, 2),
                     {"tokenizer": tokenizer_fingerprint(tiny_checkpoint), "vocab_size": vocab})
    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_ctx=32, vocab_size=vocab), seed=0)
    settings = TrainSettings(steps=30, batch_size=8, learning_rate=3e-3, warmup_steps=2, eval_interval=10,
                             eval_windows=8, sample_tokens=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = train(model, data, tiny_checkpoint, tmp_path, settings, progress=False)
    val = [row.val_loss for row in log if row.val_loss is not None]
    assert val[-1] > NEAR_UNIGRAM * unigram_entropy(data.val) and val[-1] < val[0] - 0.3  # short, and learning
    assert not [str(w.message) for w in caught if "collapse" in str(w.message)]


@pytest.mark.slow
def test_the_command_line_prints_the_note_in_one_line(corpus, tiny_checkpoint, tmp_path, capsys):
    argv = ["train", str(corpus), "-o", str(tmp_path), "--tokenizer", str(tiny_checkpoint), "--pattern", "*.py",
            "--n-layer", "1", "--n-head", "1", "--n-embd", "16", "--n-ctx", "16", "--steps", "3", "--warmup", "1",
            "--lr", "1e-9", "--eval-interval", "1", "--eval-windows", "2", "--sample-tokens", "0"]  # not --quiet, which silences notes
    assert main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "unigram entropy" in line]
    assert len(notes) == 1 and notes[0].startswith("minigpt-geom train: note: the validation loss stopped")
