"""The command line's conventions, for every subcommand: arguments, one-line errors, safe outputs, progress."""

from __future__ import annotations

import argparse
import csv
import errno
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt_geom.cli import build_parser, main
from minigpt_geom.commands import OutputError, output_file

TEXT = "To kill two birds with one stone. The cat sat on the mat."
WRITERS = {  # command -> arguments that make it write files, given the checkpoint and -o
    "lens": [TEXT], "trajectory": [TEXT], "embeddings": [], "probe": ["one", "he"], "svd": ["--pairs", "2"],
    "qk": ["--vocab-limit", "50"], "drift": ["CORPUS"], "report": [TEXT], "compare": [TEXT, "--against", "WEIGHTS"],
}
OTHERS = {"verify": [], "norms": ["--text", TEXT], "generate": [TEXT, "--max-new-tokens", "2"]}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def argv_for(command: str, weights: Path, corpus: Path, *extra: str) -> list[str]:
    named = {"CORPUS": str(corpus), "WEIGHTS": str(weights)}
    arguments = [named.get(a, a) for a in {**WRITERS, **OTHERS}[command]]
    return [command, *arguments, "--weights", str(weights), *extra]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 3, encoding="utf-8")
    return path


# ---- the parsers ---------------------------------------------------------------------------------------------

TRAINING = {"prepare", "init", "train", "remove-ln"}  # --dtype of a run is its precision: float32 or bf16 autocast


def test_every_command_loads_a_model_with_the_same_options():
    assert set(subcommands()) == set(WRITERS) | set(OTHERS) | TRAINING
    for name, parser in subcommands().items():
        options = parser._option_string_actions
        assert not parser.allow_abbrev, name
        assert all(action.help for action in parser._actions), name
        if name in TRAINING:  # prepare and init load no model; train and remove-ln do
            assert name in ("prepare", "init") or {"--weights", "--device", "--dtype"} <= set(options), name
            continue
        assert {"--weights", "--device", "--dtype", "--quiet"} <= set(options), name
        assert options["--dtype"].choices == ("float32", "bfloat16", "float16")
        assert not parser.allow_abbrev, name
        for action in parser._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
    assert not build_parser().allow_abbrev


def test_drawing_commands_take_format_dpi_and_no_plot():
    for name in ("lens", "trajectory", "drift", "svd", "embeddings", "probe", "qk"):
        options = subcommands()[name]._option_string_actions
        assert options["--format"].choices == ("png", "svg", "pdf") and "--dpi" in options and "--no-plot" in options
    assert "--dpi" in subcommands()["report"]._option_string_actions
    for name in ("embeddings", "probe", "svd", "qk"):  # the rankings over the whole vocabulary
        options = subcommands()[name]._option_string_actions
        assert "--vocab-from" in options and options["--min-count"].default == 1


def test_abbreviated_options_are_refused(tiny_checkpoint, capsys):
    code, _, err = run(["qk", "--weights", str(tiny_checkpoint), "--lay", "1", "--chunk", "7"], capsys)
    assert code == 2 and err.startswith("minigpt-geom qk: error: unrecognized arguments: --lay 1 --chunk 7")
    assert len(err.splitlines()) == 1


