"""A checkpoint transformers' GPT-2 cannot compute is not GPT-2 to transformers (issue 28, item 1).

Oracle: transformers itself. A norm variant other than layer norm (or a folded, untied unembedding with its bias)
is saved under its own model_type, which AutoModelForCausalLM refuses and GPT2LMHeadModel.from_pretrained warns
about; layer-norm and LN-free checkpoints stay GPT-2, and transformers loads them with our logits. Our loader
reads the new marking and the old one (model_type "gpt2", the variant under minigpt_geom_norm alone); `verify`
says in one line that there is nothing to compare a variant with."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import Iterator

import pytest
import torch

from helpers import needs
from minigpt_geom import GPT2
from minigpt_geom.cli import main
from minigpt_geom.io.checkpoint import ARCHITECTURE, MODEL_TYPE, NORM_KEY
from minigpt_geom.model.lnfree import fix_sigma, ln_free_checkpoint

transformers = needs("transformers")

NOT_GPT2 = {  # what transformers has no GPT-2 for
    "rmsnorm": lambda m: m.with_norm("rmsnorm"),
    "sphere": lambda m: m.with_norm("sphere"),
    "dyt": lambda m: m.with_norm("dyt"),
    "fixed_sigma": lambda m: fixed(m, 3.0),
    "mixed": lambda m: m.with_norm({"ln_f": "none", "ln_1": "rmsnorm"}),
    "folded": lambda m: m.fold_ln(),
}
IDS = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(0))


def fixed(model: GPT2, sigma: float) -> GPT2:
    """Every site switched to fixed σ (each its own constant), on a copy sharing the weights."""
    copy = model.with_norm("layernorm")
    for k, site in enumerate(copy.norm_sites()):
        fix_sigma(copy, site, sigma + 0.1 * k)
    return copy


@contextmanager
def transformers_warnings() -> Iterator[list[str]]:
    """The warnings transformers logs inside the block. Its loggers do not propagate to the root logger (caplog
    sees nothing), and another test may have lowered their verbosity, so a handler and a level of our own."""
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def base(tiny_checkpoint) -> GPT2:
    return GPT2.from_pretrained(tiny_checkpoint)


def saved(model: GPT2, folder, tiny_checkpoint) -> dict:
    model.save_pretrained(folder, tiny_checkpoint)
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("variant", NOT_GPT2)
def test_a_variant_checkpoint_is_not_taken_for_gpt2(variant, base, tiny_checkpoint, tmp_path):
    model = NOT_GPT2[variant](base)
    config = saved(model, tmp_path, tiny_checkpoint)
    assert config["model_type"] == MODEL_TYPE and config["architectures"] == [ARCHITECTURE]
    with pytest.raises(ValueError, match="minigpt_geom"):  # AutoModel does not pick GPT-2: it knows no such type
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    with transformers_warnings() as said:
        transformers.GPT2LMHeadModel.from_pretrained(tmp_path)  # asked for GPT-2 by name, it loads, and says what it is
    assert any("model of type `minigpt_geom` to instantiate a model of type `gpt2`" in line for line in said)
    loaded = GPT2.from_pretrained(tmp_path)
    assert loaded.norm_sites().keys() == model.norm_sites().keys()
    assert [s.variant.name for s in loaded.norm_sites().values()] == [s.variant.name for s in model.norm_sites().values()]
    with torch.no_grad():
        assert torch.equal(loaded(IDS), model(IDS))


@pytest.mark.parametrize("kind", ["layernorm", "ln-free"])
def test_layernorm_and_ln_free_checkpoints_stay_gpt2_and_transformers_computes_them(kind, base, tiny_checkpoint,
                                                                                     tmp_path):
    model = base if kind == "layernorm" else ln_free_checkpoint(fixed(base, 3.0))
    config = saved(model, tmp_path, tiny_checkpoint)
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert NORM_KEY not in config
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(theirs) is transformers.GPT2LMHeadModel
    with torch.no_grad():
        expected = theirs(IDS).logits
        if kind == "ln-free":
            with pytest.warns(UserWarning, match="switched off"):
                ours = GPT2.from_pretrained(tmp_path)(IDS)
        else:
            ours = GPT2.from_pretrained(tmp_path)(IDS)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_our_loader_reads_the_old_marking(base, tiny_checkpoint, tmp_path):
    """Files written before: model_type "gpt2" and GPT2LMHeadModel, the variant under minigpt_geom_norm alone."""
    model = base.with_norm("rmsnorm")
    config = saved(model, tmp_path, tiny_checkpoint)
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (tmp_path / "checkpoint" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = GPT2.from_pretrained(tmp_path)
    assert {s.variant.name for s in loaded.norm_sites().values()} == {"rmsnorm"}
    with torch.no_grad():
        assert torch.equal(loaded(IDS), model(IDS))


@pytest.mark.parametrize("variant, said", [("rmsnorm", "its norm is rmsnorm"), ("dyt", "its norm is dyt"),
                                           ("mixed", "its norm is layernorm and none and rmsnorm"),
                                           ("folded", "untied, with a bias"), ("old rmsnorm", "its norm is rmsnorm")])
def test_verify_says_in_one_line_that_transformers_has_no_such_gpt2(variant, said, base, tiny_checkpoint, tmp_path,
                                                                     capsys):
    config = saved(NOT_GPT2[variant.removeprefix("old ")](base), tmp_path, tiny_checkpoint)
    if variant.startswith("old"):
        config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
        (tmp_path / "checkpoint" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    capsys.readouterr()
    assert main(["verify", "--weights", str(tmp_path), "--batch", "1", "--length", "8"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("minigpt-geom verify: error: transformers has no GPT-2 that computes") and said in err


def test_verify_still_compares_a_layernorm_checkpoint(base, tiny_checkpoint, tmp_path, capsys):
    saved(base, tmp_path, tiny_checkpoint)
    assert main(["verify", "--weights", str(tmp_path), "--batch", "1", "--length", "8"]) == 0
    assert "OK: matches transformers" in capsys.readouterr().out
