"""Weight-space analyses (experiments 1-3, top query-key pairs) against brute force and the model's own forward.

Oracles: NumPy in float64 on the raw parameters (layer norm, head slices, SVD written out again here), and the
model's attention computed by its own modules. The model is the random `tiny_checkpoint` (2 blocks, 4 heads,
d = 48, d_head = 12, vocabulary 300, every parameter random)."""

from __future__ import annotations

import csv
import io
import sys
import math

import numpy as np
import pytest
import torch
from helpers import needs, requires
from minigpt_geom.model.trace import TraceRequest

from minigpt_geom import GPT2, InputError
from minigpt_geom.analysis.circuits import (attention_update, block_heads, head_pattern, head_weights,
                                            ln_1_embeddings, query_key_matrix, score_terms, value_output_matrix)
from minigpt_geom.analysis.embeddings import embedding_variants, reachability, sphere_distances, top_and_bottom
from minigpt_geom.analysis.probe import (default_layers, key_value_probe, probe_layers, query_key_probe,
                                         query_key_scores, single_token_words)
from minigpt_geom.analysis.qk import strongest_pairs, top_pairs
from minigpt_geom.analysis.svd import (cumulative_share, head_svd, key_bias_words, nearest_words,
                                       plot_singular_values, singular_pair_words)
from minigpt_geom.analysis.tables import Table, format_csv, format_table, latex_escape
from minigpt_geom.errors import MissingDependencyError
from minigpt_geom.model.attention import attention_scores, split_heads
from minigpt_geom.cli import main
from minigpt_geom.text.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> GPT2:
    return GPT2.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint) -> Tokenizer:
    return Tokenizer.from_pretrained(tiny_checkpoint)


# ---- NumPy oracles (float64, straight from the stored parameters) -----------------------------------------

def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def np_layer_norm(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float) -> np.ndarray:
    centred = x - x.mean(axis=-1, keepdims=True)
    point = centred / np.sqrt((centred ** 2).mean(axis=-1, keepdims=True) + eps)
    return point if gamma is None else point * gamma + beta


def np_head(model: GPT2, layer: int, head: int) -> dict[str, np.ndarray]:
    """W_Q, W_K, W_V [d, d_h], W_O [d_h, d], biases, by slicing c_attn / c_proj by hand."""
    d, dh = model.config.n_embd, model.config.head_dim
    W, b = np_(model.h[layer].attn.c_attn.weight), np_(model.h[layer].attn.c_attn.bias)
    c = slice(head * dh, (head + 1) * dh)
    return dict(W_Q=W[:, c], W_K=W[:, d + c.start:d + c.stop], W_V=W[:, 2 * d + c.start:2 * d + c.stop],
                W_O=np_(model.h[layer].attn.c_proj.weight)[c], b_Q=b[c], b_K=b[d + c.start:d + c.stop],
                b_V=b[2 * d + c.start:2 * d + c.stop], b_O=np_(model.h[layer].attn.c_proj.bias))


def np_sphere(model: GPT2, layer: int, position: int | None = None) -> np.ndarray:
    """ln_1(E [+ P[position]]) in float64."""
    E = np_(model.wte.weight) + (0 if position is None else np_(model.wpe.weight)[position])
    ln = model.h[layer].ln_1
    return np_layer_norm(E, np_(ln.weight), np_(ln.bias), model.config.ln_eps)


