"""The command line's conventions, for every subcommand: arguments, one-line errors, safe outputs, progress."""

from __future__ import annotations

import argparse
import csv
import errno
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import requires
from minigpt_geom.cli import build_parser, main
from minigpt_geom.commands.outputs import output_file
from minigpt_geom.errors import InputError, OutputError

TEXT = "To kill two birds with one stone. The cat sat on the mat."
WRITERS = {  # command -> arguments that make it write files, given the checkpoint and -o
    "lens": [TEXT], "trajectory": [TEXT], "embeddings": [], "probe": ["one", "he"], "svd": ["--pairs", "2"],
    "qk": ["--vocab-limit", "50"], "drift": ["CORPUS"], "report": [TEXT], "compare": [TEXT, "--against", "WEIGHTS"],
    "patch": ["The cat sat on the mat.", "The cat sat on the two."], "ablate": [TEXT], "attribute": [TEXT],
    "rotate": [TEXT, "--toward", " the", "--layer", "0", "--steps", "3"],
    "steer": [TEXT, "--plus", " the", "--minus", " two", "--max-new-tokens", "2"],
}
OTHERS = {"verify": [], "norms": [TEXT], "generate": [TEXT, "--max-new-tokens", "2"]}


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

TRAINING = {"tokenizer", "prepare", "init", "train", "remove-ln"}
TEXT_COMMANDS = {"trajectory", "lens", "report", "compare", "norms", "ablate", "attribute", "rotate"}
CORPUS_COMMANDS = {"drift", "tokenizer", "prepare", "train", "remove-ln"}
SHARED = ("--weights", "--tokenizer", "--device", "--dtype", "--quiet", "--pattern", "--format", "--dpi", "--style",
          "--out", "--layer", "--head")  # docs/cli.md: one spelling, one meaning, one set of choices each


def described(action: argparse.Action) -> tuple:
    """What a user sees of an option: its spellings, choices, metavar (but -o names a FILE for report), kind."""
    metavar = None if action.dest == "out" else action.metavar
    return tuple(action.option_strings), action.choices, metavar, type(action).__name__


def test_one_convention_over_every_parser():
    """docs/cli.md's convention, held over every subcommand's parser."""
    parsers = subcommands()
    assert set(parsers) == set(WRITERS) | set(OTHERS) | TRAINING
    seen: dict[str, tuple] = {}
    for name, parser in parsers.items():
        options = parser._option_string_actions
        assert not parser.allow_abbrev, name
        for action in parser._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
        assert not {"--no-progress", "--glob", "--text"} & set(options), name  # the old second spellings
        assert name == "init" or "--quiet" in options, name  # every command that can draw a bar or print notes
        if name not in ("tokenizer", "prepare", "init"):  # they load no model
            assert {"--weights", "--device", "--dtype"} <= set(options), name
        for option in SHARED:
            if option in options:
                assert seen.setdefault(option, described(options[option])) == described(options[option]), \
                    f"{name} {option}"
        assert ("--pattern" in options) == (name in CORPUS_COMMANDS), name
        texts = [a for a in parser._actions if a.dest == "text"]
        assert bool(texts) == (name in TEXT_COMMANDS), name
        help_text = parser.format_help()
        assert "minigpt_geom.cli" not in help_text, name  # `python -m minigpt_geom`, as docs/cli.md spells it
    assert seen["--dtype"][1] == ("float32", "bfloat16", "float16")
    for option, default in (("--pattern", "*.txt"), ("--dpi", 100), ("--dtype", "float32")):
        defaults = {parsers[n]._option_string_actions[option].default for n in parsers
                    if option in parsers[n]._option_string_actions and n not in ("train", "remove-ln")}
        assert defaults == {default}, option
    assert {[a for a in parsers[n]._actions if a.dest == "text"][0].default for n in TEXT_COMMANDS} \
        == {"To kill two birds with one stone"}
    init_help = parsers["init"].format_help()
    assert "fine-tun" not in init_help and "batch" not in init_help  # says only what applies to init
    logprobs = parsers["drift"]._option_string_actions["--logprobs"].help
    assert not re.search(r"\d\s*[x×]", logprobs) or "bench/analyses.py" in logprobs, logprobs  # a factor is measured
    assert not build_parser().allow_abbrev


