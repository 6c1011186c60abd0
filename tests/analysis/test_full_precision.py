"""Every CSV holds every digit, and the HTML report prints 4 significant digits (issue 28, item 2).

Oracle: the model's own values, read back from the CSV as float64 and compared bit for bit (repr), where the
old tables rounded to 6 decimals (a probability of 1.797e-13 read back as 0.0)."""

from __future__ import annotations

import copy
import csv
import json
import math
import numbers
import re
import shutil
import subprocess
from importlib import resources

import numpy as np
import pytest
import torch

from minigpt_geom import GPT2
from minigpt_geom.analysis import tables
from minigpt_geom.text.pretrained import load_model_and_tokenizer
from minigpt_geom.analysis.lens import text_lens
from minigpt_geom.analysis.report import build_report
from minigpt_geom.analysis.tables import format_csv, significant
from minigpt_geom.analysis.trajectory import word_trajectory
from minigpt_geom.cli import main
from minigpt_geom.text.tokenizer import Tokenizer

TEXT = "To kill two birds with one stone. The cat sat on the mat."
LENS_FIELDS = {"prediction_prob": "prediction_prob", "entropy": "entropy", "kl_to_final": "kl_to_final",
               "angular_step_rad": "angular_step", "angular_path_rad": "angular_path"}


def same(text: str, value) -> bool:
    """True when the CSV cell reads back as exactly `value` (as a float64; NaN as NaN)."""
    return repr(float(text)) == repr(float(value))


def dict_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint) -> tuple[GPT2, Tokenizer]:
    """The tests' tiny random model and its tokenizer, as every command loads them."""
    return load_model_and_tokenizer(tiny_checkpoint)


def test_csv_cells_read_back_as_the_values_themselves():
    """A float32 value (NumPy's own str would be its shortest float32 spelling), tiny and huge values, inf/NaN."""
    values = [np.float32(0.1), 1.797e-13, 1.5e-23, np.float64(2 / 3), float(np.float32(1 / 3)), 6.02e23,
              math.inf, math.nan]
    rows = list(csv.reader(format_csv(["v"], [[v] for v in values]).splitlines()))[1:]
    assert all(same(text, value) for (text,), value in zip(rows, values))
    assert [r[0] for r in csv.reader(format_csv(["n", "b", "s"], [[3, True, "x"]]).splitlines())][1:] == ["3"]


