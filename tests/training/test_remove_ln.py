"""Removing layer norm by fine-tuning: every site ends fixed-σ, the export in the ε = 1e12 convention gives the
fixed-σ model's logits here (as norm="none") and in transformers, and the switches are shown as they happen."""

from __future__ import annotations

import pytest
import torch

from helpers import load_hf, needs
from minigpt_geom import GPT2
from minigpt_geom.text.token_files import load_tokens
from minigpt_geom.model.lnfree import ln_free_checkpoint
from minigpt_geom.errors import CheckpointError
from minigpt_geom.training.remove_ln import remove_layer_norm, start_sigma_log
from minigpt_geom.training.loop import TrainSettings
from tiny_training import FAST, tiny_model

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # every test here trains a model

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
    assert all(site.variant.name == "fixed_sigma" for site in model.norm_sites().values())
    assert all(site.sigma.item() > 0 for site in model.norm_sites().values())
    assert (out / "run" / "log.csv").is_file() and log[-1].step == 20
    resumed = GPT2.from_pretrained(out / "run")  # the run's own checkpoint keeps the fixed-σ sites and their σ
    assert all(site.variant.name == "fixed_sigma" for site in resumed.norm_sites().values())


@torch.no_grad()
def test_export_gives_the_fixed_sigma_logits_here_and_in_transformers(removed):
    needs("transformers")
    model, out, _ = removed
    idx = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    expected = model.eval()(idx)
    with pytest.warns(UserWarning, match="switched off"):
        ln_free = GPT2.from_pretrained(out)
    assert all(site.variant.name == "none" for site in ln_free.norm_sites().values())
    assert (ln_free(idx) - expected).abs().max() <= TOLERANCE
    reference = load_hf(out)
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


def test_cli_remove_ln_writes_a_model_that_loads_without_layer_norm_its_schedule_and_a_control(
        corpus, tiny_checkpoint, tmp_path, capsys):
    import csv

    from minigpt_geom.cli import main
    from minigpt_geom.training.remove_ln import removal_order, removal_schedule

    argv = ["remove-ln", str(corpus), "--weights", str(tiny_checkpoint), "-o", str(tmp_path), "--steps", "6",
            "--batch-size", "4", "--context", "32", "--eval-interval", "6", "--eval-windows", "4",
            "--sample-tokens", "0", "--quiet", "--pattern", "*.py", "--control"]
    assert main(argv) == 0
    with pytest.warns(UserWarning, match="switched off"):
        model = GPT2.from_pretrained(tmp_path)
    assert all(site.variant.name == "none" for site in model.norm_sites().values())
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "run" / "log.csv").is_file()

    with (tmp_path / "run" / "sigma.csv").open() as f:  # site, step, σ: the schedule as it happened
        rows = list(csv.DictReader(f))
    schedule = removal_schedule(removal_order(model), 6)
    assert [(row["site"], int(row["step"])) for row in rows] == \
        [(site, step) for step, due in sorted(schedule.items()) for site in due]
    fixed = GPT2.from_pretrained(tmp_path / "run")  # the run's last checkpoint holds each site's σ
    for row in rows:  # every digit: the float32 σ the model holds is the logged float64's, exactly
        assert torch.tensor(float(row["sigma"])).item() == fixed.get_submodule(row["site"]).sigma.item()

    out = capsys.readouterr().out.splitlines()
    control = GPT2.from_pretrained(tmp_path / "control")  # the control kept layer norm and trained as long
    assert all(site.variant.name == "layernorm" for site in control.norm_sites().values())
    assert out[-2].startswith("step 6: validation loss") and "without layer norm" in out[-2]
    assert out[-1].startswith("step 6: validation loss") and "with layer norm kept (the control run" in out[-1]


def test_remove_ln_says_an_ln_free_model_has_no_layer_norm_to_remove(removed, corpus, tmp_path, capsys):
    from minigpt_geom.cli import main

    _, ln_free, _ = removed
    argv = ["remove-ln", str(corpus), "--weights", str(ln_free), "-o", str(tmp_path / "again"), "--steps", "2",
            "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    *notes, error = err.splitlines()  # the loader's one-line LN-free note, then the error
    assert "has no layer norm to remove (its sites are none)" in error and all(": note: " in n for n in notes)


def test_train_fine_tunes_an_ln_free_checkpoint_and_saves_what_loads_back(removed, corpus, tmp_path, capsys):
    from minigpt_geom.cli import main

    _, ln_free, _ = removed
    out = tmp_path / "again"
    argv = ["train", str(corpus), "--weights", str(ln_free), "-o", str(out), "--steps", "4", "--warmup", "1",
            "--batch-size", "4", "--context", "32", "--eval-interval", "2", "--eval-windows", "4",
            "--sample-tokens", "0", "--pattern", "*.py", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    with pytest.warns(UserWarning, match="switched off"):
        before = GPT2.from_pretrained(ln_free)
    after = GPT2.from_pretrained(out)  # the norm="none" model with its own unembedding, as trained
    assert all(site.variant.name == "none" for site in after.norm_sites().values())
    assert not after.lm_head.tied and not torch.equal(after.lm_head.weight, before.lm_head.weight)
    idx = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(after(idx)).all()
    assert main(argv[:-1] + ["--resume", "--steps", "6", "--quiet"]) == 2  # --weights with --resume
    assert main(["train", str(corpus), "-o", str(out), "--resume", "--steps", "6", "--pattern", "*.py",
                 "--quiet"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "remove-ln"])
def test_cli_bad_device_is_one_line(command, corpus, tiny_checkpoint, tmp_path, capsys):
    from minigpt_geom.cli import main

    argv = [command, str(corpus), "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "out"), "--device", "bogus"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"minigpt-geom {command}: error: --device 'bogus' cannot be used here")
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["site,step,sigma\nh.0.ln_1,two,1.5\n", "site,sigma\nh.0.ln_1,1.5\n",
                                  "site,step,sigma\nh.0.ln_1\n"], ids=["not a number", "no step column", "short row"])
def test_a_damaged_sigma_csv_on_resume_is_one_checkpoint_error_and_stays(text, tmp_path):
    path = tmp_path / "sigma.csv"
    path.write_text(text)
    with pytest.raises(CheckpointError, match="sigma.csv is damaged.*move it away"):
        start_sigma_log(path, before_step=5)
    assert path.read_text() == text
