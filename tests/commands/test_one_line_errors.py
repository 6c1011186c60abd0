"""Issue 27, defect 12 and the minor argument defects: inputs that ended in a Python traceback now end in one line
on stderr and exit code 2 (or, where the input is legitimate, in the right result), each case on the tiny model."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import requires
from minigpt_geom import InputError
from minigpt_geom.cli import main
from minigpt_geom.text.generation import Sampling, next_token
from minigpt_geom.training.settings import SettingError, TrainSettings

DEEP = 100_000  # JSON nesting far past the parser's recursion limit


@pytest.fixture(autouse=True)
def in_a_temporary_folder(tmp_path, monkeypatch):
    """Commands with a default output folder (lens -> ./lens) write under the test's own folder."""
    monkeypatch.chdir(tmp_path)


def one_line_error(capsys, code: int) -> str:
    """stderr of a command that failed with exit code 2: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def edited_copy(source: Path, folder: Path, **files: str) -> Path:
    """A copy of the checkpoint folder `source` with some files' text replaced."""
    shutil.copytree(source, folder)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def train_argv(corpus, tokenizer, out, *extra) -> list[str]:
    return ["train", str(corpus), "-o", str(out), "--tokenizer", str(tokenizer), "--n-layer", "1", "--n-head", "2",
            "--n-embd", "32", "--n-ctx", "32", "--steps", "2", "--batch-size", "2", "--warmup", "0",
            "--eval-windows", "2", "--sample-tokens", "0", "--pattern", "*.py", "--quiet", *extra]


# ---- crafted files ----------------------------------------------------------------------------------------


def test_defect_12_an_epsilon_beyond_float32_is_refused(tiny_checkpoint, tmp_path, capsys):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    folder = edited_copy(tiny_checkpoint, tmp_path / "eps", **{"config.json": json.dumps(
        {**config, "layer_norm_epsilon": 1e300})})
    err = one_line_error(capsys, main(["lens", "--weights", str(folder), "--no-plot"]))
    assert "layer_norm_epsilon must be at most float32's largest" in err


@pytest.mark.parametrize("name", ["vocab.json", "config.json"])
def test_defect_12_json_nested_too_deeply_is_refused(tiny_checkpoint, tmp_path, capsys, name):
    folder = edited_copy(tiny_checkpoint, tmp_path / "deep", **{name: "[" * DEEP + "]" * DEEP})
    err = one_line_error(capsys, main(["lens", "--weights", str(folder), "--no-plot"]))
    assert f"{name}" in err and ("nested too deeply" in err or "a JSON list" in err)


def test_defect_12_a_meta_json_nested_too_deeply_is_refused(tokens, tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "tokens"
    shutil.copytree(tokens, folder)
    (folder / "meta.json").write_text('{"a":' * DEEP + "1" + "}" * DEEP)
    err = one_line_error(capsys, main(train_argv(folder, tiny_checkpoint, tmp_path / "run")))
    assert "meta.json cannot be read (it is nested too deeply)" in err


def test_defect_12_a_norm_mapping_nested_too_deeply_is_refused(tiny_checkpoint, tmp_path, capsys):
    norm = '{"ln_f":' * DEEP + '"none"' + "}" * DEEP
    err = one_line_error(capsys, main(["init", "-o", str(tmp_path / "m"), "--tokenizer", str(tiny_checkpoint),
                                       "--norm", norm]))
    assert "argument --norm: not a JSON mapping: it is nested too deeply" in err


def test_defect_12_a_5000_digit_id_in_vocab_json_is_refused(tiny_checkpoint, tmp_path, capsys):
    vocab = (tiny_checkpoint / "vocab.json").read_text().rstrip().removesuffix("}")
    for number in ("9" * 5000, str(2**40)):  # past int()'s 4300 digits; past any vocabulary
        folder = edited_copy(tiny_checkpoint, tmp_path / number[:3], **{"vocab.json": f'{vocab}, "zz": {number}}}'})
        err = one_line_error(capsys, main(["lens", "--weights", str(folder), "--no-plot"]))
        assert "vocab.json" in err and len(err) < 400


def test_defect_12_a_damaged_log_csv_on_resume_is_one_line(tokens, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tokens, tiny_checkpoint, out, "--stop-at", "1")) == 0
    for damage in ("step,oops\n1,2\n", "step,train_loss,val_loss,learning_rate,tokens_per_second,grad_norm\nx,,,,,\n",
                   "step,train_loss,val_loss,learning_rate,tokens_per_second,grad_norm\n0,1,2\n"):
        (out / "log.csv").write_text(damage)
        err = one_line_error(capsys, main(["train", str(tokens), "-o", str(out), "--resume", "--quiet"]))
        assert "log.csv is damaged at line" in err
        assert (out / "log.csv").read_text() == damage  # left for the user to repair