@pytest.mark.slow
def test_lens_and_trajectory_csvs_hold_the_models_values_bit_for_bit(loaded, tiny_checkpoint, tmp_path):
    model, tokenizer = loaded
    assert main(["trajectory", TEXT, "--weights", str(tiny_checkpoint), "-o", str(tmp_path), "--no-plot",
                 "--quiet"]) == 0
    words, trace, lens = text_lens(model, tokenizer, TEXT, 5)
    rows = dict_rows(tmp_path / "lens.csv")
    assert len(rows) == len(words) * lens.n_states
    for row in rows:
        t, layer = int(row["position"]), int(row["layer"])
        for column, field in LENS_FIELDS.items():
            assert same(row[column], getattr(lens, field)[layer, 0, t]), (column, t, layer)
        for j in range(5):
            assert same(row[f"top{j + 1}_prob"], lens.top_probs[layer, 0, t, j])
    decode = lambda i: tokenizer.decode([i])  # noqa: E731
    highlight = int(next(r["position"] for r in dict_rows(tmp_path / "trajectory.csv") if r["highlight"] == "1"))
    trajectory = word_trajectory(model, trace.states, words, lens.prediction[0].tolist(), decode, highlight=highlight)
    points = dict_rows(tmp_path / "trajectory.csv")
    for row in points[:-1]:
        coords = trajectory.coords[int(row["layer"]), int(row["position"])]
        assert all(same(row[axis], coords[i]) for i, axis in enumerate("xyz"))
    assert all(same(points[-1][axis], trajectory.prediction_coord[i]) for i, axis in enumerate("xyz"))


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["embeddings"], ["probe", "--leading-space", "a", "b"], ["qk", "--layer", "1", "--head", "2"],
    ["svd", "--layer", "1"], ["drift", "CORPUS", "--context", "16", "--logprobs"], ["compare", "--against", "OTHER"],
], ids=lambda argv: argv[0])
def test_every_csv_reads_back_as_the_table_the_analysis_made(argv, tiny_checkpoint, tmp_path, monkeypatch):
    """Each command's CSV, read back, is the Table its analysis handed to write_csv: every float bit for bit."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(TEXT * 20, encoding="utf-8")
    other = tmp_path / "other"  # a second model for compare: the same weights under RMSNorm
    shutil.copytree(tiny_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "minigpt_geom_norm": "rmsnorm"}))
    argv = [str(corpus) if a == "CORPUS" else str(other) if a == "OTHER" else a for a in argv]
    handed = {}
    write_csv = tables.write_csv
    monkeypatch.setattr(tables, "write_csv", lambda path, table: handed.setdefault(path.name, table) and
                        write_csv(path, table))
    assert main([*argv, "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "out"), "--no-plot", "--quiet"]) == 0
    assert handed
    for name, table in handed.items():
        with open(tmp_path / "out" / name, newline="", encoding="utf-8") as f:
            header, *rows = list(csv.reader(f))
        assert header == list(table.header) and len(rows) == len(table.rows) > 0
        floats = 0
        for written, row in zip(rows, table.rows):
            for text, value in zip(written, row):
                if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
                    assert same(text, value), (name, text, value)
                    floats += 1
        assert floats > 0, name


@pytest.mark.slow
def test_embedding_norms_in_the_csv_are_the_models(loaded, tiny_checkpoint, tmp_path):
    model = loaded[0]
    assert main(["embeddings", "--weights", str(tiny_checkpoint), "-o", str(tmp_path), "--no-plot", "--quiet"]) == 0
    norms = torch.linalg.vector_norm(model.wte.weight.detach(), dim=1)
    top = [r for r in dict_rows(tmp_path / "embeddings_reach.csv") if r["measure"] == "norm"
           and r["position"].startswith("top")]
    assert top and all(same(r["value"], norms[int(r["token"])]) for r in top)
    assert same(top[0]["value"], norms.max())


# ---- the HTML report: 4 significant digits ------------------------------------------------------------

def report_data(page: str) -> dict:
    """The JSON object the report's scripts draw from."""
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)[1])


@pytest.mark.slow
def test_report_data_keeps_tiny_probabilities(loaded):
    """A peaked lens (E scaled up): top-5 probabilities of 1e-17 stay in the page's data, to 6 digits."""
    model, tokenizer = loaded
    peaked = copy.deepcopy(model)
    with torch.no_grad():
        peaked.wte.weight.mul_(10)
    page = build_report(peaked, tokenizer, TEXT)
    _, _, lens = text_lens(peaked, tokenizer, TEXT, 5)
    data = report_data(page)["lens"]
    expected = lens.top_probs[:, 0].double().numpy()
    assert expected.min() < 1e-12  # what rounding to 4 decimals made 0
    assert np.allclose(np.array(data["topProb"]), expected, rtol=5e-6, atol=0)
    assert np.allclose(np.array(data["predProb"]), lens.prediction_prob[:, 0].double().numpy(), rtol=5e-6, atol=0)


VALUES = [0.0, 1.5e-23, 1.797e-13, 0.00012345, 0.00009999, 0.9876543, 1.0, 35.1234, 999.96, 12345.6, 123456.7,
          2.5e6, -0.0421, -3.14159, 10.8198]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_report_prints_what_the_tables_print(tmp_path):
    """The page's sig() (run by node) gives tables.significant's 4 significant digits for every value."""
    source = resources.files("minigpt_geom.analysis").joinpath("report_template.html").read_text(encoding="utf-8")
    function = re.search(r"function sig\(v\) \{.*?\n  \}", source, re.S)[0]
    script = f"{function}\nconsole.log(JSON.stringify({json.dumps(VALUES)}.map(sig)));"
    printed = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    assert printed == [significant(v) for v in VALUES]
