"""Logits and every residual state match Hugging Face `transformers` on random checkpoints."""

from __future__ import annotations

import pytest
import torch

from minigpt_geom import GPT2

TOLERANCE = 1e-4


@torch.no_grad()
def compare_with_hf(model: GPT2, hf_model, idx: torch.Tensor) -> dict[str, float]:
    """Worst |Δ| of logits and of each residual state x_0 … x_L against transformers."""
    reference = hf_model(idx, output_hidden_states=True)
    logits, trace = model(idx, keep_states=True)
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
    idx = torch.randint(0, 101, (3, 32), generator=torch.Generator().manual_seed(0))
    assert_close(compare_with_hf(model, small_hf, idx))


def test_bare_file_infers_heads_from_width(tmp_path):
    from conftest import random_hf_model, save_official_layout

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