def test_help_version_and_python_dash_m(capsys):
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "Traveling Words" in help_text and "one subcommand a module" not in help_text
    assert "Errors of this package" not in help_text and "COMMAND --help" in help_text
    result = subprocess.run([sys.executable, "-m", "minigpt_geom", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert result.stdout.strip() == f"minigpt-geom {importlib.metadata.version('minigpt-geom')}"


# ---- the matrix: every expected failure is one line on stderr and exit 2, for every command -----------------

BAD_FOR_ALL = [
    ["--device", "bogus"], ["--device", "meta"], ["--dtype", "float8"], ["--weights-file", "x"], ["--bogus"],
    ["--quiet", "--weights", "/nonexistent/model.safetensors"],
] + ([["--device", "cuda"]] if not torch.cuda.is_available() else [])
BAD_FOR_ONE = [
    ["verify", "--batch", "-1"], ["verify", "--length", "0"], ["verify", "--seed", str(2**64)],
    ["generate", "--temperature", "nan"], ["generate", "--temperature", "-1"], ["generate", "--seed", str(2**64)],
    ["generate", "--top-p", "2"], ["generate", "--max-new-tokens", "1000"], ["generate", "--top-k", "0"],
    ["norms", "--variants", "nope"], ["lens", "--top-k", "0"], ["trajectory", "--word", "zebra"],
    ["trajectory", "--position", "99"], ["trajectory", "--seed", "-1"], ["report", "--layer", "7"],
    ["report", "--head", "-1"], ["svd", "--layer", "9"], ["svd", "--dpi", "0"], ["qk", "--query-position", "64"],
    ["qk", "--head", "4"], ["probe", "--layer", "2"], ["drift", "--context", "1"], ["drift", "--context", "65"],
    ["drift", "--format", "gif"], ["embeddings", "-k", "x"],
]


def check_one_line_error(code: int, err: str, command: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"minigpt-geom {command}: error: "), err


@pytest.mark.parametrize("command", sorted({**WRITERS, **OTHERS}))
@pytest.mark.parametrize("bad", BAD_FOR_ALL, ids=lambda bad: " ".join(bad))
def test_bad_arguments_of_every_command(tiny_checkpoint, corpus, tmp_path, capsys, command, bad):
    out = tmp_path / "out"
    extra = ["-o", str(out)] if command in WRITERS else []
    code, _, err = run(argv_for(command, tiny_checkpoint, corpus, *extra, *bad), capsys)
    check_one_line_error(code, err, command)
    assert not out.exists()  # nothing created before the inputs are valid


@pytest.mark.parametrize("bad", BAD_FOR_ONE, ids=lambda bad: " ".join(bad))
def test_bad_arguments_of_one_command(tiny_checkpoint, corpus, tmp_path, capsys, bad):
    command, *options = bad
    out = tmp_path / "out"
    extra = ["-o", str(out / "r.html" if command == "report" else out)] if command in WRITERS else []
    code, _, err = run(argv_for(command, tiny_checkpoint, corpus, *extra, *options), capsys)
    check_one_line_error(code, err, command)
    assert not out.exists()


@pytest.mark.parametrize("command", sorted(WRITERS))
@pytest.mark.parametrize("where", ["/proc/minigpt-geom-test", "FILE/sub", "FILE"])
def test_unwritable_outputs_of_every_command(tiny_checkpoint, corpus, tmp_path, capsys, command, where):
    a_file = tmp_path / "a_file"
    a_file.write_text("kept")
    if command == "report" and where == "FILE":  # report's -o names the page itself; "FILE/" a folder in a file
        where = "FILE/"
    code, _, err = run(argv_for(command, tiny_checkpoint, corpus, "-o", where.replace("FILE", str(a_file))), capsys)
    check_one_line_error(code, err, command)
    assert a_file.read_text() == "kept"


def test_a_failed_write_keeps_the_previous_file(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """The disk fills up half-way through lens.csv: the old lens.csv is intact, no temporary is left behind."""
    out = tmp_path / "lens"
    out.mkdir()
    (out / "lens.csv").write_text("the previous run")
    real_write_text = Path.write_text

    def half_then_full_disk(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full_disk)
    code, _, err = run(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--no-plot"], capsys)
    check_one_line_error(code, err, "lens")
    assert "No space left on device" in err
    monkeypatch.undo()
    assert (out / "lens.csv").read_text() == "the previous run"
    assert [p.name for p in out.iterdir()] == ["lens.csv"]


def test_no_write_follows_a_symlink_out_of_the_output_folder(tiny_checkpoint, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    out = tmp_path / "lens"
    out.mkdir()
    (out / "lens.csv").symlink_to(outside)
    assert main(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--no-plot"]) == 0
    assert outside.read_text() == "not yours"
    assert not (out / "lens.csv").is_symlink() and (out / "lens.csv").read_text().startswith("position,")
    with pytest.raises(OutputError, match="outside the output folder"):
        output_file(out, "../escape.csv")


def test_a_tokenizer_too_large_for_the_model_is_refused(tiny_checkpoint, tmp_path, capsys):
    from bpe_files import write_vocab

    n_vocab = write_vocab(tmp_path / "big", 80)
    code, _, err = run(["lens", TEXT, "--weights", str(tiny_checkpoint), "--tokenizer", str(tmp_path / "big")], capsys)
    check_one_line_error(code, err, "lens")
    assert f"has {n_vocab} ids but the model" in err and "has 300 words" in err


def test_figures_need_matplotlib_unless_no_plot(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "trajectory"
    code, _, err = run(["trajectory", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out)], capsys)
    check_one_line_error(code, err, "trajectory")
    assert "pip install 'minigpt-geom[plot]'" in err and "--no-plot" in err and not out.exists()
    assert main(["trajectory", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--no-plot"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lens.csv", "trajectory.csv"]


# ---- figures ----------------------------------------------------------------------------------------------------

def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_dpi_sets_the_figure_resolution(tiny_checkpoint, tmp_path):
    for dpi in (50, 100):
        assert main(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(tmp_path / str(dpi)),
                     "--dpi", str(dpi)]) == 0
    small, large = png_size(tmp_path / "50" / "lens_grid.png"), png_size(tmp_path / "100" / "lens_grid.png")
    assert abs(large[0] - 2 * small[0]) <= 2 and abs(large[1] - 2 * small[1]) <= 2


@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_format_chooses_the_file_format(tiny_checkpoint, tmp_path, fmt, magic):
    assert main(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(tmp_path), "--format", fmt]) == 0
    assert (tmp_path / f"lens_grid.{fmt}").read_bytes().startswith(magic)


# ---- tables --------------------------------------------------------------------------------------------------

def test_probe_tables_fill_the_norm_column(tiny_checkpoint, tmp_path):
    assert main(["probe", "one", "he", "--weights", str(tiny_checkpoint), "--layer", "1", "-o", str(tmp_path)]) == 0
    for probe, norm in (("query_key", "‖q‖"), ("key_value", "‖u‖")):
        lines = (tmp_path / f"probe_layer1_{probe}.md").read_text(encoding="utf-8").splitlines()
        header = [c.strip() for c in lines[2].strip("|").split("|")]
        assert header[-1] == norm
        cells = [line.strip("|").split("|")[-1].strip() for line in lines[4:]]
        assert len(cells) == 2 * 5 and all(float(c) > 0 for c in cells)  # 2 words × (4 heads + sum)
    with open(tmp_path / "probe.csv", newline="", encoding="utf-8") as f:
        assert all(float(row["norm"]) > 0 for row in csv.DictReader(f))


def test_the_terminal_lens_table_never_cuts_a_token(tiny_checkpoint):
    from minigpt_geom import GPT2
    from minigpt_geom.analysis.lens import format_lens, logit_lens
    from minigpt_geom.analysis.text import trace_text
    from minigpt_geom.tokenizer import Tokenizer

    model = GPT2.from_pretrained(tiny_checkpoint)
    ids, _, trace = trace_text(model, Tokenizer.from_pretrained(tiny_checkpoint), TEXT)
    lens = logit_lens(model, trace, k=12)
    decode = lambda i: f"a long word number {i}"  # noqa: E731  12 of them are far wider than a terminal
    table = format_lens(lens, [decode(i) for i in ids], decode, positions=[3]).splitlines()
    for layer in range(lens.n_states):
        row = table[2 + layer]
        assert all(repr(decode(int(i))) in row for i in lens.top_ids[layer, 0, 3])


def test_the_html_lens_tables_scroll_in_their_own_box(tiny_checkpoint, tmp_path):
    assert main(["report", TEXT, "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert ".scroll { overflow: auto; max-width: 100%; }" in page  # test_report_browser measures it at 1400 px
    assert '<div class="scroll tall"><table class="lens-grid">' in page and '<div class="scroll" id="lens-table">' in page
