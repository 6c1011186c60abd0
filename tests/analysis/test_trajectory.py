"""Logit lens, word trajectories and drift (experiments 4 and 5) against direct NumPy computations."""

from __future__ import annotations

import re

import csv
import json
import random

import numpy as np
import pytest
import torch
from minigpt_geom.model.trace import TraceRequest

from helpers import SMALL, requires, write_random_checkpoint
from minigpt_geom import GPT2
from minigpt_geom.text.corpus import corpus_files, corpus_windows, encode_plain, text_chunks, text_windows
from minigpt_geom.analysis.drift import corpus_drift, drift_position_rows, text_drift
from minigpt_geom.analysis.lens import lens_logits, logit_lens
from minigpt_geom.analysis.text import encode_text, trace_text
from minigpt_geom.analysis.report import build_report, script_json
from minigpt_geom.analysis.trajectory import choose_highlight, pca_basis, word_trajectory
from minigpt_geom.cli import main
from minigpt_geom.errors import InputError
from minigpt_geom.text.tokenizer import Tokenizer

TEXT = "To kill two birds with one stone. The cat sat on the mat."
CORPUS = [
    "The cat sat on the mat, and the dog ate the bone.\nThere is a house in the town.",
    "We walk to the station at seven o'clock.  Two  spaces,\ttabs\n\n\nand blank lines. café naïve — über ü",
    "To kill two birds with one stone. " * 9,
    "short",
]


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> GPT2:
    return GPT2.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint) -> Tokenizer:
    return Tokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def traced(model, tokenizer):
    """Two sequences of the same length, traced with their residual states."""
    ids = encode_text(tokenizer, TEXT, model.config.n_ctx)
    idx = torch.tensor([ids, ids[::-1]])
    with torch.inference_mode():
        logits, trace = model(idx, trace=TraceRequest(states=True))
    return idx, logits, trace


def numpy_lens(model: GPT2, x: np.ndarray) -> np.ndarray:
    """LN_f with x's own statistics, then Eᵀ, in float64: [..., d] -> [..., V]."""
    gamma, beta = (p.detach().double().numpy() for p in (model.ln_f.weight, model.ln_f.bias))
    E = model.wte.weight.detach().double().numpy()
    x = x.astype(np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + model.config.ln_eps) * gamma + beta) @ E.T


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---- logit lens -------------------------------------------------------------------------------------

def test_lens_at_last_layer_is_the_models_logits(model, traced):
    _, logits, trace = traced
    lens = lens_logits(model, trace.states[-1])
    assert (lens - logits).abs().max().item() <= 1e-5


def test_lens_at_every_layer_equals_numpy_layer_norm_with_own_statistics(model, traced):
    _, _, trace = traced
    states = trace.states.numpy()
    for layer in range(model.config.n_layer + 1):
        expected = numpy_lens(model, states[layer])
        np.testing.assert_allclose(lens_logits(model, trace.states[layer]).double().numpy(), expected, atol=1e-4, rtol=1e-5)
    # Reusing the last layer's statistics would give a different answer at layer 0: the lens must not.
    x0, xL = states[0].astype(np.float64), states[-1].astype(np.float64)
    assert not np.allclose(np.std(x0, axis=-1), np.std(xL, axis=-1), rtol=1e-2)


def test_lens_statistics_match_direct_computation(model, traced):
    _, _, trace = traced
    k = 4
    lens = logit_lens(model, trace, k=k)
    logp = log_softmax(numpy_lens(model, trace.states.numpy()))  # [L+1, B, T, V]
    final = logp[-1]
    prediction = final.argmax(-1)  # [B, T]
    np.testing.assert_array_equal(lens.prediction.numpy(), prediction)
    target = np.take_along_axis(logp, np.broadcast_to(prediction[None, ..., None], logp.shape[:-1] + (1,)), -1)[..., 0]
    np.testing.assert_allclose(lens.prediction_prob.numpy(), np.exp(target), atol=1e-6, rtol=1e-4)
    np.testing.assert_array_equal(lens.prediction_rank.numpy(), (logp > target[..., None] + 1e-9).sum(-1) + 1)
    assert (lens.prediction_rank[-1] == 1).all()
    kl = (np.exp(final)[None] * (final[None] - logp)).sum(-1)  # KL(p_L ‖ p_l)
    np.testing.assert_allclose(lens.kl_to_final.numpy(), kl, atol=1e-5, rtol=1e-4)
    assert lens.kl_to_final[-1].abs().max() <= 1e-5
    np.testing.assert_allclose(lens.entropy.numpy(), -(np.exp(logp) * logp).sum(-1), atol=1e-5, rtol=1e-4)
    top = np.argsort(-logp, axis=-1)[..., :k]
    np.testing.assert_array_equal(lens.top_ids.numpy(), top)
    np.testing.assert_allclose(lens.top_probs.numpy(), np.exp(np.take_along_axis(logp, top, -1)), atol=1e-6, rtol=1e-4)


