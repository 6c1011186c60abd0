"""Logits and every residual state match Hugging Face `transformers` on random checkpoints."""

from __future__ import annotations

import pytest
import torch
from minigpt_geom.model.trace import TraceRequest

from minigpt_geom import GPT2
from helpers import SMALL, needs, random_hf_model, save_official_layout

needs("transformers")  # every test here compares with it

TOLERANCE = 1e-4


@torch.no_grad()
def compare_with_hf(model: GPT2, hf_model, idx: torch.Tensor) -> dict[str, float]:
    """Worst |Δ| of logits and of each residual state x_0 … x_L against transformers."""
    reference = hf_model(idx, output_hidden_states=True)
    logits, trace = model(idx, trace=TraceRequest(states=True))
    hidden = reference.hidden_states  # x_0 … x_{L-1}, then LN_f(x_L): transformers applies ln_f to the last
    worst = {"logits": (logits - reference.logits).abs().max().item()}
    for layer in range(model.config.n_layer):
        worst[f"x_{layer}"] = (trace.states[layer] - hidden[layer]).abs().max().item()
    last, _ = model.ln_f(trace.states[-1])
    worst["ln_f(x_L)"] = (last - hidden[-1]).abs().max().item()
    return worst


def assert_close(worst: dict[str, float]) -> None:
    name, value = max(worst.items(), key=lambda kv: kv[1])
    print(f"worst |Δ| = {value:.2e} at {name}")
    assert value <= TOLERANCE, worst


@pytest.mark.parametrize("layout", ["official", "transformers"])
@pytest.mark.parametrize("as_file", [False, True], ids=["directory", "file"])
def test_small_model_matches_transformers(small_hf, small_checkpoints, layout, as_file):
    folder = small_checkpoints[layout]
    model = GPT2.from_pretrained(folder / "model.safetensors" if as_file else folder)
    assert model.config.n_head == 4 and model.config.head_dim == 12  # head count read from config.json
    idx = torch.randint(0, SMALL["vocab_size"], (3, 32), generator=torch.Generator().manual_seed(0))
    assert_close(compare_with_hf(model, small_hf, idx))


def test_last_only_logits_are_transformers_last_row(small_hf, tiny_checkpoint):
    model = GPT2.from_pretrained(tiny_checkpoint)
    idx = torch.randint(0, SMALL["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        last = model(idx, last_only=True)
        expected = small_hf(idx).logits[:, -1:]
    assert last.shape == (2, 1, SMALL["vocab_size"]) and (last - expected).abs().max().item() <= TOLERANCE


def test_bare_file_infers_heads_from_width(tmp_path):
    hf_model = random_hf_model(seed=3, n_layer=1, n_head=2, n_embd=128, n_positions=16, vocab_size=50)
    path = save_official_layout(hf_model, tmp_path, with_config=False)
    model = GPT2.from_pretrained(path)
    assert model.config.n_head == 2  # n_embd / 64
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    assert_close(compare_with_hf(model, hf_model, idx))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["official", "transformers"])
@pytest.mark.parametrize("as_file", [False, True], ids=["directory", "file"])
def test_124m_shape_matches_transformers(full_hf, full_checkpoints, layout, as_file):
    folder = full_checkpoints[layout]
    model = GPT2.from_pretrained(folder / "model.safetensors" if as_file else folder)
    assert model.config == GPT2.from_pretrained(folder).config
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (12, 12, 768)
    idx = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(0))
    assert_close(compare_with_hf(model, full_hf, idx))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_half_precision_matches_transformers(tmp_path, dtype, tolerance):
    # GPT-2's residual stream has norms in the thousands at position 0: ‖x‖² overflows float16 (max 65504)
    # unless the layer-norm statistics are taken in float32, as torch's own layer_norm does.
    hf_model = random_hf_model(seed=6, n_layer=2, n_head=4, n_embd=64, n_positions=16, vocab_size=50)
    with torch.no_grad():
        hf_model.transformer.wpe.weight[0] *= 500  # ‖x_0‖ ≈ 0.1·500·√64 = 400
    save_official_layout(hf_model, tmp_path)
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    ours = GPT2.from_pretrained(tmp_path, dtype=dtype)
    theirs = hf_model.to(dtype)
    with torch.no_grad():
        _, trace = ours(idx, trace=True)
        difference = (ours(idx).float() - theirs(idx).logits.float()).abs().max().item()
    assert trace.ln_1.input_norm[0, :, 0].min() > 256  # the case that overflowed
    assert torch.allclose(trace.ln_1.radius.float(), torch.full_like(trace.ln_1.radius.float(), 8.0), rtol=1e-2)
    print(f"{dtype}: worst |Δlogits| = {difference:.2e}")
    assert difference <= tolerance
