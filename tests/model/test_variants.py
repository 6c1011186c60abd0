"""Every norm variant first-class: the forward pass, its diagnostics, the one unembedding and the analyses on
each built-in variant and on an LN-free checkpoint written by transformers (ε = 1e12, γ·10⁶/σ_s per site).

The oracle is a float64 NumPy GPT-2 written here from the formulas of each variant's own geometry
(`np_site`), and transformers itself on the LN-free file."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from helpers import SMALL, load_hf, random_hf_model, requires, save_official_layout, save_transformers_layout
from minigpt_geom import GPT2, TraceRequest
from minigpt_geom.analysis.circuits import ln_1_embeddings
from minigpt_geom.analysis.drift import text_drift
from minigpt_geom.analysis.embeddings import (distance_note, distance_table, reach_caption, reachability,
                                             sphere_distances)
from minigpt_geom.analysis.lens import angle_note, format_lens, lens_logits, logit_lens
from minigpt_geom.analysis.report import model_summary
from minigpt_geom.analysis.norms import compare_norms
from minigpt_geom.cli import main
from minigpt_geom.errors import InputError
from minigpt_geom.model.lnfree import fix_sigma
from minigpt_geom.training.remove_ln import calibrate_sigma


VARIANTS = ["layernorm", "rmsnorm", "sphere", "dyt", "fixed_sigma", "none"]
MODELS = VARIANTS + ["ln_free"]
CENTRED = {"layernorm", "sphere", "fixed_sigma"}  # the variants that read x − μ·1 (the table of docs/norms.md)
BOUNDED = {"layernorm", "rmsnorm", "sphere", "dyt"}
TOLERANCE = 1e-4


def ids(n: int = 2, T: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, SMALL["vocab_size"], (n, T), generator=torch.Generator().manual_seed(seed))


# ---- the oracle: GPT-2 in float64 NumPy, each site by its own formula -------------------------------------

def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def np_project(name: str, x: np.ndarray, eps: float, scalars: dict[str, float]) -> np.ndarray:
    """The variant's point before γ, β, straight from its formula (docs/norms.md)."""
    mu = x.mean(-1, keepdims=True)
    if name in ("layernorm", "sphere"):
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    if name == "rmsnorm":
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)
    if name == "dyt":
        return np.tanh(scalars["alpha"] * x)
    if name == "fixed_sigma":
        return (x - mu) / scalars["sigma"]
    assert name == "none"
    return x


