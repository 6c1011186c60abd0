"""DyT's starting α from the command line (issue 28, item 5): `init` and `train` start every dyt site at
--dyt-alpha, the value read back from the checkpoint, and ln_f's γ at --dyt-gamma; without a dyt site, or on
--resume, one line says why."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from minigpt_geom import GPT2
from minigpt_geom.cli import main

SMALL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--n-ctx", "32"]


def alphas(folder) -> dict[str, float]:
    """Each site's α as the checkpoint file holds it."""
    return {name: tensor.item() for name, tensor in load_file(folder / "model.safetensors").items()
            if name.endswith(".alpha")}


def test_init_starts_every_dyt_site_at_the_given_alpha(tiny_checkpoint, tmp_path):
    assert main(["init", "-o", str(tmp_path), "--tokenizer", str(tiny_checkpoint), *SMALL, "--norm", "dyt",
                 "--dyt-alpha", "0.125"]) == 0
    found = alphas(tmp_path)
    assert len(found) == 5 and set(found.values()) == {0.125}  # h.0.ln_1 … ln_f
    model = GPT2.from_pretrained(tmp_path)
    assert {site.alpha.item() for site in model.norm_sites().values()} == {0.125}


def test_a_mapping_sets_alpha_only_where_dyt_is(tiny_checkpoint, tmp_path):
    assert main(["init", "-o", str(tmp_path), "--tokenizer", str(tiny_checkpoint), *SMALL,
                 "--norm", '{"ln_f": "dyt"}', "--dyt-alpha", "2"]) == 0
    assert alphas(tmp_path) == {"ln_f.alpha": 2.0}


@pytest.mark.slow
def test_train_starts_a_new_dyt_model_at_the_given_alpha(corpus, tiny_checkpoint, tmp_path):
    argv = ["train", str(corpus), "-o", str(tmp_path), "--tokenizer", str(tiny_checkpoint), "--pattern", "*.py",
            *SMALL, "--norm", "dyt", "--dyt-alpha", "0.2", "--steps", "0", "--eval-windows", "1",
            "--sample-tokens", "0", "--quiet"]
    assert main(argv) == 0
    found = alphas(tmp_path)  # float32's 0.2, at step 0 before any update
    assert len(found) == 5 and set(found.values()) == {torch.tensor(0.2).item()}


@pytest.mark.parametrize("argv, said", [
    (["--dyt-alpha", "0.5"], "give --norm dyt"),
    (["--norm", "dyt", "--dyt-alpha", "0"], "must be > 0"),
    (["--norm", "dyt", "--dyt-alpha", "nan"], "finite"),
    (["--dyt-gamma", "8"], "ln_f is layernorm"),
    (["--norm", '{"h.0.ln_1": "dyt"}', "--dyt-gamma", "8"], "ln_f is layernorm"),
    (["--norm", "dyt", "--dyt-gamma", "-1"], "must be > 0"),
])
def test_a_dyt_start_that_cannot_apply_is_one_line(argv, said, tiny_checkpoint, tmp_path, capsys):
    assert main(["init", "-o", str(tmp_path / "m"), "--tokenizer", str(tiny_checkpoint), *SMALL, *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and said in err and not (tmp_path / "m").exists()


def test_dyt_gamma_starts_ln_f_gamma_alone(tiny_checkpoint, tmp_path):
    assert main(["init", "-o", str(tmp_path), "--tokenizer", str(tiny_checkpoint), *SMALL, "--norm", "dyt",
                 "--dyt-gamma", "32"]) == 0
    weights = load_file(tmp_path / "model.safetensors")
    assert torch.equal(weights["ln_f.weight"], torch.full((32,), 32.0))
    assert all(torch.equal(weights[f"h.{i}.{site}.weight"], torch.ones(32)) for i in range(2) for site in ("ln_1", "ln_2"))
    assert set(alphas(tmp_path).values()) == {0.5}  # α stays the paper's