def np_top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of a 1-D array, largest first."""
    return np.argsort(-values, kind="stable")[:k]


# ---- circuits: the score decomposition reproduces the model's attention ------------------------------------

def test_head_matrices(model):
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            w, ref = head_weights(model, layer, head), np_head(model, layer, head)
            for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
                np.testing.assert_array_equal(np_(getattr(w, name)), ref[name])
            np.testing.assert_allclose(np_(query_key_matrix(w)), ref["W_Q"] @ ref["W_K"].T / math.sqrt(12), atol=1e-7)
            np.testing.assert_allclose(np_(value_output_matrix(w)), ref["W_V"] @ ref["W_O"], atol=1e-7)


def test_score_decomposition_reproduces_attention(model):
    """Four score terms, mask, softmax, values, W_O, + b_O == the block's own attention update, on a real forward."""
    idx = torch.randint(0, model.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        _, trace = model(idx, trace=TraceRequest(states=True, patterns=True))
        for layer, block in enumerate(model.h):
            x_hat = block.ln_1(trace.states[layer])[0]  # what block `layer` reads
            expected = block.attn(x_hat)[0]
            assert (attention_update(model, layer, x_hat) - expected).abs().max() <= 1e-5
            for w in block_heads(model, layer):  # one head's pattern, as the report draws it
                assert (head_pattern(w, x_hat) - trace.attention.pattern[layer, :, w.head]).abs().max() <= 1e-6
            # and each head's four terms sum to the model's own scores (q·k/√d_h with biases)
            q, k, _ = (split_heads(part, model.config.n_head) for part in block.attn.c_attn(x_hat).chunk(3, dim=-1))
            scores = attention_scores(q, k)  # [B, H, T, T], −∞ above the diagonal
            visible = torch.isfinite(scores[0, 0])
            for w in block_heads(model, layer):
                total = score_terms(w, x_hat, x_hat).total
                assert (total[:, visible] - scores[:, w.head][:, visible]).abs().max() <= 1e-5


def test_bad_indices_are_input_errors(model):
    with pytest.raises(InputError, match="layer 2 does not exist"):
        head_weights(model, 2, 0)
    with pytest.raises(InputError, match="head 4 does not exist"):
        head_weights(model, 0, 4)
    with pytest.raises(InputError, match="layer 5"):
        probe_layers(model, [0, 5], [("one", 1)])
    with pytest.raises(InputError, match="position"):
        strongest_pairs(model, 0, 0, query_position=64)
    with pytest.raises(InputError, match="after query position"):
        strongest_pairs(model, 0, 0, query_position=1, key_position=3)


# ---- qk: blocked top-k == the full V × V matrix ------------------------------------------------------------

@pytest.mark.parametrize("biases, query_position, key_position",
                         [(False, None, None), (True, None, None), (False, 5, 2), (True, 7, 0)])
def test_strongest_pairs_match_full_matrix(model, biases, query_position, key_position):
    layer, head, k = 1, 2, 25
    pairs = strongest_pairs(model, layer, head, k, biases=biases, query_position=query_position,
                            key_position=key_position, chunk_size=37)  # 300 words: 9 chunks, the last short
    p = np_head(model, layer, head)
    queries = np_sphere(model, layer, query_position) @ p["W_Q"] + (p["b_Q"] if biases else 0)
    keys = np_sphere(model, layer, key_position) @ p["W_K"] + (p["b_K"] if biases else 0)
    full = queries @ keys.T / math.sqrt(p["W_Q"].shape[1])  # [V, V], brute force
    best = np_top(full.ravel(), k)
    V = full.shape[1]
    assert [(x.query, x.key) for x in pairs] == [(i // V, i % V) for i in best]
    np.testing.assert_allclose([x.score for x in pairs], full.ravel()[best], rtol=1e-5, atol=1e-7)


def test_top_pairs_chunk_sizes():
    g = torch.Generator().manual_seed(3)
    queries, keys = torch.randn(53, 6, generator=g), torch.randn(41, 6, generator=g)
    full = (queries @ keys.T).flatten()
    for chunk_size, k in [(1, 10), (7, 10), (53, 10), (1000, 10), (5, 2173)]:  # 2173 = every entry
        pairs = top_pairs(queries, keys, k, chunk_size)
        expected = full.topk(k).values
        assert torch.allclose(torch.tensor([p.score for p in pairs]), expected)
        # each pair names its own score (a blocked product may round differently from the whole one: 1e-6)
        assert all(abs(full[p.query * 41 + p.key] - p.score) <= 1e-6 for p in pairs)


# ---- probe: scores are the model's scores --------------------------------------------------------------------

def model_score(model: GPT2, layer: int, head: int, query: int, key: int) -> float:
    """The score the model's attention gives query word → key word with no biases and no positions:
    a 2-token residual stream [E_key, E_query] built directly, c_attn with its bias zeroed."""
    block = model.h[layer]
    x = model.wte.weight[[key, query]].unsqueeze(0)  # [1, 2, d]: key at position 0, query at position 1
    with torch.inference_mode():
        x_hat = block.ln_1(x)[0]
        q, k, _ = (split_heads(part, model.config.n_head)
                   for part in (x_hat @ block.attn.c_attn.weight).chunk(3, dim=-1))  # x̂ W, no bias
        return attention_scores(q, k)[0, head, 1, 0].item()


@pytest.mark.slow
def test_query_key_probe_scores_are_model_scores(model):
    words = [("a", 65), ("b", 66), ("one", 200)]
    for layer in (0, 1):
        rows = query_key_probe(model, layer, words, k=4)
        assert len(rows) == (model.config.n_head + 1) * len(words)
        for row in rows:
            if row.head is None:
                continue
            for key, score in zip(row.matches, row.scores):
                assert abs(score - model_score(model, layer, row.head, row.token, key)) <= 1e-6
        # the full score vector, against NumPy, and the top-k read from it
        sphere, p = np_sphere(model, layer), np_head(model, layer, 3)
        expected = sphere[200] @ (p["W_Q"] @ p["W_K"].T / math.sqrt(12)) @ sphere.T
        got = query_key_scores(head_weights(model, layer, 3), ln_1_embeddings(model, layer), torch.tensor([200]))[0]
        np.testing.assert_allclose(np_(got), expected, rtol=1e-5, atol=1e-6)
        row = next(r for r in rows if r.head == 3 and r.token == 200)
        assert list(row.matches) == list(np_top(expected, 4))


def test_key_value_probe_against_numpy_and_model(model):
    words = [("a", 65), ("one", 200)]
    E, ln_f = np_(model.wte.weight), model.ln_f
    for layer in (0, 1):
        rows = key_value_probe(model, layer, words, k=5)
        sphere = np_sphere(model, layer)
        total = 0
        for head in range(model.config.n_head):
            p = np_head(model, layer, head)
            u = sphere[[65, 200]] @ p["W_V"] @ p["W_O"] + p["b_V"] @ p["W_O"]  # u_h [2, d]
            total = total + u
            logits = np_layer_norm(E[[65, 200]] + u + p["b_O"], np_(ln_f.weight), np_(ln_f.bias), 1e-5) @ E.T
            for i, (word, token) in enumerate(words):
                row = next(r for r in rows if r.head == head and r.token == token)
                assert list(row.matches) == list(np_top(logits[i], 5))
                np.testing.assert_allclose(row.scores, logits[i][list(row.matches)], rtol=1e-5, atol=1e-5)
                assert row.norm == pytest.approx(np.linalg.norm(u[i]), rel=1e-5)
        # the block's sum is exactly what its attention writes for a one-word input (softmax over one key = 1)
        with torch.inference_mode():
            x = model.wte.weight[[65, 200]].unsqueeze(1)  # [2, 1, d]: two sequences of one word, no position
            written = model.h[layer].attn(model.h[layer].ln_1(x)[0])[0][:, 0]  # Σ_h u_h + b_O
            logits = model.unembed(model.ln_f(x[:, 0] + written)[0])
        for i, (word, token) in enumerate(words):
            row = next(r for r in rows if r.head is None and r.token == token)
            assert list(row.matches) == logits[i].topk(5).indices.tolist()
            assert row.norm == pytest.approx(np.linalg.norm(total[i]), rel=1e-5)


def test_word_selection_and_default_blocks(tokenizer):
    kept, dropped = single_token_words(tokenizer, ["one", "he", "stone", "zebra"])
    assert kept == [("one", tokenizer.encode("one")[0]), ("he", tokenizer.encode("he")[0])]
    assert dropped == ["stone", "zebra"]
    kept, dropped = single_token_words(tokenizer, ["stone", "town", "one"], leading_space=True)
    assert [w for w, _ in kept] == [" stone", " town"] and dropped == ["one"]  # the texts probed, the words dropped
    assert default_layers(12) == [0, 5, 11]
    assert default_layers(2) == [0, 1]
    assert default_layers(1) == [0]


# ---- svd: equal to NumPy's SVD with the sign rule -------------------------------------------------------------

@pytest.mark.parametrize("circuit", ["QK", "VO"])
def test_svd_tables_match_numpy(model, circuit):
    E = np_(model.wte.weight)
    for layer, head in [(0, 0), (1, 3)]:
        p, sphere = np_head(model, layer, head), np_sphere(model, layer)
        if circuit == "QK":
            M, left_words, right_words = p["W_Q"] @ p["W_K"].T / math.sqrt(12), sphere, sphere
        else:
            M, left_words, right_words = p["W_V"] @ p["W_O"], sphere, E
        U, S, Vt = np.linalg.svd(M)
        r = 12  # rank ≤ d_head: the rest are numerically zero
        U, S, V = U[:, :r], S[:r], Vt[:r].T
        matches = right_words @ V
        sign = np.where(matches.max(axis=0) >= (-matches).max(axis=0), 1.0, -1.0)  # largest match positive
        U, V = U * sign, V * sign

        svd = head_svd(model, layer, head, circuit)
        np.testing.assert_allclose(svd.singular_values.numpy(), S, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(svd.left.numpy(), U * S, atol=1e-9)
        np.testing.assert_allclose(svd.right.numpy(), V, atol=1e-9)
        np.testing.assert_allclose(svd.left.numpy() @ (svd.right.numpy()).T, M, atol=1e-9)

        rows = singular_pair_words(model, svd, n_pairs=20, k=3)
        assert len(rows) == r  # 20 asked, d_head = 12 exist
        assert [row.rank for row in rows] == list(range(1, r + 1))  # rank 1: the largest singular value
        for row in rows:
            i = row.rank - 1
            assert row.singular_value == pytest.approx(S[i])
            assert list(row.left) == list(np_top(left_words @ (U[:, i] * S[i]), 3))
            assert list(row.right) == list(np_top(right_words @ V[:, i], 3))


def test_word_counts_are_clipped_to_the_vocabulary(model):
    V = model.config.vocab_size
    vectors = torch.randn(model.config.n_embd, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    nearest = nearest_words(vectors, model.wte.weight.detach(), 100_000)
    assert nearest.shape == (2, V) and sorted(nearest[0].tolist()) == list(range(V))
    words = key_bias_words(model, 0, 1, k=100_000)
    assert len(words.positive) == len(words.negative) == V


@requires("matplotlib")
def test_key_bias_words_and_cumulative_share(model, tmp_path):
    layer, head = 1, 1
    p, sphere = np_head(model, layer, head), np_sphere(model, layer)
    preference = sphere @ (p["b_Q"] @ p["W_K"].T / math.sqrt(12))
    words = key_bias_words(model, layer, head, k=4)
    assert list(words.positive) == list(np_top(preference, 4))
    assert list(words.negative) == list(np_top(-preference, 4))
    share = cumulative_share(head_svd(model, layer, head, "VO").singular_values)
    assert share.shape == (12,) and share[-1].item() == pytest.approx(1.0)
    assert bool((share.diff() >= 0).all())
    png = plot_singular_values({0: share, 3: share}, tmp_path / "share.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- embeddings: both tables equal direct NumPy -------------------------------------------------------------

def test_embedding_tables_match_numpy(model):
    E = np_(model.wte.weight)
    d = E.shape[1]
    target = np_layer_norm(E, None, None, model.config.ln_eps)
    scale = math.sqrt(d) / np.linalg.norm(E, axis=1).mean()
    centred = E - E.mean(axis=0)
    versions = {"as is": E, "centred": centred, "scaled": E * scale, "centred & scaled": centred * scale}
    assert list(embedding_variants(model.wte.weight)) == list(versions)
    for row in sphere_distances(model):
        v = versions[row.setting]
        l2 = np.linalg.norm(v - target, axis=1)
        cos = 1 - (v * target).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(target, axis=1)
        np.testing.assert_allclose([row.l2_mean, row.l2_std, row.cosine_mean, row.cosine_std],
                                   [l2.mean(), l2.std(ddof=1), cos.mean(), cos.std(ddof=1)], rtol=1e-4, atol=1e-6)

    gamma, beta = np_(model.ln_f.weight), np_(model.ln_f.bias)
    expected = {
        "norm": np.linalg.norm(E, axis=1),
        "scaled_norm": np.linalg.norm(E * gamma, axis=1),
        "norm_plus_bias": np.linalg.norm(E, axis=1) + E @ beta,
        "scaled_norm_plus_bias": np.linalg.norm(E * gamma, axis=1) + E @ beta,
        "reach_bound": math.sqrt(d) * np.linalg.norm(E * gamma, axis=1) + E @ beta,
        "tight_reach_bound": math.sqrt(d) * np.linalg.norm(E * gamma - (E * gamma).mean(axis=1, keepdims=True), axis=1)
        + E @ beta,
    }
    measures = reachability(model)
    for name, values in expected.items():
        np.testing.assert_allclose(np_(measures[name]), values, rtol=1e-5, atol=1e-6)
    ranked = top_and_bottom(measures, k=5)
    for name, values in expected.items():
        rows = [r for r in ranked if r.measure == name]
        assert [r.token for r in rows if r.position.startswith("top")] == list(np_top(values, 5))
        assert [r.token for r in rows if r.position.startswith("bottom")] == list(np_top(-values, 5))[::-1]
    # the bounds hold: no ln_f output reaches a word's logit beyond them, and the tight one is below the other
    x = torch.randn(64, d, generator=torch.Generator().manual_seed(1)) * 3
    with torch.inference_mode():
        logits = model.ln_f(x)[0] @ model.wte.weight.T  # [64, V]
    assert bool((logits <= measures["tight_reach_bound"] + 1e-4).all())
    assert bool((measures["tight_reach_bound"] <= measures["reach_bound"] + 1e-5).all())
    assert bool((expected["tight_reach_bound"] < expected["reach_bound"] - 1e-3).any())  # strictly tighter somewhere
    # ... and the tight one is reached: x = s·centre(γ⊙e) for a large s
    words = [0, 65, 200, 299]
    maximisers = 1e3 * (E[words] * gamma - (E[words] * gamma).mean(axis=1, keepdims=True))  # [4, d], in H
    with torch.inference_mode():
        reached = model.ln_f(torch.tensor(maximisers, dtype=torch.float32))[0] @ model.wte.weight[words].T  # [4, 4]
    np.testing.assert_allclose(np_(reached.diagonal()), expected["tight_reach_bound"][words], rtol=1e-5, atol=1e-4)


# ---- tables -------------------------------------------------------------------------------------------------

def test_table_styles():
    header, rows = ["a", "σ"], [["x|y", 1.5], ["_z", None]]
    assert "x\\|y" in format_table(header, rows, "markdown")
    assert "1.500" in format_table(header, rows, "text")  # 4 significant digits
    latex = format_table(header, rows, "latex", caption="W_QK")
    assert r"\_z" in latex and r"$\sigma$" in latex and r"W\_QK" in latex
    assert latex.splitlines()[0] == r"% needs \usepackage{booktabs} (\toprule, \midrule, \bottomrule)"
    assert latex_escape("naïve café") == "naïve café"  # UTF-8, which LaTeX reads as is
    assert latex_escape("a\nb") == r"a\textbackslash{}x0ab"  # control characters spelled as Python does
    assert list(csv.reader(io.StringIO(format_csv(header, rows)))) == [["a", "σ"], ["x|y", "1.5"], ["_z", ""]]
    with pytest.raises(ValueError):
        format_table(header, rows, "html")


def test_tables_as_pandas_dataframes_or_a_clear_error(monkeypatch):
    pandas = needs("pandas")

    table = Table(["word", "p"], [[" stone", 1.797e-13], ["\n", None]], caption="(a) lens")
    frame = table.to_dataframe()
    assert list(frame.columns) == ["word", "p"] and frame.attrs["caption"] == "(a) lens"
    assert frame["word"].tolist() == [" stone", "\n"] and frame["p"][0] == 1.797e-13  # every digit
    assert pandas.isna(frame["p"][1])
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(MissingDependencyError, match=r"^Table.to_dataframe\(\) needs pandas: pip install pandas$"):
        table.to_dataframe()


# ---- the commands, end to end on tiny_checkpoint ------------------------------------------------------------

def read_csv(path) -> list[list[str]]:
    """Rows of a CSV file (token texts may hold newlines, so not splitlines)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@requires("matplotlib")
def test_embeddings_command(tiny_checkpoint, tmp_path, capsys):
    assert main(["embeddings", "--weights", str(tiny_checkpoint), "-o", str(tmp_path)]) == 0
    for name in ("embeddings_sphere_distance", "embeddings_reach"):
        for suffix in ("md", "txt", "csv"):
            assert (tmp_path / f"{name}.{suffix}").stat().st_size > 0
    assert "√d‖γ⊙e‖ + β·e" in (tmp_path / "embeddings_reach.md").read_text()
    assert "h(γ⊙e) + β·e" in (tmp_path / "embeddings_reach.md").read_text()
    assert "h(a) = sup p·a over the sphere of radius √d in the hyperplane" in (tmp_path / "embeddings_reach.md").read_text()
    assert "centred & scaled" in capsys.readouterr().out
    (tmp_path / "taken").write_text("not a folder")
    assert main(["embeddings", "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "taken")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_probe_rows_are_labelled_with_the_probed_tokens(tiny_checkpoint, tmp_path, capsys):
    """--leading-space probes ' stone': the rows say ' stone', the token probed, not 'stone'."""
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    argv = ["--weights", str(tiny_checkpoint), "--layer", "1", "-k", "2", "-o", str(tmp_path), "--no-plot"]
    assert main(["probe", "stone", *argv, "--leading-space", "--style", "markdown"]) == 0
    printed = capsys.readouterr().out
    assert "| ' stone' | sum |" in printed and "| 'stone' |" not in printed
    rows = read_csv(tmp_path / "probe.csv")
    words = {(row[3], int(row[4])) for row in rows[1:]}
    assert words == {(" stone", tokenizer.encode(" stone")[0])}
    assert all(tokenizer.decode([token]) == word for word, token in words)  # each row names its own token
    assert main(["probe", "one", *argv]) == 0  # without the space: 'one', as probed
    assert {row[3] for row in read_csv(tmp_path / "probe.csv")[1:]} == {"one"}


@pytest.mark.slow
@requires("matplotlib")
def test_probe_command(tiny_checkpoint, tmp_path, capsys):
    assert main(["probe", "one", "he", "zebra", "--weights", str(tiny_checkpoint), "-k", "3", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dropped 1 word(s)" in out and "zebra" in out
    for layer in (0, 1):  # default layers 0, 5, 11 clipped to the 2 that exist
        for probe in ("query_key", "key_value"):
            assert (tmp_path / f"probe_layer{layer}_{probe}.md").stat().st_size > 0
    assert len(read_csv(tmp_path / "probe.csv")) == 1 + 2 * 2 * 2 * 5 * 3  # probes·layers·words·rows·k
    # the default noun list with leading spaces, printed; and errors without a traceback
    argv = ["probe", "--weights", str(tiny_checkpoint), "--leading-space", "--layer", "1", "--style", "markdown"]
    assert main(argv) == 0
    assert "| ' stone' | sum |" in capsys.readouterr().out
    assert main(["probe", "--weights", str(tiny_checkpoint)]) == 2  # no noun is one token without a space
    assert main(["probe", "one", "--weights", str(tiny_checkpoint), "--layer", "5"]) == 2
    assert "layer 5 does not exist" in capsys.readouterr().err


@pytest.mark.slow
@requires("matplotlib")
def test_svd_command(tiny_checkpoint, tmp_path, capsys):
    assert main(["svd", "--weights", str(tiny_checkpoint), "--pairs", "5", "-o", str(tmp_path)]) == 0
    for layer in (0, 1):
        for circuit in ("qk", "vo"):
            for suffix in ("md", "tex", "txt"):
                assert (tmp_path / f"svd_layer{layer}_{circuit}.{suffix}").stat().st_size > 0
            assert (tmp_path / f"svd_layer{layer}_{circuit}_spectrum.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"svd_layer{layer}_key_bias.md").exists()
    assert r"\begin{tabular}" in (tmp_path / "svd_layer0_qk.tex").read_text()
    assert len(read_csv(tmp_path / "svd.csv")) == 1 + 2 * 2 * 4 * 5 * 2 * 3  # circuits·layers·heads·pairs·sides·k
    capsys.readouterr()
    assert main(["svd", "--weights", str(tiny_checkpoint), "--layer", "1", "--head", "2", "--style", "latex"]) == 0
    assert "layer 1, head 2" in capsys.readouterr().out
    assert main(["svd", "--weights", str(tiny_checkpoint), "--head", "9"]) == 2
    argv = ["svd", "--weights", str(tiny_checkpoint), "--layer", "0", "--head", "1", "--pairs", "1",
            "-k", "100000", "--bias-words", "100000", "-o", str(tmp_path / "all_words")]
    assert main(argv) == 0  # both clipped to the 300 words
    assert len(read_csv(tmp_path / "all_words" / "svd.csv")) == 1 + 2 * 1 * 2 * 300  # circuits·pairs·sides·words


@requires("matplotlib")
def test_qk_command(tiny_checkpoint, tmp_path, capsys):
    argv = ["qk", "--layer", "1", "--head", "2", "--weights", str(tiny_checkpoint), "-k", "7", "--chunk-size", "64",
            "--quiet"]
    assert main(argv + ["-o", str(tmp_path)]) == 0
    assert len(read_csv(tmp_path / "qk_layer1_head2.csv")) == 1 + 7
    assert (tmp_path / "qk_layer1_head2.md").exists() and (tmp_path / "qk_layer1_head2.txt").exists()
    assert main(argv + ["--biases", "--query-position", "4", "--key-position", "4", "--vocab-limit", "100"]) == 0
    assert "with biases, query position 4, key position 4, first 100 words" in capsys.readouterr().out
    assert main(["qk", "--layer", "0", "--head", "4", "--weights", str(tiny_checkpoint)]) == 2


@pytest.mark.parametrize("argv", [["embeddings", "-k", "0"], ["probe", "one", "-k", "-2"], ["svd", "--pairs", "0"],
                                  ["qk", "--vocab-limit", "0"]])
def test_counts_below_one_are_usage_errors(tiny_checkpoint, capsys, argv):
    assert main(argv + ["--weights", str(tiny_checkpoint)]) == 2
    assert "must be at least 1, got" in capsys.readouterr().err
