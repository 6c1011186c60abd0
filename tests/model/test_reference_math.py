"""The math runs: the reference path (explicit scores, mask, softmax and sum; centre -> normalise; GELU's tanh
formula) and the fused kernels give the same logits and every diagnostic, for every built-in norm variant,
traced and untraced, with and without a KV cache. Each path is also checked against its formula in NumPy."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from minigpt_geom import GPT2, InputError, KVCache, TraceRequest, reference_math
from minigpt_geom.model import fused
from minigpt_geom.model.kernels import KERNELS, OVERRIDE, REFERENCE, register_kernels
from minigpt_geom.model.variants import BUILT_IN
from helpers import SMALL, needs

TOLERANCE = 1e-5
FULL = TraceRequest(states=True, patterns=True)
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds contention


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return GPT2.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def idx():
    return torch.randint(0, SMALL["vocab_size"], (2, 32), generator=torch.Generator().manual_seed(7))


def both_paths(run):
    """run() on the fused kernels (a model's default) and on the reference math; the override ends with the block."""
    fast = run()
    with reference_math():
        assert OVERRIDE.get() is REFERENCE
        reference = run()
    assert OVERRIDE.get() is None
    return fast, reference


BOTH = (fused.FUSED, REFERENCE)


def assert_same(fast, reference, what: str) -> None:
    """Logits, or a Trace's every tensor (diagnostics, states, patterns), equal to TOLERANCE."""
    if isinstance(fast, torch.Tensor):
        error = (fast - reference).abs().max().item()
        assert error <= TOLERANCE, f"{what}: {error:.2e}"
        return
    fast_flat, reference_flat = fast.flat(), reference.flat()
    assert fast_flat.keys() == reference_flat.keys()
    for name in fast_flat:
        assert_same(fast_flat[name], reference_flat[name], f"{what} {name}")


@pytest.mark.parametrize("norm", sorted(BUILT_IN))
@pytest.mark.parametrize("trace", [None, True, FULL], ids=["untraced", "summaries", "full"])
@torch.no_grad()
def test_reference_equals_fused_for_every_variant(model, idx, norm, trace, monkeypatch):
    monkeypatch.setattr(fused, "QUERY_BLOCK", 5)  # several query blocks, the last one short (32 = 6·5 + 2)
    variant = model.with_norm(norm)
    fast, reference = both_paths(lambda: variant(idx, trace=trace))
    if trace is None:
        assert_same(fast, reference, norm)
    else:
        assert_same(fast[0], reference[0], f"{norm} logits")
        assert_same(fast[1], reference[1], norm)


@pytest.mark.parametrize("norm", sorted(BUILT_IN))
@pytest.mark.parametrize("trace", [None, FULL], ids=["untraced", "full"])
@torch.no_grad()
def test_reference_equals_fused_with_a_kv_cache(model, idx, norm, trace):
    # Chunks of 9, 1 and 6 new positions: a prompt, one generated token (every key visible) and a chunk that
    # sees the cached keys and part of its own (the general causal mask).
    variant = model.with_norm(norm)

    def run():
        cache = KVCache(model.config.n_layer, model.config.n_ctx)
        return [variant(idx[:, start:stop], trace=trace, cache=cache) for start, stop in ((0, 9), (9, 10), (10, 16))]

    for step, (fast, reference) in enumerate(zip(*both_paths(run))):
        if trace is None:
            assert_same(fast, reference, f"{norm} step {step}")
        else:
            assert_same(fast[0], reference[0], f"{norm} step {step} logits")
            assert_same(fast[1], reference[1], f"{norm} step {step}")


# ---- each path against its formula, in float64 NumPy ------------------------------------------------


def numpy_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(softmax(mask(q kᵀ/√d_head)) v, the pattern) for the last T of S positions."""
    T, S = q.shape[-2], k.shape[-2]
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    scores = np.where(np.arange(S)[None, :] <= np.arange(T)[:, None] + S - T, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights @ v, weights


@pytest.mark.parametrize("T,S", [(7, 7), (1, 7), (3, 7)])
def test_both_attention_paths_equal_numpy(T, S):
    generator = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, 3, n, 8, generator=generator) for n in (T, S, S))
    expected, weights = numpy_attention(q.double().numpy(), k.double().numpy(), v.double().numpy())
    entropy = -(weights * np.log(np.where(weights > 0, weights, 1))).sum(-1)
    for kernels in BOTH:
        untraced = kernels.attend(q, k, v)
        traced, (entropies, max_weight, first), pattern = kernels.attend_traced(q, k, v, True)
        np.testing.assert_allclose(untraced.numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(traced.numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(pattern.numpy(), weights, atol=1e-6)
        np.testing.assert_allclose(entropies.numpy(), entropy, atol=1e-6)
        np.testing.assert_allclose(max_weight.numpy(), weights.max(-1), atol=1e-6)
        np.testing.assert_allclose(first.numpy(), weights[..., 0], atol=1e-6)


def test_both_gelu_paths_equal_the_tanh_formula():
    u = torch.linspace(-8, 8, 1001)
    x = u.double().numpy()
    expected = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    for values in (kernels.gelu(u) for kernels in BOTH):
        np.testing.assert_allclose(values.numpy(), expected, atol=1e-6)


def test_both_layer_norm_paths_centre_then_normalise():
    x = 3 + 2 * torch.randn(4, 5, 48, generator=torch.Generator().manual_seed(0))
    rows = x.double().numpy()
    centred = rows - rows.mean(-1, keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5)
    for point in (kernels.sphere_projection(x, 1e-5) for kernels in BOTH):
        np.testing.assert_allclose(point.numpy(), expected, atol=1e-5)


def test_the_override_ends_after_an_error():
    with pytest.raises(RuntimeError), reference_math():
        raise RuntimeError("inside")
    assert OVERRIDE.get() is None


# ---- chosen per model, thread-safe -------------------------------------------------------------------


@torch.no_grad()
def test_a_models_setting_leaves_other_models_alone(model, idx):
    fast, reference = both_paths(lambda: model(idx))
    assert not torch.equal(fast, reference)  # the two paths round differently: the checks below can tell them apart
    chosen, other = model.with_norm("layernorm"), model.with_norm("layernorm")
    chosen.kernels = "reference"
    assert torch.equal(chosen(idx), reference) and torch.equal(other(idx), fast)
    assert other.kernels == "fused" and model.kernels == "fused"
    assert GPT2(model.config, kernels="reference").kernels == "reference"
    with pytest.raises(InputError, match="unknown kernel set 'fast'; registered: reference, fused"):
        other.kernels = "fast"


@torch.no_grad()
def test_two_threads_on_one_model_do_not_see_each_others_choice(model, idx):
    # One thread runs the model under reference_math(), the other plainly (fused), at the same time and on the
    # same module: each must get its own path's logits bit for bit, every time (a process-wide switch fails this).
    fast, reference = both_paths(lambda: model(idx))
    assert not torch.equal(fast, reference)
    start, results = threading.Barrier(2), {"reference": [], "fused": []}

    def run(name: str) -> None:
        start.wait()
        for _ in range(20):
            if name == "reference":
                with reference_math():
                    results[name].append(model(idx))
            else:
                results[name].append(model(idx))

    threads = [threading.Thread(target=run, args=(name,)) for name in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(logits, reference) for logits in results["reference"])
    assert all(torch.equal(logits, fast) for logits in results["fused"])


@torch.no_grad()
def test_a_registered_kernel_set_runs_where_a_model_names_it(tiny_checkpoint, idx):
    # A set with ReLU in place of GPT-2's tanh GELU: the oracle is transformers' GPT-2 with
    # activation_function="relu" on the same weights; the model's default set and other models keep GELU.
    transformers = needs("transformers")
    register_kernels(fused.Kernels("test_relu", fused.layer_norm, torch.relu, fused.attend,
                                   fused.attend_traced))
    try:
        model = GPT2.from_pretrained(tiny_checkpoint)
        model.kernels = "test_relu"
        relu = transformers.GPT2LMHeadModel.from_pretrained(str(tiny_checkpoint), activation_function="relu",
                                                           attn_implementation="eager").eval()
        assert (model(idx) - relu(idx).logits).abs().max() <= 1e-4
        assert (GPT2.from_pretrained(tiny_checkpoint)(idx) - relu(idx).logits).abs().max() > 1e-2  # GELU ≠ ReLU
        with pytest.raises(InputError, match="'fused' is built in"):
            register_kernels(fused.Kernels("fused", fused.layer_norm, fused.gelu, fused.attend, fused.attend_traced))
        with pytest.raises(TypeError, match="takes a fused.Kernels"):
            register_kernels("test_relu")
    finally:
        KERNELS.pop("test_relu")