def test_every_text_command_reads_unquoted_words_as_one_text(tiny_checkpoint, capsys, tmp_path, monkeypatch):
    """`minigpt-geom lens To kill two birds`: the shell's words joined by spaces, for every parser with a text."""
    words, readers = ["To", "kill", "two", "birds"], []
    for name, parser in subcommands().items():
        for action in [a for a in parser._actions if a.dest in ("text", "prompt")]:
            readers.append(name)
            required = {"compare": ["--against", "x"], "rotate": ["--toward", "x"],
                        "steer": ["--plus", "x", "--minus", "y"]}.get(name, [])
            args, extra = parser.parse_known_args([*words, *required])
            assert (getattr(args, action.dest), extra) == ("To kill two birds", []), name
            assert getattr(parser.parse_known_args(["one quoted text", *required])[0], action.dest) == "one quoted text"
            assert getattr(parser.parse_known_args(required)[0], action.dest) == action.default, name
    assert set(readers) == TEXT_COMMANDS | {"generate", "steer"}
    code, _, err = run(["lens", "To", "kill", "--weights", str(tiny_checkpoint), "two", "birds"], capsys)
    check_one_line_error(code, err, "lens")  # words after an option: what to do instead
    assert "unrecognized arguments: two birds (the text's words go together before the options, or quote" in err
    monkeypatch.chdir(tmp_path)
    unquoted = run(["norms", "To", "kill", "two", "birds", "--weights", str(tiny_checkpoint)], capsys)
    assert unquoted == run(["norms", "To kill two birds", "--weights", str(tiny_checkpoint)], capsys)
    assert unquoted[0] == 0 and unquoted != run(["norms", "To kill", "--weights", str(tiny_checkpoint)], capsys)


def test_device_auto_takes_the_best_device_this_machine_has(tiny_checkpoint, capsys, monkeypatch):
    from minigpt_geom.commands.loading import usable_device

    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert usable_device("auto").type == expected
    code, out, err = run(["norms", "--weights", str(tiny_checkpoint), "--device", "auto", "--variants", "rmsnorm"],
                         capsys)
    assert code == 0, err
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert usable_device("auto") == torch.device("mps")  # no GPU of NVIDIA's: Apple's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert usable_device("auto") == torch.device("cuda")  # cuda first
    assert "auto" in subcommands()["lens"]._option_string_actions["--device"].help


NO_TORCH = """
import contextlib, io, json, sys
from minigpt_geom.cli import main
codes = {}
for argv in (["--help"], ["--version"], ["lens", "--help"], ["lens", "--bogus"], ["qk", "--layer", "x"],
             ["lens", "--dpi", "100000"], ["nope"], ["verify", "--help"], ["prepare", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        codes[" ".join(argv)] = main(argv)
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
"""


@pytest.mark.subprocess
def test_help_version_and_argument_errors_never_import_torch():
    done = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert not report["torch"]
    assert {argv: code for argv, code in report["codes"].items() if code != 0} == {
        "lens --bogus": 2, "qk --layer x": 2, "lens --dpi 100000": 2, "nope": 2}


def test_drawing_commands_take_format_dpi_and_no_plot():
    for name in ("lens", "trajectory", "drift", "svd", "embeddings", "probe", "qk", "patch", "ablate", "attribute",
                 "rotate", "steer"):
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