# ---- hostile numbers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, named", [
    (["init", "--seed", str(2**64)], "argument --seed: must be in [0, 2^64)"),
    (["init", "--seed", "-1"], "argument --seed: must be in [0, 2^64)"),
    (["prepare", "CORPUS", "--split-seed", "-1"], "argument --split-seed: must be in [0, 2^64)"),
    (["remove-ln", "CORPUS", "--weights", "WEIGHTS", "--seed", str(2**64)], "argument --seed"),
    (["remove-ln", "CORPUS", "--weights", "WEIGHTS", "--steps", "0"], "--steps must be at least 1 to remove"),
    (["prepare", "CORPUS", "--pattern", "ABSOLUTE"], "must name files inside the corpus folder"),
    (["prepare", "CORPUS", "--pattern", "../*.txt"], "must name files inside the corpus folder"),
    (["train", "CORPUS", "--lr", "1e38"], "--lr (1e+38) is too large: AdamW's step"),
])
def test_defect_12_hostile_numbers_and_patterns_are_one_line(argv, named, corpus, tiny_checkpoint, tmp_path, capsys):
    values = {"CORPUS": str(corpus), "WEIGHTS": str(tiny_checkpoint), "ABSOLUTE": str(corpus / "textwrap.py")}
    argv = [values.get(a, a) for a in argv] + ["-o", str(tmp_path / "out")]
    if argv[0] in ("init", "prepare", "train"):
        argv += ["--tokenizer", str(tiny_checkpoint)]
    if argv[0] == "train":
        argv += ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--n-ctx", "32"]
    err = one_line_error(capsys, main(argv))
    assert named in err
    assert not (tmp_path / "out").exists()


def test_defect_12_seeds_beyond_2_64_are_refused_by_the_library():
    with pytest.raises(SettingError, match="seed must be below 2"):
        TrainSettings(seed=2**64)


def test_defect_12_tiny_temperature_and_top_p_sample_the_most_likely_token():
    logits = torch.tensor([[0.5, 3.0, 1.0, 2.999]])
    assert next_token(logits, Sampling(temperature=1e-300, seed=0)).item() == 1  # was 0/0 = NaN in float32
    assert next_token(logits, Sampling(top_p=1e-300, seed=0)).item() == 1  # p rounded to 0 dropped every token
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InputError, match="logits are NaN or infinite"):
            next_token(torch.tensor([[0.0, bad]]), Sampling(seed=0))


def test_defect_12_generate_with_top_p_1e_300_is_greedy(tiny_checkpoint, capsys):
    argv = ["generate", "the cat", "--weights", str(tiny_checkpoint), "--max-new-tokens", "5", "--quiet"]
    assert main([*argv, "--top-p", "1e-300", "--seed", "1"]) == 0
    sampled = capsys.readouterr().out
    assert main([*argv, "--temperature", "0"]) == 0
    assert sampled == capsys.readouterr().out


def test_defect_12_weights_that_overflow_are_one_line_in_generate(tiny_checkpoint, tmp_path, capsys):
    folder = edited_copy(tiny_checkpoint, tmp_path / "huge")
    tensors = load_file(folder / "model.safetensors")
    tensors["ln_f.weight"] = torch.full_like(tensors["ln_f.weight"], 3e38)  # finite, but logits overflow to ±inf
    save_file(tensors, folder / "model.safetensors")
    err = one_line_error(capsys, main(["generate", "the cat", "--weights", str(folder), "--seed", "0"]))
    assert "the model's logits are NaN or infinite" in err


