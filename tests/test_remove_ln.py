"""Removing layer norm by fine-tuning: every site ends fixed-σ, the export in the ε = 1e12 convention gives the
fixed-σ model's logits here (as norm="none") and in transformers, and the switches are shown as they happen."""

from __future__ import annotations

import pytest
import torch
import transformers

from minigpt_geom import GPT2
from minigpt_geom.data import load_tokens
from minigpt_geom.export import load_model
from minigpt_geom.lnfree import sites
from minigpt_geom.lnfree import ln_free_checkpoint
from minigpt_geom.remove_ln import remove_layer_norm
from minigpt_geom.train import TrainSettings
from tiny_training import FAST, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def removed(tokens, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("ln-free")
    model = tiny_model()
    settings = TrainSettings(**{**FAST, "steps": 20, "eval_interval": 10})
    log = remove_layer_norm(model, load_tokens(tokens), tiny_checkpoint, out, settings, progress=True)
    return model, out, log


def test_every_site_ends_fixed_and_the_run_goes_on(removed):
    model, out, log = removed
    assert all(model.get_submodule(site).variant.name == "fixed_sigma" for site in sites(model))
    assert all(model.get_submodule(site).sigma.item() > 0 for site in sites(model))
    assert (out / "run" / "log.csv").is_file() and log[-1].step == 20
    resumed = load_model(out / "run")  # the run's own checkpoint keeps the fixed-σ sites and their σ
    assert all(resumed.get_submodule(site).variant.name == "fixed_sigma" for site in sites(resumed))


@torch.no_grad()
def test_export_gives_the_fixed_sigma_logits_here_and_in_transformers(removed):
    model, out, _ = removed
    idx = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    expected = model.eval()(idx)
    with pytest.warns(UserWarning, match="switched off"):
        ln_free = GPT2.from_pretrained(out)
    assert all(ln_free.get_submodule(site).variant.name == "none" for site in sites(ln_free))
    assert (ln_free(idx) - expected).abs().max() <= TOLERANCE
    reference = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert (reference(idx).logits - expected).abs().max() <= TOLERANCE


def test_export_refuses_a_model_with_layer_norm_left(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="every site must be fixed-σ first"):
        ln_free_checkpoint(tiny_model())


def test_progress_names_each_switched_site(tokens, tiny_checkpoint, tmp_path, capsys):
    settings = TrainSettings(**{**FAST, "steps": 10, "eval_interval": 10})
    remove_layer_norm(tiny_model(), load_tokens(tokens), tiny_checkpoint, tmp_path, settings, progress=True)
    printed = capsys.readouterr()
    text = printed.out + printed.err
    for site in ("h.0.ln_2", "h.1.ln_2", "h.0.ln_1", "h.1.ln_1", "ln_f"):
        assert f"{site} -> fixed σ" in text
    assert "(5/5 sites)" in text


def test_cli_remove_ln_writes_a_model_that_loads_without_layer_norm(corpus, tiny_checkpoint, tmp_path):
    from minigpt_geom.cli import main

    argv = ["remove-ln", str(corpus), "--weights", str(tiny_checkpoint), "-o", str(tmp_path), "--steps", "6",
            "--batch-size", "4", "--context", "32", "--eval-interval", "6", "--eval-windows", "4",
            "--sample-tokens", "0", "--quiet", "--pattern", "*.py"]
    assert main(argv) == 0
    with pytest.warns(UserWarning, match="switched off"):
        model = GPT2.from_pretrained(tmp_path)
    assert all(model.get_submodule(site).variant.name == "none" for site in sites(model))
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "run" / "log.csv").is_file()


@pytest.mark.parametrize("command", ["train", "remove-ln"])
def test_cli_bad_device_is_one_line(command, corpus, tiny_checkpoint, tmp_path, capsys):
    from minigpt_geom.cli import main

    argv = [command, str(corpus), "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "out"), "--device", "bogus"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"minigpt-geom {command}: error: --device 'bogus' cannot be used here")
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()
