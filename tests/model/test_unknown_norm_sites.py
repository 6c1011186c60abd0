"""Issue 27: "norm mappings in config.json naming sites the model lacks are ignored (and `with_norm`/`set_norm`
accept unknown sites)". Each entry point now refuses a mapping that names a site the model lacks, naming it and
the valid names: InputError in the library, CheckpointError naming the file for config.json, and one line with
exit code 2 on the command line."""

from __future__ import annotations

import json
import shutil

import pytest

from minigpt_geom import GPT2, CheckpointError, InputError
from minigpt_geom.cli import main
from minigpt_geom.config import GPT2Config

UNKNOWN = {"h.99.ln_1": "rmsnorm"}
VALID = "name a site (h.N.ln_1 or h.N.ln_2 for N = 0 … 1, or ln_f), a kind (ln_1, ln_2, ln_f) or default"


def two_layers() -> GPT2:
    return GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=8, n_ctx=8, vocab_size=16))


def variants(model: GPT2) -> dict[str, str]:
    return {name: site.variant.name for name, site in model.norm_sites().items()}


def one_line_error(capsys, code: int) -> str:
    """stderr of a command that failed with exit code 2: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_set_norm_refuses_a_site_the_model_lacks_and_changes_nothing():
    model = two_layers()
    before = variants(model)
    with pytest.raises(InputError) as refused:
        model.set_norm({"ln_1": "none", **UNKNOWN})  # one valid kind beside the unknown site
    assert str(refused.value) == f"the norm mapping names 'h.99.ln_1', which is no site of this 2-layer model: {VALID}"
    assert variants(model) == before  # refused before any site changed


def test_with_norm_refuses_every_unknown_site_by_name():
    with pytest.raises(InputError, match=r"names 'lnf' and 'h\.2\.ln_2', which are no sites of this 2-layer model: "):
        two_layers().with_norm({"lnf": "none", "h.2.ln_2": "none", "h.1.ln_2": "none"})


def test_a_new_model_refuses_a_site_it_lacks():
    with pytest.raises(InputError, match=r"names 'h\.99\.ln_1', which is no site of this 2-layer model"):
        GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=8, n_ctx=8, vocab_size=16), norm=UNKNOWN)


def test_every_site_kind_and_default_are_still_accepted():
    model = two_layers().set_norm({"h.1.ln_2": "dyt", "ln_1": "rmsnorm", "default": "sphere"})
    assert variants(model) == {"h.0.ln_1": "rmsnorm", "h.0.ln_2": "sphere", "h.1.ln_1": "rmsnorm",
                               "h.1.ln_2": "dyt", "ln_f": "sphere"}
    # without `default`, set_norm and with_norm leave the sites a mapping does not name as they are
    assert variants(model.with_norm({"ln_f": "none"})) == {**variants(model), "ln_f": "none"}


@pytest.fixture
def crafted(tiny_checkpoint, tmp_path):
    """The tiny checkpoint whose config.json states a variant for a site its two layers lack."""
    folder = tmp_path / "crafted"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "minigpt_geom_norm": UNKNOWN}))
    return folder


def test_a_config_json_naming_a_site_the_model_lacks_is_refused(crafted):
    with pytest.raises(CheckpointError) as refused:
        GPT2.from_pretrained(crafted)
    assert str(refused.value) == (f"{crafted / 'config.json'}: the norm mapping names 'h.99.ln_1', which is no site "
                                  f"of this 2-layer model: {VALID}")


def test_from_pretrained_refuses_a_norm_naming_a_site_the_model_lacks(tiny_checkpoint):
    with pytest.raises(InputError, match=r"names 'h\.99\.ln_1', which is no site of this 2-layer model"):
        GPT2.from_pretrained(tiny_checkpoint, norm=UNKNOWN)


def test_a_command_on_such_a_config_json_says_so_in_one_line(crafted, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, main(["lens", "--weights", str(crafted), "--no-plot"]))
    assert "config.json: the norm mapping names 'h.99.ln_1', which is no site of this 2-layer model" in err
    assert not (tmp_path / "lens").exists()  # no partial output


def test_init_norm_naming_a_site_the_model_lacks_is_one_line(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "new"
    err = one_line_error(capsys, main(["init", "-o", str(out), "--tokenizer", str(tiny_checkpoint), "--n-layer", "2",
                                       "--n-head", "2", "--n-embd", "8", "--n-ctx", "8", "--norm",
                                       json.dumps(UNKNOWN)]))
    assert f"the norm mapping names 'h.99.ln_1', which is no site of this 2-layer model: {VALID}" in err
    assert not out.exists()