# ---- text and terminals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "trajectory"])
@requires("matplotlib")
def test_defect_12_a_one_token_text_is_drawn(command, tiny_checkpoint, tmp_path, capsys):
    assert main([command, "a", "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert any((tmp_path / "out").iterdir()) if (tmp_path / "out").is_dir() else (tmp_path / "out").is_file()


@pytest.mark.parametrize("argv", [["report", "the \udcff cat", "-o", "OUT"], ["lens", "the \udcff cat"],
                                  ["generate", "\udcff"], ["trajectory", "the cat", "--word", "\udcff"],
                                  ["probe", "\udcff"]])
def test_defect_12_a_text_argument_that_is_not_utf8_is_refused(argv, tiny_checkpoint, tmp_path, capsys):
    # Python decodes a command line's bytes with surrogateescape: b"\xff" arrives as "\udcff"
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    err = one_line_error(capsys, main([*argv, "--weights", str(tiny_checkpoint)]))
    assert "is not UTF-8 text: byte 0xff" in err
    assert not (tmp_path / "out").exists()


@requires("matplotlib")
def test_defect_12_compare_labels_that_are_not_mathtext_are_refused(tiny_checkpoint, tmp_path, capsys):
    argv = ["compare", "the cat", "--weights", str(tiny_checkpoint), "--against", str(tiny_checkpoint),
            "-o", str(tmp_path / "out"), "--quiet"]
    err = one_line_error(capsys, main([*argv, "--labels", "$$", "b"]))
    assert "--labels '$$' is not valid mathtext" in err and not (tmp_path / "out").exists()
    assert main([*argv, "--labels", r"$\gamma$-free", "b"]) == 0  # mathtext stays possible


@pytest.mark.parametrize("command", ["lens", "norms", "probe", "embeddings", "generate"])
def test_defect_12_a_stdout_that_cannot_encode_unicode_gets_escapes(command, tiny_checkpoint, monkeypatch, capsys):
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="ascii", errors="strict")  # PYTHONIOENCODING=ascii
    monkeypatch.setattr(sys, "stdout", stdout)
    extra = {"probe": ["a", "b"], "generate": ["the cat", "--seed", "0", "--max-new-tokens", "8"],
             "lens": ["--no-plot"]}.get(command, [])
    assert main([command, *extra, "--weights", str(tiny_checkpoint), "--quiet"]) == 0
    stdout.flush()
    assert b"\\u" in raw.getvalue() or b"\\x" in raw.getvalue()  # what ascii cannot show, escaped


def test_defect_12_no_home_and_no_passwd_entry_is_one_line(corpus, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    err = one_line_error(capsys, main(train_argv(corpus, tiny_checkpoint, tmp_path / "run")))
    assert "$HOME is not set and this user has no home; set XDG_CACHE_HOME" in err


@requires("tokenizers")
def test_defect_12_a_tiktoken_that_fails_to_import_falls_back_with_a_note(corpus, tiny_checkpoint, tmp_path,
                                                                        monkeypatch, capsys):
    from minigpt_geom.text import fast_tokenizer

    broken = tmp_path / "site" / "tiktoken"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("libtiktoken.so: cannot open shared object file")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "tiktoken", raising=False)
    fast_tokenizer.installed_library.cache_clear()
    try:
        assert main(["prepare", str(corpus), "-o", str(tmp_path / "tokens"), "--tokenizer", str(tiny_checkpoint),
                     "--tokenizer-backend", "fast", "--pattern", "*.py"]) == 0
        assert fast_tokenizer.installed_library() == "tokenizers"
    finally:
        fast_tokenizer.installed_library.cache_clear()
    err = capsys.readouterr().err
    assert "note: tiktoken is installed but does not import (ImportError: libtiktoken.so" in err
    assert "Traceback" not in err


# ---- the minor argument defects -----------------------------------------------------------------------------


@pytest.mark.parametrize("argv, named", [
    (["trajectory", "the cat", "--word", ""], "argument --word: must not be empty"),
    (["compare", "the cat", "--against", "WEIGHTS", "--word", ""], "argument --word: must not be empty"),
    (["verify", "--tolerance", "nan"], "argument --tolerance: must be a finite number"),
    (["verify", "--tolerance", "-1"], "argument --tolerance: must be 0 or more"),
    (["generate", "--max-new-tokens", "-1"], "argument --max-new-tokens: must be 0 or more"),
    (["generate", "--top-p", "nan"], "argument --top-p: must be a finite number"),
    (["generate", "--top-p", "0"], "argument --top-p: must be in (0, 1]"),
    (["generate", "--top-k", "0"], "argument --top-k: must be at least 1"),
    (["generate", "--temperature", "-1"], "argument --temperature: must be 0 or more"),
])
def test_minor_defects_options_are_checked_and_named(argv, named, tiny_checkpoint, capsys):
    argv = [str(tiny_checkpoint) if a == "WEIGHTS" else a for a in argv]
    err = one_line_error(capsys, main([*argv, "--weights", str(tiny_checkpoint)]))
    assert named in err
