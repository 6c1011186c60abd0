"""Head ablation against TransformerLens hooks on hook_z, and the batched sweep against one pass per head, on every
norm variant."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_patching import VARIANTS, model, tokenizer, variant_model  # noqa: F401  (the fixtures)
from transformer_lens_oracle import bridge

from minigpt_geom.analysis.ablation import ablate_heads, ablation_matrix, ablation_rows, text_ablation
from minigpt_geom.analysis.metric import Contrast
from minigpt_geom.errors import InputError
from minigpt_geom.model.edits import Ablate
from minigpt_geom.model.trace_request import TraceRequest

TEXT = torch.tensor([[5, 17, 42, 99, 7, 250, 31]])
REFERENCE = torch.tensor([[8, 1, 42, 77, 7, 9, 30], [60, 61, 62, 63, 64, 65, 66], [3, 17, 4, 99, 70, 25, 31]])


def loss(logits: torch.Tensor) -> float:
    """The mean next-token cross-entropy of TEXT, computed here from logits [1, T, V]."""
    return float(F.cross_entropy(logits[0, :-1].float(), TEXT[0, 1:]))


@pytest.mark.slow
def test_zero_and_mean_ablation_match_transformer_lens_hooks_on_hook_z(small_checkpoints, model):  # noqa: F811
    lens = bridge(small_checkpoints["transformers"])
    _, cache = lens.run_with_cache(REFERENCE)
    L, H = model.config.n_layer, model.config.n_head
    for method in ("zero", "mean"):
        expected = torch.empty(L, H)
        for layer in range(L):
            for head in range(H):
                mean = cache[f"blocks.{layer}.attn.hook_z"].mean(dim=0)  # [T, H, d_head], per position

                def hook(z, hook, head=head, mean=mean):
                    z = z.clone()
                    z[:, :, head] = 0.0 if method == "zero" else mean[:, head]
                    return z

                with torch.no_grad():
                    logits = lens.run_with_hooks(TEXT, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
                expected[layer, head] = loss(logits)
        values, baseline, _ = ablate_heads(model, TEXT, method=method, reference=REFERENCE, rows=5)
        assert torch.allclose(values, expected, atol=1e-5, rtol=0), method
        with torch.no_grad():
            assert baseline == pytest.approx(loss(lens(TEXT)), abs=1e-5)
        assert (values - baseline).abs().max() > 1e-4  # the heads matter: the comparison is not of constants


@torch.no_grad()
def one_pass_per_head(model, method: str, contrast: Contrast | None) -> torch.Tensor:
    """One forward pass per head, each with a single Ablate edit on one row."""
    _, source = model(REFERENCE, trace=TraceRequest(capture=("head_out",)))
    values = torch.empty(model.config.n_layer, model.config.n_head)
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            edit = Ablate("head_out", layer=layer, head=head, how=method, reference=None if method == "zero" else source)
            logits = model(TEXT, edits=[edit])
            values[layer, head] = (loss(logits) if contrast is None else contrast.measure(logits[0, -1]))
    return values


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_ablation_gives_one_pass_per_head_on_every_variant(model, variant):  # noqa: F811
    edited = variant_model(model, variant)
    # the loss and both kinds of ablation on layer norm; elsewhere one each, the logit difference of zero-ablation
    cases = [("zero", None), ("mean", Contrast(3, 4))] if variant == "layernorm" else [("zero", Contrast(3, 4))]
    for method, contrast in cases:
        expected = one_pass_per_head(edited, method, contrast)
        for rows in (3, None):  # chunks that split a layer, then every head in one pass
            values, _, passes = ablate_heads(edited, TEXT, method=method, reference=REFERENCE, contrast=contrast,
                                             rows=rows)
            assert torch.allclose(values, expected, atol=1e-5, rtol=0), (method, rows)
    assert passes == (2 if method == "mean" else 1)  # (the reference run), then every head and the text in one batch


def test_resample_reads_one_drawn_reference_row_per_head_whatever_the_batch_size(model):  # noqa: F811
    one_row = REFERENCE[1:2]  # a single reference text: resampling from it is patching from it
    with torch.no_grad():
        expected, *_ = ablate_heads(model, TEXT, method="mean", reference=one_row)  # its mean is itself
    values = [ablate_heads(model, TEXT, method="resample", reference=one_row, rows=rows)[0] for rows in (1, 4, None)]
    assert all(torch.allclose(v, expected, atol=1e-5, rtol=0) for v in values)
    drawn = [ablate_heads(model, TEXT, method="resample", reference=REFERENCE, seed=7, rows=rows)[0]
             for rows in (2, None)]
    assert torch.allclose(drawn[0], drawn[1], atol=1e-6, rtol=0)


def test_ablation_refuses_what_it_cannot_do(tokenizer, model):  # noqa: F811
    with pytest.raises(InputError, match="reads the heads' outputs on reference texts"):
        ablate_heads(model, TEXT, method="mean")
    with pytest.raises(InputError, match="tokens long"):
        ablate_heads(model, TEXT, method="mean", reference=REFERENCE[:, :5])
    with pytest.raises(InputError, match="resampling the text from itself"):
        ablate_heads(model, TEXT, method="resample", reference=TEXT)
    with pytest.raises(InputError, match="ablation must be one of"):
        ablate_heads(model, TEXT, method="shuffle")
    with pytest.raises(InputError, match="tokens long"):
        text_ablation(model, tokenizer, "The cat sat on the mat.", method="mean", reference=["The cat sat."])
    result = text_ablation(model, tokenizer, "The cat sat on the mat.", method="zero", answer=" the", rows_per_pass=3)
    assert result.metric == "logit_diff" and result.answer_word == " the" and result.wrong_word != " the"
    assert len(ablation_rows(result)) == model.config.n_layer * model.config.n_head
    assert len(ablation_matrix(result).rows) == model.config.n_layer
