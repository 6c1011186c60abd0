"""The trace's geometry against independent computations: NumPy on the kept states, transformers' attentions."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from minigpt_geom.model.trace import TraceRequest
import torch.nn.functional as F

from minigpt_geom import GPT2, NORM_VARIANTS, Trace, register_norm
from minigpt_geom.errors import MissingDependencyError
from minigpt_geom.model.sphere import centre
from helpers import SMALL, needs


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return GPT2.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def idx():
    return torch.randint(0, SMALL["vocab_size"], (2, 32), generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def traced(model, idx):
    with torch.no_grad():
        return model(idx, trace=TraceRequest(states=True, patterns=True))


def test_traced_attention_equals_the_fused_path(model, idx, traced):
    # Tracing computes attention once from the explicit pattern (a @ v); untraced, the fused SDPA kernel.
    # The two differ only by float32 rounding: every residual state and the logits agree to 1e-6.
    with torch.no_grad():
        untraced = model(idx)
        logits, trace = model(idx, trace=True)
        x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1]))
        for layer, block in enumerate(model.h):  # the untraced residual states, block by block
            assert (x - traced[1].states[layer]).abs().max() <= 1e-6, layer
            x, _ = block(x)
    assert (untraced - traced[0]).abs().max() <= 1e-6
    assert torch.equal(logits, traced[0]) and trace.states is None and trace.attention.pattern is None


def test_sphere_radius_and_hyperplane(model, traced):
    _, trace = traced
    d, eps = model.config.n_embd, model.config.ln_eps
    states = trace.states.double().numpy()
    # radius = √d·σ/√(σ² + ε): √d exactly but for ε (which matters here: these random states have σ² ≈ 0.02)
    variance = states.var(-1)
    np.testing.assert_allclose(trace.ln_1.radius.numpy(), math.sqrt(d) * np.sqrt(variance[:-1] / (variance[:-1] + eps)),
                               rtol=1e-5)
    for site in (trace.ln_1, trace.ln_2, trace.ln_f):
        assert torch.allclose(site.radius, torch.full_like(site.radius, math.sqrt(d)), rtol=1e-3, atol=0)


def test_sphere_radius_is_sqrt_d_without_epsilon(tiny_checkpoint, idx):
    model = GPT2.from_pretrained(tiny_checkpoint)
    for module in model.modules():
        if hasattr(module, "eps"):
            module.eps = 0.0
    with torch.no_grad():
        _, trace = model(idx, trace=True)
    for site in (trace.ln_1, trace.ln_2, trace.ln_f):
        assert torch.allclose(site.radius, torch.full_like(site.radius, math.sqrt(48)), rtol=1e-5, atol=0)


def test_centred_states_lie_in_the_hyperplane(model, traced):
    _, trace = traced
    d = model.config.n_embd
    states = trace.states.double().numpy()
    centred = centre(trace.states).double().numpy()
    # the centred point lies in H: orthogonal to 1 (relative to its own length)
    assert np.abs(centred.sum(-1)).max() <= 1e-5 * np.linalg.norm(centred, axis=-1).max()
    np.testing.assert_allclose(trace.ln_1.input_norm.numpy(), np.linalg.norm(states[:-1], axis=-1), rtol=1e-5)
    np.testing.assert_allclose(trace.ln_f.input_norm.numpy(), np.linalg.norm(states[-1], axis=-1), rtol=1e-5)
    np.testing.assert_allclose(trace.ln_1.mean_component.numpy(), states[:-1].sum(-1) / math.sqrt(d), rtol=1e-4,
                               atol=1e-5)


def test_layer_norm_output_norm_matches_numpy(model, traced):
    _, trace = traced
    for layer, block in enumerate(model.h):
        x = trace.states[layer].double().numpy()
        gamma, beta = block.ln_1.weight.double().detach().numpy(), block.ln_1.bias.double().detach().numpy()
        y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + model.config.ln_eps) * gamma + beta
        np.testing.assert_allclose(trace.ln_1.output_norm[layer].numpy(), np.linalg.norm(y, axis=-1), rtol=1e-5)


def test_attention_pattern_matches_transformers(small_hf, idx, traced):
    _, trace = traced
    with torch.no_grad():
        reference = small_hf(idx, output_attentions=True).attentions  # L × [B, H, T, T], eager attention
    worst = max((trace.attention.pattern[l] - reference[l]).abs().max().item() for l in range(len(reference)))
    assert worst <= 1e-6


def test_attention_diagnostics_equal_recomputation_from_pattern(traced):
    _, trace = traced
    a = trace.attention.pattern.double().numpy()  # [L, B, H, T, T]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(a > 0, a * np.log(a), 0.0).sum(-1)
    np.testing.assert_allclose(trace.attention.entropy.numpy(), entropy, atol=1e-5)
    np.testing.assert_allclose(trace.attention.max_weight.numpy(), a.max(-1), atol=1e-7)
    np.testing.assert_allclose(trace.attention.first_token_weight.numpy(), a[..., 0], atol=1e-7)
    assert np.allclose(trace.attention.entropy[:, :, :, 0].numpy(), 0, atol=1e-6)  # the first query sees one key


def test_attention_diagnostics_in_query_blocks(model, idx, traced, monkeypatch):
    # T = 32 spans several blocks of 5 queries: the blockwise, causally truncated summaries must equal the
    # whole-pattern ones, with and without keeping the pattern.
    monkeypatch.setattr("minigpt_geom.model.fused.QUERY_BLOCK", 5)
    with torch.no_grad():
        logits, kept = model(idx, trace=TraceRequest(patterns=True))
        _, summarised = model(idx, trace=True)
    assert (logits - traced[0]).abs().max() <= 1e-6
    for name in ("entropy", "max_weight", "first_token_weight", "pattern"):
        assert torch.allclose(getattr(kept.attention, name), getattr(traced[1].attention, name), atol=1e-6), name
    for name in ("entropy", "max_weight", "first_token_weight"):
        assert torch.equal(getattr(summarised.attention, name), getattr(kept.attention, name)), name


def test_residual_diagnostics_equal_norms_of_kept_states(model, traced):
    _, trace = traced
    x = trace.states.double().numpy()
    np.testing.assert_allclose(trace.residual.residual_norm.numpy(), np.linalg.norm(x[:-1], axis=-1), rtol=1e-5)
    c = x - x.mean(-1, keepdims=True)
    cosine = (c[:-1] * c[1:]).sum(-1) / (np.linalg.norm(c[:-1], axis=-1) * np.linalg.norm(c[1:], axis=-1))
    np.testing.assert_allclose(trace.residual.cosine.numpy(), cosine, atol=1e-5)
    np.testing.assert_allclose(trace.angular_path.numpy(), np.cumsum(np.arccos(np.clip(cosine, -1, 1)), 0), atol=1e-3)
    # the two updates add up to the step between consecutive states
    for layer, block in enumerate(model.h):
        with torch.no_grad():
            update = block.attn(block.ln_1(trace.states[layer])[0])[0]
        np.testing.assert_allclose(trace.residual.attention_update_norm[layer].numpy(),
                                   np.linalg.norm(update.double().numpy(), axis=-1), rtol=1e-5)
        mlp = x[layer + 1] - x[layer] - update.double().numpy()
        np.testing.assert_allclose(trace.residual.mlp_update_norm[layer].numpy(), np.linalg.norm(mlp, axis=-1),
                                   rtol=1e-4, atol=1e-5)


def test_trace_indexing_saving_and_table(traced, tmp_path):
    _, trace = traced
    head = trace.head(1, 2)
    assert torch.equal(head.entropy, trace.attention.entropy[1, :, 2]) and head.pattern.shape == (2, 32, 32)
    assert torch.equal(trace.layer(0).residual.angle, trace.residual.angle[0])
    assert trace.to(torch.float64).ln_f.radius.dtype == torch.float64
    for suffix in (".safetensors", ".npz"):
        trace.save(tmp_path / f"trace{suffix}")
        loaded = Trace.load(tmp_path / f"trace{suffix}")
        for name, value in trace.flat().items():
            assert torch.equal(loaded.flat()[name], value), name
    table = trace.to_table()
    L, B, H, T = trace.attention.entropy.shape
    rows = (table["metric"] == "attention.entropy") & (table["layer"] == 1) & (table["head"] == 2) & (table["batch"] == 1)
    assert np.array_equal(table["position"][rows], np.arange(T))
    assert np.array_equal(table["value"][rows], trace.attention.entropy[1, 1, 2].numpy())
    ln_f = (table["metric"] == "ln_f.radius")
    assert (table["layer"][ln_f] == L).all() and ln_f.sum() == B * T
    needs("pandas")  # the rest: the same columns as a pandas DataFrame
    frame = trace.to_dataframe()
    assert list(frame.columns) == list(table) and len(frame) == len(table["value"])
    for name, column in table.items():
        assert np.array_equal(frame[name].to_numpy(), column), name
    with pytest.raises(ValueError, match="end in .safetensors or .npz"):
        trace.save(tmp_path / "trace.pt")


def test_to_dataframe_without_pandas_names_the_install(traced, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(MissingDependencyError, match=r"^Trace.to_dataframe\(\) needs pandas: pip install pandas$"):
        traced[1].to_dataframe()


def test_fold_ln_gives_the_same_logits(tiny_checkpoint, idx):
    plain = GPT2.from_pretrained(tiny_checkpoint)
    folded = GPT2.from_pretrained(tiny_checkpoint, fold_ln=True)
    with torch.no_grad():
        difference = (plain(idx) - folded(idx)).abs().max().item()
        _, trace = folded(idx, trace=True)
    assert difference <= 1e-4
    # blocks now read exact sphere points: the norm after the (absent) affine map is the radius
    assert torch.equal(trace.ln_1.output_norm, trace.ln_1.radius)


@pytest.mark.slow
def test_fold_ln_124m_shape(full_checkpoints):
    idx = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(0))
    plain = GPT2.from_pretrained(full_checkpoints["official"])
    with torch.no_grad():
        expected = plain(idx)
        assert (plain.fold_ln()(idx) - expected).abs().max().item() <= 1e-4


def test_user_variant_registers_and_runs_end_to_end(small_hf, tiny_checkpoint, idx):
    # A variant written with torch's own layer norm must reproduce GPT-2, i.e. transformers' logits.
    register_norm("torch_layer_norm", lambda x, eps: F.layer_norm(x, x.shape[-1:], eps=eps))
    try:
        model = GPT2.from_pretrained(tiny_checkpoint, norm="torch_layer_norm")
        assert all(block.ln_1.variant.name == "torch_layer_norm" for block in model.h)
        with torch.no_grad():
            assert (model(idx) - small_hf(idx).logits).abs().max().item() <= 1e-4
            _, trace = model(idx, trace=True)
        assert torch.allclose(trace.ln_f.radius, torch.full_like(trace.ln_f.radius, math.sqrt(48)), rtol=1e-3)
    finally:
        NORM_VARIANTS.pop("torch_layer_norm")


def test_builtin_variants_against_torch(tiny_checkpoint):
    x = torch.randn(3, 5, 48) * 4 + 1
    model = GPT2.from_pretrained(tiny_checkpoint, norm={"ln_1": "rmsnorm", "h.1.ln_2": "none",
                                                                      "ln_f": "sphere"})
    site = model.h[0].ln_1
    expected = F.rms_norm(x, (48,), eps=site.eps) * site.weight + site.bias
    assert torch.allclose(site(x)[0], expected, atol=1e-5)
    assert torch.equal(model.h[1].ln_2(x)[0], x) and model.h[0].ln_2.variant.name == "layernorm"
    assert torch.allclose(model.ln_f(x)[0], F.layer_norm(x, (48,), eps=site.eps), atol=1e-5)
    with pytest.raises(ValueError, match="unknown norm variant 'batchnorm'"):
        model.set_norm("batchnorm")


@pytest.mark.slow
def test_trace_load_checks_the_file_before_reading_it(traced, tmp_path):
    """Crafted trace files: each refused with an InputError naming the problem, before its data is read."""
    import zipfile

    from minigpt_geom import InputError

    _, trace = traced
    tensors = {k: v.numpy() for k, v in trace.flat().items()}
    cases = {
        "missing": ({k: v for k, v in tensors.items() if k != "ln_2.radius"}, "missing \\['ln_2.radius'\\]"),
        "unknown": ({**tensors, "extra": np.zeros(3, np.float32)}, "unknown \\['extra'\\]"),
        "shape": ({**tensors, "ln_1.radius": tensors["ln_1.radius"][:, :, :-1]}, "ln_1.radius has shape"),
        "dtype": ({**tensors, "ln_1.radius": tensors["ln_1.radius"].astype(np.int64)}, "dtype int64"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(InputError, match=message):
            Trace.load(tmp_path / f"{name}.npz")
    # a few KB of zeros that would expand to 2 GiB: refused from the headers, under the default 1 GiB limit
    L, B, H, T = trace.attention.entropy.shape
    big = {**tensors, "states": np.zeros((L + 1, B, T, 2**30 // (4 * (L + 1) * B * T) * 2), np.float32)}
    np.savez_compressed(tmp_path / "bomb.npz", **big)
    assert (tmp_path / "bomb.npz").stat().st_size < 10 * 2**20
    with pytest.raises(InputError, match="more than max_bytes"):
        Trace.load(tmp_path / "bomb.npz")
    # a member whose bytes disagree with its own .npy header: the data cut short
    import io

    np.savez(tmp_path / "lying.npz", **{k: v for k, v in tensors.items() if k != "ln_1.radius"})
    member = io.BytesIO()
    np.lib.format.write_array(member, tensors["ln_1.radius"])
    with zipfile.ZipFile(tmp_path / "lying.npz", "a") as archive:
        archive.writestr("ln_1.radius.npy", member.getvalue()[:-8])
    with pytest.raises(InputError, match="ln_1.radius holds .* bytes, not what its header declares"):
        Trace.load(tmp_path / "lying.npz")