@pytest.mark.subprocess
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
    ["generate", "--top-p", "2"], ["generate", "--window-step", "1000"], ["generate", "--top-k", "0"],
    ["generate", "--stop", ""], ["generate", "--prompts", "/nonexistent/prompts.txt"],
    ["norms", "--variants", "nope"], ["lens", "--top-k", "0"], ["trajectory", "--word", "zebra"],
    ["trajectory", "--position", "99"], ["trajectory", "--seed", "-1"], ["report", "--layer", "7"],
    ["report", "--head", "-1"], ["svd", "--layer", "9"], ["svd", "--dpi", "0"], ["qk", "--query-position", "64"],
    ["qk", "--head", "4"], ["probe", "--layer", "2"], ["drift", "--context", "1"], ["drift", "--context", "65"],
    ["drift", "--format", "gif"], ["embeddings", "-k", "x"], ["lens", "--dpi", "100000"], ["report", "--dpi", "1201"],
    ["patch", "--answer", "zzzz"], ["patch", "--wrong", " the", "--answer", " the"], ["patch", "--site", "mlp"],
    ["patch", "--batch-size", "0"], ["ablate", "--method", "mean"], ["ablate", "--method", "resample", "--reference",
    "One two."], ["attribute", "--metric", "probability"], ["attribute", "--position", "99"], ["rotate", "--steps", "1"],
    ["rotate", "--site", "ln_f"], ["rotate", "--toward", "zzzz"], ["rotate", "--layer", "2"], ["steer", "--layer", "2"],
    ["steer", "--coefficient", "0"], ["steer", "--minus", " the"], ["steer", "--temperature", "-1"],
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
    code, _, err = run(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--no-plot"], capsys)
    check_one_line_error(code, err, "lens")  # a link is never replaced (issue 27), nor followed out of -o
    assert "outside the output folder" in err and outside.read_text() == "not yours"
    assert (out / "lens.csv").is_symlink() and sorted(p.name for p in out.iterdir()) == ["lens.csv"]
    (out / "lens.csv").unlink()
    (out / "lens.csv").symlink_to("kept.csv")  # a link within -o: followed, the file it names is written
    assert main(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--no-plot"]) == 0
    assert (out / "lens.csv").is_symlink() and (out / "kept.csv").read_text().startswith("position,")
    with pytest.raises(OutputError, match="outside the output folder"):
        output_file(out, "../escape.csv")


def test_a_tokenizer_too_large_for_the_model_is_refused(tiny_checkpoint, tmp_path, capsys):
    from bpe_files import write_vocab

    n_vocab = write_vocab(tmp_path / "big", 80)
    code, _, err = run(["lens", TEXT, "--weights", str(tiny_checkpoint), "--tokenizer", str(tmp_path / "big"), "--no-plot"],
                       capsys)
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


def test_umap_without_umap_learn_stops_before_loading_the_model(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import minigpt_geom.commands.trajectory as trajectory

    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now raises ImportError
    monkeypatch.setattr(trajectory, "lens_of_text", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "trajectory"
    code, stdout, err = run(["trajectory", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--umap"], capsys)
    check_one_line_error(code, err, "trajectory")
    assert err.endswith("--umap needs umap-learn: pip install umap-learn, or leave out --umap for PCA\n")
    assert stdout == "" and not out.exists()


# ---- figures ----------------------------------------------------------------------------------------------------

def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.slow
@requires("matplotlib")
def test_dpi_sets_the_figure_resolution(tiny_checkpoint, tmp_path):
    for dpi in (50, 100):
        assert main(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(tmp_path / str(dpi)),
                     "--dpi", str(dpi)]) == 0
    small, large = png_size(tmp_path / "50" / "lens_grid.png"), png_size(tmp_path / "100" / "lens_grid.png")
    assert abs(large[0] - 2 * small[0]) <= 2 and abs(large[1] - 2 * small[1]) <= 2


@pytest.mark.slow
@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
@requires("matplotlib")
def test_format_chooses_the_file_format(tiny_checkpoint, tmp_path, fmt, magic):
    assert main(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(tmp_path), "--format", fmt]) == 0
    assert (tmp_path / f"lens_grid.{fmt}").read_bytes().startswith(magic)


# ---- tables --------------------------------------------------------------------------------------------------

def test_probe_tables_fill_the_norm_column(tiny_checkpoint, tmp_path):
    assert main(["probe", "one", "he", "--weights", str(tiny_checkpoint), "--layer", "1", "-o", str(tmp_path),
                 "--no-plot"]) == 0
    for probe, norm in (("query_key", "‖q‖"), ("key_value", "‖u‖")):
        lines = (tmp_path / f"probe_layer1_{probe}.md").read_text(encoding="utf-8").splitlines()
        header = [c.strip() for c in lines[2].strip("|").split("|")]
        assert header[-1] == norm
        cells = [line.strip("|").split("|")[-1].strip() for line in lines[4:]]
        assert len(cells) == 2 * 5 and all(float(c) > 0 for c in cells)  # 2 words × (4 heads + sum)
    with open(tmp_path / "probe.csv", newline="", encoding="utf-8") as f:
        assert all(float(row["norm"]) > 0 for row in csv.DictReader(f))


def test_printed_numbers_have_4_significant_digits_and_ranks_count_from_1(tiny_checkpoint, corpus, tmp_path, capsys):
    """README: printed numbers to 4 significant digits (embeddings, drift), CSVs every digit; ranks from 1 (qk,
    svd, as the lens); `svd -o DIR` prints its tables as lens, embeddings and probe do."""
    from minigpt_geom.analysis.tables import significant

    weights = ["--weights", str(tiny_checkpoint), "--quiet"]
    code, out, _ = run(["drift", str(corpus), *weights, "-o", str(tmp_path / "drift"), "--no-plot"], capsys)
    assert code == 0
    with open(tmp_path / "drift" / "drift.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    table = [line.split() for line in out.splitlines() if re.match(r"\s+\d+ ", line)]
    assert [cells[1:3] for cells in table] == [[significant(float(r["drift"])), significant(float(r["drift_std"]))]
                                               for r in rows]
    code, out, _ = run(["embeddings", *weights, "-k", "2", "-o", str(tmp_path / "emb"), "--no-plot"], capsys)
    with open(tmp_path / "emb" / "embeddings_reach.csv", newline="", encoding="utf-8") as f:
        values = [significant(float(r["value"])) for r in csv.DictReader(f)]
    assert code == 0 and all(f" {value}" in out for value in values)
    code, out, _ = run(["qk", "--layer", "1", "--head", "0", "-k", "3", "--vocab-limit", "50", *weights], capsys)
    assert code == 0 and [line.split()[0] for line in out.strip().splitlines()[-3:]] == ["1", "2", "3"]
    svd_out = tmp_path / "svd"
    code, out, _ = run(["svd", "--layer", "1", "--head", "0", "--pairs", "2", "-k", "1", *weights, "-o", str(svd_out),
                        "--no-plot"], capsys)
    assert code == 0 and "W_QK singular vectors, layer 1, head 0" in out and "key-bias direction" in out
    ranks = [line.split()[0] for line in out.splitlines() if re.match(r"\d+\s+\d", line)]
    assert ranks[:2] == ["1", "2"]
    with open(svd_out / "svd.csv", newline="", encoding="utf-8") as f:
        long = list(csv.DictReader(f))
    assert {r["rank"] for r in long} == {"1", "2"} and {r["word_rank"] for r in long} == {"1"}


def test_the_terminal_lens_table_never_cuts_a_token(tiny_checkpoint):
    from minigpt_geom import GPT2
    from minigpt_geom.analysis.lens import format_lens, logit_lens
    from minigpt_geom.analysis.text import trace_text
    from minigpt_geom.text.tokenizer import Tokenizer

    model = GPT2.from_pretrained(tiny_checkpoint)
    ids, _, trace = trace_text(model, Tokenizer.from_pretrained(tiny_checkpoint), TEXT)
    lens = logit_lens(model, trace, k=12)
    decode = lambda i: f"a long word number {i}"  # noqa: E731  12 of them are far wider than a terminal
    table = format_lens(lens, [decode(i) for i in ids], decode, positions=[3]).splitlines()
    for layer in range(lens.n_states):
        row = table[2 + layer]
        assert all(repr(decode(int(i))) in row for i in lens.top_ids[layer, 0, 3])
    decode = lambda i: "w" * (1 + i % 17)  # noqa: E731  words of every length: each position's widest differs
    every = format_lens(lens, [decode(i) for i in ids], decode).splitlines()  # --all-positions
    headers = [line for line in every if line.lstrip().startswith("layer ")]
    assert len(headers) == len(ids) and len(set(headers)) == 1  # one header, its columns where every table's are
    rows = [line for line in every if re.match(r"\s+\d+\s{2}'", line)]
    assert len(rows) == len(ids) * lens.n_states
    assert {len(row) for row in rows} == {len(headers[0])}  # right-aligned columns: every row ends where it does


@pytest.mark.slow
@requires("matplotlib")
def test_the_html_lens_tables_scroll_in_their_own_box(tiny_checkpoint, tmp_path):
    assert main(["report", TEXT, "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert ".scroll { overflow: auto; max-width: 100%; }" in page  # test_report_browser measures it at 1400 px
    assert '<div class="scroll tall"><table class="lens-grid">' in page and '<div class="scroll" id="lens-table">' in page


# ---- progress bars: on a terminal only -----------------------------------------------------------------------

def training_argv(command: str, corpus: Path, weights: Path, out: Path) -> list[str]:
    """The smallest run of a training command on the corpus file."""
    run_options = ["--steps", "2", "--batch-size", "2", "--context", "8", "--eval-interval", "2", "--eval-windows",
                   "1", "--sample-tokens", "0", "--val-fraction", "0.3"]
    return {"tokenizer": ["tokenizer", str(corpus), "-o", str(out), "--vocab-size", "300"],
            "prepare": ["prepare", str(corpus), "-o", str(out), "--tokenizer", str(weights), "--val-fraction", "0.3"],
            "init": ["init", "-o", str(out), "--tokenizer", str(weights), "--n-layer", "1", "--n-head", "1",
                     "--n-embd", "8", "--n-ctx", "16"],
            "train": ["train", str(corpus), "-o", str(out), "--weights", str(weights), *run_options],
            "remove-ln": ["remove-ln", str(corpus), "-o", str(out), "--weights", str(weights), *run_options],
            }[command]


@pytest.mark.slow
@requires("matplotlib")  # every command runs: report draws, verify compares with transformers
@requires("transformers")
def test_no_command_writes_a_carriage_return_to_a_stderr_that_is_not_a_terminal(tiny_checkpoint, tmp_path, capsys,
                                                                               monkeypatch):
    """tqdm draws with \\r; into a file or a pipe that turns one error into three lines. Every command runs with
    stderr captured (not a terminal), then prepare once more with stderr claiming to be one: it draws there."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 40, encoding="utf-8")  # long enough for a held-out window
    for command in sorted(set(subcommands())):
        out = tmp_path / command
        argv = (training_argv(command, corpus, tiny_checkpoint, out) if command in TRAINING
                else argv_for(command, tiny_checkpoint, corpus, *(["-o", str(out)] if command in WRITERS else [])))
        code, _, err = run(argv, capsys)
        assert code == 0, f"{command}: {err}"
        assert "\r" not in err, f"{command} drew a progress bar into a non-terminal stderr: {err!r}"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run(training_argv("prepare", corpus, tiny_checkpoint, tmp_path / "again"), capsys)
    assert code == 0 and "\r" in err  # the check above can fail: on a terminal the bar is drawn


# ---- files: the umask, modes, nothing partial -----------------------------------------------------------------

def modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


@pytest.mark.slow
@requires("matplotlib")
def test_outputs_honour_the_umask_and_a_replaced_file_keeps_its_mode(tiny_checkpoint, tmp_path):
    from minigpt_geom.io.files import write_text

    previous = os.umask(0o022)
    try:
        out = tmp_path / "lens"
        assert main(["lens", "--weights", str(tiny_checkpoint), "-o", str(out), "--quiet"]) == 0
        assert modes(out) == {"lens.csv": 0o644, "lens_grid.png": 0o644}  # what open() gives under umask 022
        (out / "lens.csv").chmod(0o640)
        os.umask(0o077)
        assert main(["lens", "--weights", str(tiny_checkpoint), "-o", str(out), "--quiet"]) == 0
        assert modes(out) == {"lens.csv": 0o640, "lens_grid.png": 0o644}  # replaced files keep their modes
        assert write_text(tmp_path / "new.txt", "x").stat().st_mode & 0o777 == 0o600  # a new one: umask 077's
    finally:
        os.umask(previous)


@pytest.mark.slow
@requires("matplotlib")
def test_a_failed_figure_leaves_the_earlier_output_as_it_was(tiny_checkpoint, corpus, tmp_path, capsys, monkeypatch):
    """drift writes its CSVs, then its figures: a full disk at the figure keeps the previous run whole, adds no
    new CSV beside it, leaves no temporary folder, and creates no output folder that did not exist."""
    from minigpt_geom.analysis import plots

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "drift"
    out.mkdir()
    (out / "drift.csv").write_text("the previous run")
    monkeypatch.setattr(plots, "save_figure", full_disk)
    for folder in (out, tmp_path / "new"):
        code, _, err = run(["drift", str(corpus), "--weights", str(tiny_checkpoint), "-o", str(folder)], capsys)
        check_one_line_error(code, err, "drift")
        assert "No space left on device" in err
    assert [p.name for p in out.iterdir()] == ["drift.csv"] and (out / "drift.csv").read_text() == "the previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "drift"]  # no `new`, no staging folder


# ---- messages -------------------------------------------------------------------------------------------------

def test_an_ln_free_load_is_one_line_without_a_source_path(tiny_checkpoint, tmp_path, capsys):
    from minigpt_geom import GPT2, LNFreeWarning

    folder = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ln_free"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_epsilon": 1e12}))  # LN-free convention
    code, _, err = run(["lens", "--weights", str(folder), "-o", str(tmp_path / "lens"), "--no-plot"], capsys)
    assert code == 0, err
    assert err.splitlines() == [f"minigpt-geom lens: note: {folder / 'model.safetensors'}: layer norm is switched "
                                f"off inside this file (ε = 1e+12); loaded as an exact norm='none' model"]
    code, _, err = run(["lens", "--weights", str(folder), "-o", str(tmp_path / "lens"), "--no-plot", "--quiet"], capsys)
    assert code == 0 and err == "", err  # --quiet: no notes on stderr
    with pytest.warns(LNFreeWarning, match="switched off"):  # in the API: a warning of its own category
        GPT2.from_pretrained(folder)


@requires("tiktoken")
def test_tokenizer_backend_help_says_what_the_code_does(tiny_checkpoint):
    """--tokenizer-backend's help names the fast libraries in the order the code tries them (tiktoken first)."""
    from minigpt_geom.text.fast_tokenizer import LIBRARIES, FastTokenizer, installed_library

    assert installed_library() == LIBRARIES[0] == "tiktoken"  # both installed by the test extra: tiktoken chosen
    assert FastTokenizer.from_pretrained(tiny_checkpoint).library == "tiktoken"
    for name in ("prepare", "train", "drift"):
        help_text = " ".join(subcommands()[name]._option_string_actions["--tokenizer-backend"].help.split())
        fast = help_text[help_text.index("fast:"):help_text.index("auto:")]
        assert fast.index("tiktoken") < fast.index("tokenizers"), name
        assert "encodes the sample faster" in help_text, name  # auto also times them (choose_backend)


@requires("tiktoken")
def test_a_backend_that_disagrees_is_one_note_and_the_reference_reads_the_corpus(tiny_checkpoint, corpus, tmp_path,
                                                                                 capsys, monkeypatch):
    from minigpt_geom.text.fast_tokenizer import FastTokenizer

    encode = FastTokenizer.encode_ordinary
    monkeypatch.setattr(FastTokenizer, "encode_ordinary", lambda self, text: [*encode(self, text)[:-1], 0])
    code, _, err = run(["prepare", str(corpus), "-o", str(tmp_path / "tokens"), "--tokenizer", str(tiny_checkpoint),
                        "--tokenizer-backend", "auto"], capsys)
    assert code == 0, err
    [line] = err.splitlines()
    assert line.startswith("minigpt-geom prepare: note: the fast tokenizer disagrees with the reference (token ")
    assert line.endswith("): using the reference")
    assert json.loads((tmp_path / "tokens" / "meta.json").read_text())["tokenizer_backend"] == "reference"


@requires("transformers")
def test_loading_commands_say_which_folder_the_weights_came_from(tiny_checkpoint, clean_env, tmp_path, capsys,
                                                                 monkeypatch):
    drop_in = Path(shutil.copytree(tiny_checkpoint, tmp_path / "elsewhere" / "gpt2"))
    monkeypatch.setenv("MINIGPT_GEOM_WEIGHTS", str(drop_in.parent))
    code, out, err = run(["verify", "--weights", "gpt2", "--batch", "1", "--length", "8"], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == f"weights: gpt2 from {drop_in.resolve()} (float32 on cpu)"
    code, out, err = run(["lens", "--weights", "gpt2", "-o", str(tmp_path / "lens"), "--no-plot"], capsys)
    assert code == 0 and out.splitlines()[0] == f"weights: gpt2 from {drop_in.resolve()}", err


@requires("transformers")
def test_verify_configures_transformers_from_the_folders_own_config_json(tiny_checkpoint):
    from transformers import GPT2Config as HFConfig

    from minigpt_geom import GPT2
    from minigpt_geom.io.checkpoint import checkpoint_files
    from minigpt_geom.commands.verify import transformers_config

    built = transformers_config(checkpoint_files(tiny_checkpoint)[1], GPT2.from_pretrained(tiny_checkpoint))
    read = HFConfig.from_pretrained(tiny_checkpoint)
    assert {k: v for k, v in built.to_dict().items() if k not in ("bos_token_id", "eos_token_id")} == \
        {k: v for k, v in read.to_dict().items() if k not in ("bos_token_id", "eos_token_id")}


# ---- sizes checked before allocating --------------------------------------------------------------------------

def test_size_options_are_checked_against_the_memory_they_need(tiny_checkpoint, capsys):
    import torch

    from minigpt_geom.memory import check_fits

    with pytest.raises(InputError, match=r"--chunk-size 9 needs about 1073741824\.0 GiB on cpu, more than the "):
        check_fits("--chunk-size 9", 2**60, torch.device("cpu"))
    code, _, err = run(["verify", "--weights", str(tiny_checkpoint), "--batch", "10000000"], capsys)
    check_one_line_error(code, err, "verify")
    assert "--batch 10000000 --length 64 needs about" in err and "choose a smaller size" in err
    code, _, err = run(["qk", "--weights", str(tiny_checkpoint), "--chunk-size", "1000000000", "-k", "2"], capsys)
    assert code == 0, err  # a chunk larger than the vocabulary is the vocabulary: 300 × 300 scores
