"""README is executable documentation: its set-up commands are CI's, and every command and Python block runs.

The examples run on a small random checkpoint (12 layers of 12 heads, so README's layer 5 exists) with a
trained vocabulary, found where README says: `$MINIGPT_GEOM_WEIGHTS/gpt2/`, the offline drop-in of `gpt2`."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from minigpt_geom.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_SHAPE = dict(n_layer=12, n_head=12, n_embd=96, n_positions=128)
CORPUS = "texts"  # the folder README's drift example reads
TOUR = ROOT / "docs" / "tour.md"
TOUR_STEPS = 2  # the tour's training budget here: every step runs, the model learns nothing worth looking at
TOUR_FIGURES = ["1_reach.png", "2_sphere.png", "3_attention.png", "4_residual.png", "5_trajectory.png", "6_lens.png",
                "7_drift.png", "8_patching.png", "8_rotation.png"]


def blocks(language: str, text: str = README) -> list[str]:
    """The bodies of the fenced code blocks in `language` of README (or of `text`)."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def command_lines() -> list[str]:
    """Every `minigpt-geom …` line of README's bash blocks."""
    return [line.strip() for block in blocks("bash") for line in block.splitlines()
            if line.strip().startswith("minigpt-geom ")]


def test_ci_runs_the_readme_setup_commands():
    first_block = blocks("bash")[0]
    commands = [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands  # install, then test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for command in commands:
        assert command in ci, f"{command!r} is in README but .ci/run does not run it"
    assert README.index(first_block) < README.index("minigpt-geom trajectory")  # set-up first, then the main job
    assert command_lines()[0] == 'minigpt-geom trajectory "To kill two birds with one stone"'


@pytest.fixture(scope="module")
def readme_world(tmp_path_factory) -> Path:
    """A working folder with the drop-in checkpoint under $MINIGPT_GEOM_WEIGHTS/gpt2/ and README's corpus."""
    from bpe_files import SAMPLE, write_vocab
    from conftest import random_hf_model, save_official_layout

    root = tmp_path_factory.mktemp("readme")
    gpt2 = root / "drop_in" / "gpt2"
    vocab_size = write_vocab(gpt2, 200)
    save_official_layout(random_hf_model(seed=5, vocab_size=vocab_size, **README_SHAPE), gpt2)
    (root / "work" / CORPUS / "more").mkdir(parents=True)
    (root / "work" / CORPUS / "a.txt").write_text(SAMPLE, encoding="utf-8")
    (root / "work" / CORPUS / "more" / "b.txt").write_text(SAMPLE[::-1], encoding="utf-8")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("line", command_lines())
def test_readme_command_runs(readme_world, monkeypatch, capsys, line):
    monkeypatch.setenv("MINIGPT_GEOM_WEIGHTS", str(readme_world / "drop_in"))
    monkeypatch.chdir(readme_world / "work")
    argv = shlex.split(line)[1:]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for written in re.findall(r"^wrote (\S+)", out, re.M):  # everything it says it wrote is there
        assert Path(written).stat().st_size > 0
    if argv[0] == "train":  # README's training example visibly learns: the held-out loss falls by over a nat
        with open(argv[argv.index("-o") + 1] + "/log.csv", newline="") as f:
            val = [float(row["val_loss"]) for row in csv.DictReader(f) if row["val_loss"]]
        assert len(val) >= 2 and val[-1] < val[0] - 1.0, val


@pytest.mark.subprocess
def test_readme_python_blocks_run(readme_world):
    """All Python blocks, in order, in one fresh interpreter (they build on each other, as in a session)."""
    env = {**os.environ, "MINIGPT_GEOM_WEIGHTS": str(readme_world / "drop_in"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    work = readme_world / "python"
    work.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-c", "\n".join(blocks("python"))], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (work / "trace.safetensors").stat().st_size > 0


def test_readme_command_table_matches_the_parsers():
    """Each row of README's command table names a real command and only options that command has."""
    commands = README[README.index("## Commands"):]
    commands = commands[:commands.index("\n## ")]
    rows = re.findall(r"^\| `([\w-]+)([^`]*)` \|", commands, re.M)
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert {name for name, _ in rows} == set(subcommands)
    for name, synopsis in rows:
        options = set(subcommands[name]._option_string_actions)
        for option in re.findall(r"(?<!\w)-{1,2}[a-z][\w-]*", synopsis):
            assert option in options, f"README shows `{name} {option}`, which {name} --help does not list"


@pytest.mark.slow
def test_gallery_script_runs_on_a_tiny_budget(tmp_path):
    """docs/make_gallery.py --tiny: every step of the gallery README links to, and every picture it names."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "make_gallery.py"), "--tiny", "--out", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "gallery.md").read_text(encoding="utf-8")
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert len(pictures) >= 10  # every figure (the report's screenshot only where Chromium is installed)
    for picture in pictures:
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    assert not (tmp_path / "gallery-work").exists()  # the corpus, tokenizer and checkpoint are removed
    assert "](docs/gallery.md)" in README  # README's first screen links to the gallery it makes
    assert README.index("docs/gallery.md") < README.index("## Set up")


@pytest.mark.subprocess
def test_the_tour_runs_and_draws_every_figure(tmp_path):
    """docs/tour.md, linked from README: its Python blocks in order in a fresh interpreter, on the small model it
    trains itself (TOUR_STEPS steps); each step's figure is written to the folder the tour names."""
    assert "docs/tour.md" in README
    env = {**os.environ, "TOUR_STEPS": str(TOUR_STEPS), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TOUR_CHECKPOINT", None)
    result = subprocess.run([sys.executable, "-c", "\n".join(blocks("python", TOUR.read_text(encoding="utf-8")))],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "reference = fused to" in result.stdout and f"trained {TOUR_STEPS} steps" in result.stdout
    for name in TOUR_FIGURES:
        assert (tmp_path / "tour" / name).stat().st_size > 0, name