def test_lens_top_k_must_be_positive_and_is_clipped_to_the_vocabulary(model, traced):
    _, _, trace = traced
    for k in (0, -1):
        with pytest.raises(InputError, match="at least 1"):
            logit_lens(model, trace, k=k)
    assert logit_lens(model, trace, k=10_000).top_ids.shape[-1] == model.config.vocab_size


@pytest.mark.slow
def test_lens_of_a_folded_model_equals_the_unfolded_lens(tiny_checkpoint, model, traced):
    """fold_ln moves ln_f's γ, β into the unembedding; lens_logits goes through model.unembed, so it agrees."""
    idx, _, trace = traced
    folded = GPT2.from_pretrained(tiny_checkpoint, fold_ln=True).eval()
    with torch.inference_mode():
        _, folded_trace = folded(idx, trace=TraceRequest(states=True))
    torch.testing.assert_close(lens_logits(folded, folded_trace.states), lens_logits(model, trace.states),
                               atol=1e-4, rtol=1e-5)
    lens, folded_lens = logit_lens(model, trace), logit_lens(folded, folded_trace)
    torch.testing.assert_close(folded_lens.top_probs, lens.top_probs, atol=1e-5, rtol=1e-4)
    assert (folded_lens.prediction == lens.prediction).all()
    # drift decodes through the folded unembedding too: the same log-probabilities and drift
    for folded_drift, own in ((text_drift(folded, idx[0].tolist()), text_drift(model, idx[0].tolist())),
                              (corpus_drift(folded, [idx[0].tolist()]), corpus_drift(model, [idx[0].tolist()]))):
        np.testing.assert_allclose(folded_drift.drift, own.drift, atol=1e-4)
        np.testing.assert_allclose(folded_drift.logp_next, own.logp_next, atol=1e-4)


def test_trace_text_keeps_attention_patterns_only_when_asked(model, tokenizer):
    _, _, trace = trace_text(model, tokenizer, TEXT)
    assert trace.attention.pattern is None and trace.states is not None
    _, _, kept = trace_text(model, tokenizer, TEXT, keep_attention=True)
    T = len(tokenizer.encode(TEXT))
    assert kept.attention.pattern.shape == (model.config.n_layer, 1, model.config.n_head, T, T)


def test_lens_angles_come_from_the_trace(model, traced):
    _, _, trace = traced
    lens = logit_lens(model, trace)
    assert (lens.angular_step[0] == 0).all() and (lens.angular_path[0] == 0).all()
    torch.testing.assert_close(lens.angular_step[1:], trace.residual.angle)
    torch.testing.assert_close(lens.angular_path[1:], trace.angular_path)
    centred = trace.states.double() - trace.states.double().mean(-1, keepdim=True)  # direct: angle of sphere points
    cosine = torch.nn.functional.cosine_similarity(centred[:-1], centred[1:], dim=-1).clamp(-1, 1)
    torch.testing.assert_close(lens.angular_step[1:].double(), torch.arccos(cosine), atol=1e-3, rtol=1e-3)


def test_encode_text_rejects_empty_and_too_long(tokenizer):
    with pytest.raises(InputError, match="empty"):
        encode_text(tokenizer, "  ", 64)
    with pytest.raises(InputError, match="longer than the model's context of 4"):
        encode_text(tokenizer, TEXT, 4)


# ---- trajectory ----------------------------------------------------------------------------------------