def np_site(model: GPT2, site: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, output) of a site in float64."""
    module = model.get_submodule(site)
    name = module.variant.name
    scalars = {k: float(getattr(module, k)) for k in module.variant.parameters}
    point = np_project(name, x, module.eps, scalars)
    affine = name not in ("sphere", "none")
    return point, (point * np_(module.weight) + np_(module.bias) if affine else point)


def np_direction(name: str, x: np.ndarray) -> np.ndarray:
    return x - x.mean(-1, keepdims=True) if name in CENTRED else x


def np_forward(model: GPT2, tokens: list[int]) -> dict[str, np.ndarray]:
    """States [L+1, T, d], logits [T, V], each site's point radius [L, T] and the residual angles [L, T]."""
    P = {k: np_(v) for k, v in model.state_dict().items()}
    H, T = model.config.n_head, len(tokens)
    x = P["wte.weight"][tokens] + P["wpe.weight"][:T]
    states, radii, angles = [x], [], []
    for layer in range(model.config.n_layer):
        p = f"h.{layer}."
        point, h = np_site(model, p + "ln_1", x)
        radii.append(np.linalg.norm(point, axis=-1))
        q, k, v = np.split(h @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"], 3, axis=-1)
        q, k, v = (m.reshape(T, H, -1).transpose(1, 0, 2) for m in (q, k, v))  # [H, T, d_h]
        s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        attn = (a @ v).transpose(1, 0, 2).reshape(T, -1) @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"]
        x_mid = x + attn
        _, h = np_site(model, p + "ln_2", x_mid)
        u = h @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"]
        u = 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
        x_next = x_mid + u @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"]
        name = model.get_submodule(p + "ln_1").variant.name
        a_dir, b_dir = np_direction(name, x), np_direction(name, x_next)
        cos = (a_dir * b_dir).sum(-1) / np.linalg.norm(a_dir, axis=-1) / np.linalg.norm(b_dir, axis=-1)
        angles.append(np.arccos(np.clip(cos, -1, 1)))
        x = x_next
        states.append(x)
    _, y = np_site(model, "ln_f", x)
    W = P.get("lm_head.weight", P["wte.weight"])
    logits = y @ W.T + P.get("lm_head.bias", 0.0)
    return dict(states=np.stack(states), logits=logits, radius=np.stack(radii), angle=np.stack(angles))


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# ---- the models: one per built-in variant, and an LN-free file from transformers ---------------------------

@pytest.fixture(scope="module")
def ln_free_folder(tiny_checkpoint, tmp_path_factory):
    """transformers' GPT-2 with layer norm switched off inside, as published: ε = 1e12, γ' = γ·10⁶/σ_s."""
    folder = tmp_path_factory.mktemp("ln_free")
    hf = random_hf_model(seed=5, **SMALL)
    hf.config.layer_norm_epsilon = 1e12
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for module in hf.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = 1e12
                module.weight.mul_(1e6 / (0.5 + torch.rand((), generator=g)))  # σ_s ∈ [0.5, 1.5) per site
    save_transformers_layout(hf, folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tiny_checkpoint / name, folder / name)
    return folder


def build(name: str, tiny_checkpoint, ln_free_folder) -> GPT2:
    if name == "ln_free":
        with pytest.warns(UserWarning, match="switched off"):
            return GPT2.from_pretrained(ln_free_folder)
    model = GPT2.from_pretrained(tiny_checkpoint, norm="layernorm" if name == "fixed_sigma" else name)
    if name == "dyt":
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for site in model.norm_sites().values():
                site.alpha.fill_(0.2 + torch.rand((), generator=g).item())  # α differs from site to site
    if name == "fixed_sigma":
        for site, (sigma, _) in calibrate_sigma(model, [ids(seed=8)]).items():
            fix_sigma(model, site, sigma)
    return model


@pytest.fixture(scope="module", params=MODELS)
def variant(request, tiny_checkpoint):
    """(name, model); the LN-free file is asked for only where it is used (it needs transformers to write)."""
    ln_free = request.getfixturevalue("ln_free_folder") if request.param == "ln_free" else None
    return request.param, build(request.param, tiny_checkpoint, ln_free)


# ---- the forward pass and its diagnostics ----------------------------------------------------------------

@torch.inference_mode()
def test_forward_and_diagnostics_equal_numpy_of_the_variants_own_geometry(variant):
    name, model = variant
    idx = ids()
    logits, trace = model(idx, trace=TraceRequest(states=True))
    for b in range(idx.shape[0]):
        expected = np_forward(model, idx[b].tolist())
        np.testing.assert_allclose(np_(logits[b]), expected["logits"], atol=TOLERANCE, rtol=1e-4)
        np.testing.assert_allclose(np_(trace.ln_1.radius[:, b]), expected["radius"], rtol=1e-4)
        np.testing.assert_allclose(np_(trace.residual.angle[:, b]), expected["angle"], atol=1e-3)
    sites = {model.get_submodule(s).variant.name for s in model.norm_sites()}
    if sites <= {"layernorm", "rmsnorm", "sphere"}:  # on a sphere: the radius is √d, whatever x's length
        assert torch.allclose(trace.ln_1.radius, torch.full_like(trace.ln_1.radius, math.sqrt(48)), rtol=1e-3)
    if sites == {"dyt"}:  # inside the box: every coordinate below 1, so the radius below √d
        assert bool((trace.ln_1.radius < math.sqrt(48)).all())


def test_the_ln_free_file_gives_transformers_logits(ln_free_folder, tiny_checkpoint):
    model = build("ln_free", tiny_checkpoint, ln_free_folder)
    reference = load_hf(ln_free_folder)
    idx = ids()
    with torch.no_grad():
        assert (model(idx) - reference(idx).logits).abs().max() <= TOLERANCE
    assert {s.variant.name for s in model.norm_sites().values()} == {"none"} and not model.lm_head.tied


# ---- the analyses decode through the model's own sites and unembedding ------------------------------------

@torch.inference_mode()
def test_lens_and_drift_at_the_last_layer_are_the_models_own_log_softmax(variant):
    name, model = variant
    idx = ids(1, 24, seed=3)
    logits, trace = model(idx, trace=TraceRequest(states=True))
    own = np_log_softmax(np_(logits[0]))  # [T, V]
    lens_last = np_log_softmax(np_(lens_logits(model, trace.states[-1])[0]))
    np.testing.assert_allclose(lens_last, own, atol=TOLERANCE)
    lens = logit_lens(model, trace, k=3)
    np.testing.assert_allclose(np_(lens.prediction_prob[-1, 0]), np.exp(own.max(-1)), atol=TOLERANCE)
    assert float(lens.kl_to_final[-1].abs().max()) <= TOLERANCE
    tokens = idx[0].tolist()
    drift = text_drift(model, tokens, trace.states)
    T = len(tokens)
    next_logp = own[np.arange(T - 1), tokens[1:]].mean()
    current_logp = own[np.arange(T - 1), tokens[:-1]].mean()
    assert abs(drift.logp_next[-1] - next_logp) <= TOLERANCE
    assert abs(drift.logp_current[-1] - current_logp) <= TOLERANCE
    assert abs(drift.drift[-1] - (next_logp - current_logp)) <= TOLERANCE
    assert (drift.logp_next <= 0).all() and (drift.logp_current <= 0).all()  # log-probabilities at every layer


def test_the_ln_free_files_lens_is_transformers_own(ln_free_folder, tiny_checkpoint):
    model = build("ln_free", tiny_checkpoint, ln_free_folder)
    reference = load_hf(ln_free_folder)
    idx = ids(1, 24, seed=3)
    with torch.no_grad():
        expected = np_log_softmax(np_(reference(idx).logits[0]))
        _, trace = model(idx, trace=TraceRequest(states=True))
        lens_last = np_log_softmax(np_(lens_logits(model, trace.states[-1])[0]))
    np.testing.assert_allclose(lens_last, expected, atol=TOLERANCE)
    drift = text_drift(model, idx[0].tolist(), trace.states)
    tokens = idx[0].tolist()
    assert abs(drift.logp_next[-1] - expected[np.arange(23), tokens[1:]].mean()) <= TOLERANCE


@torch.inference_mode()
def test_norms_reference_row_is_the_model_itself(variant):
    name, model = variant
    idx = ids(1, 24, seed=4)
    rows = compare_norms(model, idx)
    own = rows[0]
    log_p = np_log_softmax(np_(model(idx)[0]))
    perplexity = math.exp(-log_p[np.arange(23), idx[0, 1:].numpy()].mean())
    assert own.variant.startswith("own") and own.kl_from_own == 0 and own.top1_agreement == 1
    assert math.isclose(own.perplexity, perplexity, rel_tol=1e-6)
    for row in rows:  # a number or a reason, never nan
        assert row.problem or all(math.isfinite(v) for v in (row.kl_from_own, row.top1_agreement))


@torch.inference_mode()
def test_e_tilde_is_the_site_module_applied_to_e(variant):
    name, model = variant
    for layer in range(model.config.n_layer):
        E_tilde = ln_1_embeddings(model, layer)
        assert torch.equal(E_tilde, model.h[layer].ln_1(model.wte.weight)[0])
        _, expected = np_site(model, f"h.{layer}.ln_1", np_(model.wte.weight))
        np.testing.assert_allclose(np_(E_tilde), expected, atol=1e-5)


@torch.inference_mode()
def test_reach_uses_the_variants_own_bound_or_says_it_does_not_apply(variant):
    name, model = variant
    measures = reachability(model)
    E, (gamma, beta) = np_(model.unembedding_rows()), (np_(t) for t in model.ln_f.affine_map())
    bias = E @ beta + (np_(model.lm_head.bias) if not model.lm_head.tied else 0)
    a = E * gamma  # the norms of the words still rank them where no bound applies (an LN-free model)
    np.testing.assert_allclose(np_(measures["norm"]), np.linalg.norm(E, axis=1), rtol=1e-5)
    np.testing.assert_allclose(np_(measures["scaled_norm_plus_bias"]), np.linalg.norm(a, axis=1) + bias, rtol=1e-5,
                               atol=1e-5)
    if name not in BOUNDED:
        assert set(measures) == {"norm", "scaled_norm", "norm_plus_bias", "scaled_norm_plus_bias"}
        with pytest.raises(InputError, match="does not apply"):
            sphere_distances(model)
        assert distance_note(model).startswith("(a) does not apply: h.0.ln_1 is ")
        assert "the reach bounds do not apply" in reach_caption(model)
        return
    assert distance_note(model) is None
    support = {"layernorm": math.sqrt(48) * np.linalg.norm(a - a.mean(1, keepdims=True), axis=1),
               "sphere": math.sqrt(48) * np.linalg.norm(a - a.mean(1, keepdims=True), axis=1),
               "rmsnorm": math.sqrt(48) * np.linalg.norm(a, axis=1),
               "dyt": np.abs(a).sum(1)}[name]
    np.testing.assert_allclose(np_(measures["tight_reach_bound"]), support + E @ beta, rtol=1e-5, atol=1e-5)
    x = torch.randn(256, 48, generator=torch.Generator().manual_seed(1)) * 30  # far out: near the set's edge
    logits = model.unembed(model.ln_f(x)[0])
    assert bool((logits <= measures["tight_reach_bound"] + 1e-4).all())


@torch.inference_mode()
def test_the_distance_table_names_the_variants_projection_and_scale(variant):
    """(a) is the distance to the variant's own N(E), "scaled" to the radius of its set: √d on a sphere, the
    projected rows' mean norm on DyT's box (which has no one radius)."""
    name, model = variant
    if name not in BOUNDED:
        return
    rows = sphere_distances(model)
    caption = distance_table(rows).caption
    assert caption.startswith(f"(a) distance to {name}(E), block 0's ln_1") and "layer_norm" not in caption
    E = np_(model.wte.weight)
    target, _ = np_site(model, "h.0.ln_1", E)  # the projection without γ, β, in NumPy
    if name == "dyt":
        radius = np.linalg.norm(target, axis=1).mean()
        assert caption.endswith(f"scaled: to mean norm {radius:.4g}, the mean ‖dyt(e)‖") and "√d" not in caption
    else:
        radius = math.sqrt(48)
        assert caption.endswith("scaled: to mean norm √d")
    scaled = E * radius / np.linalg.norm(E, axis=1).mean()
    [row] = [r for r in rows if r.setting == "scaled"]
    np.testing.assert_allclose(row.l2_mean, np.linalg.norm(scaled - target, axis=1).mean(), rtol=1e-4)


def test_the_labels_of_the_lens_and_the_report_fit_the_variant(variant):
    """The lens footer says how the model's own ln_1 reads the angle; the report's header gives √d only for a
    model with a sphere of that radius (not DyT's box, not an LN-free model)."""
    name, model = variant
    note = angle_note(model)
    assert f"ln_1 ({model.h[0].ln_1.variant.name})" in note
    assert ("along its sphere" in note) == (name in ("layernorm", "rmsnorm", "sphere"))
    assert ("centred" in note) == (name in ("layernorm", "sphere", "fixed_sigma"))
    summary = model_summary(model)
    assert ("√d = 6.928" in summary) == (name in ("layernorm", "rmsnorm", "sphere")), summary  # √48
    lens = logit_lens(model, model(ids(seed=3), trace=TraceRequest(states=True))[1], k=2)
    footer = format_lens(lens, ["a"] * lens.top_ids.shape[2], str, positions=[0], angle=note).splitlines()[-1]
    assert note in footer and "for layer norm" not in footer


def test_embeddings_on_an_ln_free_model_ranks_by_the_norms_that_still_apply(ln_free_folder, capsys, tmp_path):
    assert main(["embeddings", "--weights", str(ln_free_folder), "-o", str(tmp_path / "out"), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "(a) does not apply: h.0.ln_1 is 'none'" in out and "the reach bounds do not apply" in out
    assert "‖e‖" in out and "h(γ⊙e)" not in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "embeddings_reach.csv", "embeddings_reach.md", "embeddings_reach.png", "embeddings_reach.tex",
        "embeddings_reach.txt"]


# ---- round trips and copies ----------------------------------------------------------------------------

@torch.inference_mode()
def test_load_save_load_is_exact(variant, tiny_checkpoint, tmp_path):
    name, model = variant
    idx = ids()
    model.save_pretrained(tmp_path / "saved", tiny_checkpoint)
    again = GPT2.from_pretrained(tmp_path / "saved")
    assert torch.equal(again(idx), model(idx))
    assert [s.variant.name for s in again.norm_sites().values()] == [s.variant.name for s in model.norm_sites().values()]
    again.save_pretrained(tmp_path / "twice", tiny_checkpoint)
    assert torch.equal(GPT2.from_pretrained(tmp_path / "twice")(idx), model(idx))


def test_ln_free_file_loads_from_both_layouts(ln_free_folder, tiny_checkpoint, tmp_path):
    hf = load_hf(ln_free_folder)
    save_official_layout(hf, tmp_path)
    idx = ids()
    with pytest.warns(UserWarning, match="switched off"):
        official = GPT2.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(official(idx), build("ln_free", tiny_checkpoint, ln_free_folder)(idx))


@torch.inference_mode()
def test_with_norm_and_fold_never_change_the_model_they_start_from(variant):
    name, model = variant
    idx = ids()
    before = model(idx)
    model.with_norm("layernorm").fold_ln()
    folded = model.fold_ln()
    assert torch.equal(model(idx), before)  # bit for bit
    assert (folded(idx) - before).abs().max() <= TOLERANCE  # folding keeps the logits
    assert not folded.lm_head.tied and all(
        torch.equal(s.weight, torch.ones_like(s.weight)) for s in folded.norm_sites().values())


@torch.inference_mode()
def test_folded_analyses_see_the_same_attention(tiny_checkpoint):
    """A folded model's heads hold ln_1's γ, β, its Ẽ is the bare projection: the scores are the same."""
    from minigpt_geom.analysis.circuits import attention_update

    model = GPT2.from_pretrained(tiny_checkpoint)
    folded = model.fold_ln()
    x = model.wte.weight[:16][None] + model.wpe.weight[:16]
    for layer in range(model.config.n_layer):
        expected = attention_update(model, layer, model.h[layer].ln_1(x)[0])
        assert (attention_update(folded, layer, folded.h[layer].ln_1(x)[0]) - expected).abs().max() <= 1e-5


def test_a_folded_model_made_ln_free_keeps_its_logits(tiny_checkpoint, tmp_path):
    """fixed σ on a folded (untied) model: the ε = 1e12 format cannot hold its unembedding, so the export is
    the folded norm="none" model, which saves and loads back with the same logits."""
    from minigpt_geom.model.lnfree import ln_free_checkpoint

    model = GPT2.from_pretrained(tiny_checkpoint, fold_ln=True)
    for site, (sigma, _) in calibrate_sigma(model, [ids(seed=9)]).items():
        fix_sigma(model, site, sigma)
    idx = ids()
    with torch.no_grad():
        expected = model(idx)
        ln_free_checkpoint(model).save_pretrained(tmp_path, tiny_checkpoint)
        assert (GPT2.from_pretrained(tmp_path)(idx) - expected).abs().max() <= TOLERANCE


@requires("matplotlib")
def test_drift_figure_names_the_models_own_final_map(variant):
    """The drift is ln_f's map of x_l[t] dotted with e_{t+1} − e_t: its label names that map, not LN_f always."""
    from minigpt_geom.analysis import plots

    name, model = variant
    figure = plots.drift_figure(text_drift(model, ids(1, 12)[0].tolist()))
    label = figure.axes[0].get_ylabel()
    own = model.ln_f.variant.geometry.symbol
    assert (own in label) if own else ("x_l[t]" in label and "mathrm" not in label)