def test_pca_projection_is_deterministic(model, tokenizer, traced):
    _, _, trace = traced
    words = [tokenizer.decode([i]) for i in traced[0][0].tolist()]
    decode = lambda i: tokenizer.decode([i])  # noqa: E731
    prediction = trace.states.new_zeros(len(words), dtype=torch.long).tolist()
    runs = [word_trajectory(model, trace.states[:, :1], words, prediction, decode) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].coords, runs[1].coords)
    np.testing.assert_array_equal(runs[0].prediction_coord, runs[1].prediction_coord)
    assert runs[0].coords.shape == (model.config.n_layer + 1, len(words), 3)
    # The sign convention fixes each axis whatever the order of the points.
    points = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    mean, components, explained = pca_basis(points)
    _, shuffled, _ = pca_basis(points[torch.randperm(50, generator=torch.Generator().manual_seed(1))])
    torch.testing.assert_close(components, shuffled)
    torch.testing.assert_close(components @ components.T, torch.eye(3, dtype=torch.float64))
    coords = (points.double() - mean) @ components.T
    assert (coords[coords.abs().argmax(0), torch.arange(3)] > 0).all()
    assert pca_basis(points[:2])[1].shape == (3, 8)  # fewer points than axes: padded
    # explained variance against NumPy: the variance of each projected coordinate over the total variance
    centred = points.double().numpy() - points.double().numpy().mean(0)
    np.testing.assert_allclose(explained.numpy(), (centred @ components.numpy().T).var(0) / centred.var(0).sum())


def test_choose_highlight():
    words = ["To", " kill", " two", " one", " stone"]
    assert choose_highlight(words) == 3
    assert choose_highlight(words[:3]) == 2
    assert choose_highlight(words, word="stone") == 4
    assert choose_highlight(words, position=-1) == 4
    with pytest.raises(InputError):
        choose_highlight(words, word="bird")


# ---- drift ---------------------------------------------------------------------------------------------

def numpy_drift(model: GPT2, windows: list[list[int]]) -> dict[str, np.ndarray]:
    """The definition, position by position: LN_f(x_l[t]) · (e_{t+1} − e_t) and the lens log-probs, in NumPy;
    "position" holds each pair's t within its window."""
    E = model.wte.weight.detach().double().numpy()
    terms = {"drift": [], "logp_next": [], "logp_current": [], "position": []}
    for window in windows:
        with torch.inference_mode():
            _, trace = model(torch.tensor([window]), trace=TraceRequest(states=True))
        states = trace.states[:, 0].numpy()  # [L+1, T, d]
        gamma, beta = (p.detach().double().numpy() for p in (model.ln_f.weight, model.ln_f.bias))
        x = states.astype(np.float64)
        mu = x.mean(-1, keepdims=True)
        x_hat = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + model.config.ln_eps) * gamma + beta
        for t in range(len(window) - 1):
            terms["drift"].append(x_hat[:, t] @ (E[window[t + 1]] - E[window[t]]))  # [L+1]
            logp = log_softmax(x_hat[:, t] @ E.T)
            terms["logp_next"].append(logp[:, window[t + 1]])
            terms["logp_current"].append(logp[:, window[t]])
            terms["position"].append(t)
    position = np.array(terms.pop("position"))
    return {**{k: np.stack(v, axis=1) for k, v in terms.items()}, "position": position}  # [L+1, pairs], [pairs]


def numpy_drift_by_position(direct: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean drift [L+1, P], pairs [P]) at each position t of a window, straight from the pairs."""
    P = direct["position"].max() + 1
    counts = np.array([(direct["position"] == t).sum() for t in range(P)])
    means = np.stack([direct["drift"][:, direct["position"] == t].mean(axis=1) for t in range(P)], axis=1)
    return means, counts


def test_drift_equals_its_definition(model, tokenizer):
    windows = list(text_windows(CORPUS, tokenizer, 24))
    assert len({len(w) for w in windows}) > 1  # full windows and shorter file tails
    result = corpus_drift(model, windows, batch_size=2)
    direct = numpy_drift(model, windows)
    assert result.positions == direct["drift"].shape[1] == sum(len(w) - 1 for w in windows)
    assert result.windows == len(windows)
    np.testing.assert_allclose(result.drift, direct["drift"].mean(1), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(result.drift_std, direct["drift"].std(1), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(result.logp_next, direct["logp_next"].mean(1), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(result.logp_current, direct["logp_current"].mean(1), atol=1e-4, rtol=1e-4)
    # The paper's reading of drift as a difference of log-probabilities, against NumPy's log-softmax of the logits
    # (computed apart from the dot products that define drift): log p(w_t+1) − log p(w_t) = LN_f(x)·(e_t+1 − e_t)
    np.testing.assert_allclose((direct["logp_next"] - direct["logp_current"]).mean(1), result.drift, atol=1e-4)
    by_position, counts = numpy_drift_by_position(direct)
    assert by_position.shape == (model.config.n_layer + 1, 23)  # windows of 24 tokens: pairs at t = 0..22
    np.testing.assert_array_equal(result.position_counts, counts)
    np.testing.assert_allclose(result.drift_by_position, by_position, atol=1e-4, rtol=1e-4)
    rows = drift_position_rows(result)
    assert len(rows) == by_position.size and rows[1] == {"layer": 0, "position": 1, "pairs": int(counts[1]),
                                                        "drift": pytest.approx(by_position[0, 1], abs=1e-4)}
    single = text_drift(model, windows[0])
    first = direct["drift"][:, : len(windows[0]) - 1]  # [L+1, T−1]: one pair at each position
    np.testing.assert_allclose(single.drift, first.mean(1), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(single.drift_by_position, first, atol=1e-4, rtol=1e-4)
    few = corpus_drift(model, windows, batch_size=3, logprobs=False, max_windows=2)
    assert few.windows == 2 and few.logp_next is None
    with pytest.raises(InputError, match="at least 1"):
        corpus_drift(model, windows, max_windows=0)


@pytest.mark.slow
def test_streaming_drift_over_a_folder_equals_in_memory(model, tokenizer, tmp_path):
    (tmp_path / "sub").mkdir()
    paths = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "sub" / "c.txt", tmp_path / "d.txt"]
    for path, text in zip(paths, CORPUS):
        path.write_bytes(text.encode("utf-8"))
    (tmp_path / ".hidden.txt").write_text("ignored")
    (tmp_path / "notes.md").write_text("ignored")
    files = corpus_files(tmp_path)
    assert files == sorted(paths)
    texts = [p.read_text(encoding="utf-8") for p in files]
    for chunk_bytes in (3, 7, 64):  # tiny chunks cut words and multi-byte characters
        assert list(corpus_windows(files, tokenizer, 24, chunk_bytes)) == list(text_windows(texts, tokenizer, 24))
    streamed = corpus_drift(model, corpus_windows(files, tokenizer, 24, chunk_bytes=5), batch_size=2)
    in_memory = corpus_drift(model, text_windows(texts, tokenizer, 24), batch_size=2)
    for name in ("drift", "drift_std", "logp_next", "logp_current", "drift_by_position"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(in_memory, name), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(streamed.position_counts, in_memory.position_counts)
    assert (streamed.positions, streamed.windows) == (in_memory.positions, in_memory.windows)


def test_chunked_encoding_equals_whole_encoding(tokenizer, tmp_path):
    rng = random.Random(0)
    alphabet = ["a", "b", "the", " ", "  ", "\n", "\t", ".", "'s", "7", "é", "—", "\u00a0", "\u3000", "x y"]
    path = tmp_path / "random.txt"
    for _ in range(30):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        path.write_bytes(text.encode("utf-8"))
        for chunk_bytes in (1, 2, 5):
            chunks = list(text_chunks(path, chunk_bytes))
            assert "".join(chunks) == text
            assert [i for c in chunks for i in encode_plain(tokenizer, c)] == encode_plain(tokenizer, text), repr(text)


def test_drift_rejects_missing_or_empty_corpus(model, tokenizer, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        corpus_files(tmp_path / "nope")
    with pytest.raises(InputError, match="no files"):
        corpus_files(tmp_path)
    with pytest.raises(InputError, match="no pair"):
        corpus_drift(model, text_windows(["a"], tokenizer, 16))


# ---- commands, end to end ------------------------------------------------------------------------------

def csv_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@requires("matplotlib")
def test_lens_and_trajectory_commands(tiny_checkpoint, tokenizer, tmp_path, capsys):
    n_tokens, n_layers = len(tokenizer.encode(TEXT)), 3
    assert main(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "lens"), "--top-k", "3"]) == 0
    assert len(csv_rows(tmp_path / "lens" / "lens.csv")) == n_tokens * n_layers
    assert is_png(tmp_path / "lens" / "lens_grid.png")
    out = tmp_path / "traj"
    assert main(["trajectory", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--word", "stone"]) == 0
    printed = capsys.readouterr().out
    assert "predicts" in printed and "KL" in printed
    rows = csv_rows(out / "lens.csv")
    assert len(rows) == n_tokens * n_layers and {"top1", "prediction_rank", "kl_to_final"} <= set(rows[0])
    assert len(csv_rows(out / "trajectory.csv")) == n_tokens * n_layers + 1
    assert is_png(out / "trajectory.png") and is_png(out / "lens_grid.png")


@pytest.mark.slow
@requires("matplotlib")
def test_drift_command(tiny_checkpoint, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(CORPUS):
        (corpus / f"{i}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "drift"
    assert main(["drift", str(corpus), "--weights", str(tiny_checkpoint), "-o", str(out), "--context", "16",
                 "--batch-size", "3", "--logprobs"]) == 0
    rows = csv_rows(out / "drift.csv")
    assert [int(r["layer"]) for r in rows] == [0, 1, 2]
    assert {"drift", "logp_next", "logp_current"} <= set(rows[0])
    by_position = csv_rows(out / "drift_by_position.csv")
    assert [(int(r["layer"]), int(r["position"])) for r in by_position] == [(l, t) for l in range(3) for t in range(15)]
    assert is_png(out / "drift.png") and is_png(out / "drift_by_position.png")
    assert "positions" in capsys.readouterr().out


@pytest.mark.slow
@requires("matplotlib")
def test_report_command(tiny_checkpoint, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--layer", "1", "--head", "2"]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 5 and "<canvas" in page and "lens-grid" in page and "{{" not in page
    assert 'alt="patching map"' in page and 'alt="attribution bars"' in page  # the causal sections
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch


@pytest.mark.slow
@requires("matplotlib")
def test_report_output_folder(tiny_checkpoint, tmp_path):
    """-o naming a folder (existing, or new with a trailing /) writes report.html inside it."""
    weights = ["--weights", str(tiny_checkpoint)]
    assert main(["report", TEXT, *weights, "-o", str(tmp_path / "new") + "/"]) == 0
    assert (tmp_path / "new" / "report.html").is_file()
    (tmp_path / "existing").mkdir()
    assert main(["report", TEXT, *weights, "-o", str(tmp_path / "existing")]) == 0
    assert (tmp_path / "existing" / "report.html").is_file()


@pytest.mark.slow
@requires("matplotlib")
def test_report_of_a_bfloat16_model(tiny_checkpoint, tokenizer, model):
    bf16 = GPT2.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16).eval()
    page = build_report(bf16, tokenizer, TEXT, layer=1, head=2)
    assert page.count("data:image/png;base64,") == 5, re.findall(r"Not drawn: [^<]*", page)
    top = [logit_lens(m, trace_text(m, tokenizer, TEXT)[2], k=1).top_ids[-1, 0, :, 0] for m in (bf16, model)]
    assert (top[0] == top[1]).float().mean() >= 0.8  # bfloat16 rounding may flip a near tie, not most words


@pytest.mark.slow
@requires("matplotlib")
def test_report_of_a_folded_model_names_its_geometry(tiny_checkpoint, tokenizer):
    page = build_report(GPT2.from_pretrained(tiny_checkpoint, fold_ln=True), tokenizer, TEXT)
    assert "every site is layernorm: the sphere of radius √d in the hyperplane Σx = 0" in page
    ln_free = build_report(GPT2.from_pretrained(tiny_checkpoint, norm="none"), tokenizer, TEXT)
    assert "every site is none: all of ℝ^d" in ln_free and "sphere of radius" not in ln_free


def test_script_json_cannot_close_the_script_element():
    value = {"words": ["</script><script>alert(1)</script>", "<!--", "a & b > c", "ü"]}
    text = script_json(value)
    assert not {"<", ">", "&"} & set(text)
    assert json.loads(text) == value


@requires("matplotlib")
def test_commands_report_bad_input(tiny_checkpoint, tmp_path, capsys):
    assert main(["report", "", "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "r.html")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["lens", "word " * 100, "--weights", str(tiny_checkpoint), "-o", str(tmp_path)]) == 2
    assert "longer than the model's context of 64" in capsys.readouterr().err
    assert main(["report", TEXT, "--weights", str(tiny_checkpoint), "--head", "9", "-o", str(tmp_path / "r.html")]) == 2


@pytest.mark.parametrize("command", ["lens", "trajectory", "report"])
@pytest.mark.parametrize("k", ["0", "-1"])
def test_top_k_below_one_is_an_input_error(tiny_checkpoint, tmp_path, capsys, command, k):
    out = tmp_path / ("r.html" if command == "report" else "out")
    assert main([command, TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--top-k", k]) == 2
    assert f"argument --top-k: must be at least 1, got {k}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["lens", "trajectory", "drift"])
def test_output_folder_that_is_a_file_is_an_input_error(tiny_checkpoint, tmp_path, capsys, command):
    (tmp_path / "corpus.txt").write_text(CORPUS[0], encoding="utf-8")
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    first = str(tmp_path / "corpus.txt") if command == "drift" else TEXT
    assert main([command, first, "--weights", str(tiny_checkpoint), "-o", str(taken), "--no-plot"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert taken.read_text() == "not a folder"


def test_drift_bad_device_and_window_count(tiny_checkpoint, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS[0], encoding="utf-8")
    argv = ["drift", str(corpus), "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "out"), "--no-plot"]
    assert main(argv + ["--device", "foo"]) == 2
    assert "--device 'foo' cannot be used here" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(argv + ["--device", "cuda"]) == 2
        assert "--device 'cuda' cannot be used here" in capsys.readouterr().err
    assert main(argv + ["--max-windows", "0"]) == 2
    assert "argument --max-windows: must be at least 1, got 0" in capsys.readouterr().err


def test_compare_is_each_models_own_trace_and_lens_in_one_frame(tiny_checkpoint, tmp_path):
    from minigpt_geom.analysis.compare import compare_models
    from minigpt_geom.analysis.lens import logit_lens
    from minigpt_geom.model.lnfree import fix_sigma, fold_fixed_sigma
    from minigpt_geom.training.remove_ln import calibrate_sigma
    from minigpt_geom.text.tokenizer import Tokenizer

    model, tokenizer = GPT2.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)
    ids = torch.tensor([tokenizer.encode(TEXT)])
    fixed = model.with_norm("layernorm")
    for site, (sigma, _) in calibrate_sigma(fixed, [ids]).items():
        fix_sigma(fixed, site, sigma)
    models = {"a": model, "b": fold_fixed_sigma(fixed), "c": GPT2.from_pretrained(tiny_checkpoint, norm="dyt")}
    comparison = compare_models(models, tokenizer, TEXT)
    rows = comparison.rows
    n = model.config.n_layer + 1
    assert [row["model"] for row in rows] == ["a"] * n + ["b"] * n + ["c"] * n
    points = []
    for name, m in models.items():
        with torch.no_grad():
            _, trace = m(ids, trace=TraceRequest(states=True))
            lens = logit_lens(m, trace)
            points.append(m.ln_f(trace.states[:, 0])[0].double().numpy().reshape(-1, 48))
        mine = [row for row in rows if row["model"] == name]
        np.testing.assert_allclose([r["residual_norm"] for r in mine],
                                   np.linalg.norm(trace.states.double().numpy(), axis=-1).mean(axis=(1, 2)), rtol=1e-5)
        np.testing.assert_allclose([r["kl_to_final"] for r in mine], lens.kl_to_final.mean(dim=(1, 2)).numpy(),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose([r["angular_path"] for r in mine], lens.angular_path.mean(dim=(1, 2)).numpy(),
                                   rtol=1e-5, atol=1e-7)
    assert "dyt" in comparison.paths[2].label and "none" in comparison.paths[1].label
    # one PCA on all models' points: the shared coordinates keep every pairwise distance within the 3-D span
    data = np.concatenate(points)
    centred = data - data.mean(0)
    _, singular, vh = np.linalg.svd(centred, full_matrices=False)
    coords = np.concatenate([p.coords.reshape(-1, 3) for p in comparison.paths])
    np.testing.assert_allclose(np.abs(coords), np.abs(centred @ vh[:3].T), atol=1e-6)
    np.testing.assert_allclose(comparison.explained_variance, singular[:3] ** 2 / (singular ** 2).sum(), rtol=1e-6)


def test_compare_of_models_of_other_shapes_and_one_with_itself(tiny_checkpoint, capsys, tmp_path):
    from minigpt_geom.analysis.compare import compare_models, unique_labels
    from minigpt_geom.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    model = GPT2.from_pretrained(tiny_checkpoint)
    write_random_checkpoint(tmp_path / "other", **{**SMALL, "vocab_size": 101})
    with pytest.raises(InputError, match="share a tokenizer"):  # a model of 101 words, a tokenizer of 300
        compare_models({"a": model, "b": GPT2.from_pretrained(tmp_path / "other")}, tokenizer, TEXT)
    assert unique_labels(["x/tiny", "y/tiny/", "z"]) == ["tiny #1", "tiny #2", "z"]
    argv = ["compare", TEXT, "--weights", str(tiny_checkpoint), "--against", str(tiny_checkpoint),
            str(tiny_checkpoint), "--no-plot", "-o", str(tmp_path / "compare")]
    assert main(argv) == 0  # the same model three times: three labels, three equal blocks of rows
    out = capsys.readouterr().out
    assert f"{tiny_checkpoint.name} #3" in out
