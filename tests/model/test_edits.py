"""Edits as data (model/edits.py): patching, ablation, steering, rotation and a frozen scale, checked against
independent oracles: TransformerLens 4.x's patching helpers and hooks on the same random checkpoint (the `lens`
extra; those tests are skipped by name without it), NumPy for the rotation and the frozen-scale attribution.
Every site kind, edited, changes the logits; every bad edit is one InputError naming its field; the reference
math and the fused kernels apply every edit alike, on every norm variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minigpt_geom import GPT2, InputError, KVCache, Sampling, TraceRequest, generate, reference_math
from minigpt_geom.model.edits import SITES, Ablate, Add, FreezeScale, Rotate, Scale, Set
from minigpt_geom.model.variants import BUILT_IN

TOLERANCE = 1e-5
pytestmark = pytest.mark.usefixtures("one_thread")
L, H, T, D = 2, 4, 8, 48  # the small checkpoint's layers, heads and width (helpers.SMALL); T positions used here


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return GPT2.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def prompts():
    generator = torch.Generator().manual_seed(11)
    clean, corrupt = (torch.randint(0, 101, (1, T), generator=generator) for _ in range(2))
    return clean, corrupt


ANSWER, WRONG = 7, 42


def logit_difference(logits: torch.Tensor) -> torch.Tensor:
    """logit(answer) − logit(wrong) at the last position, per row."""
    return logits[:, -1, ANSWER] - logits[:, -1, WRONG]


# ---- TransformerLens as the oracle ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lens(small_checkpoints):
    """TransformerLens's bridge on the same files, weights copied (the bridge rewrites the module it is given),
    in compatibility mode with no processing (no folding or centring: the weights as they are)."""
    pytest.importorskip("transformer_lens", reason="transformer-lens 4.x (the `lens` extra) is not installed")
    import transformers
    from transformer_lens.model_bridge import TransformerBridge

    folder = str(small_checkpoints["transformers"])
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    bridge = TransformerBridge.boot_transformers(folder, hf_model=hf, device="cpu")
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    return bridge


def lens_metric(logits: torch.Tensor) -> torch.Tensor:
    return logit_difference(logits).mean()


@pytest.mark.slow  # booting TransformerLens takes about 10 s
@torch.no_grad()
def test_lens_and_model_agree_unedited(model, lens, prompts):
    clean, _ = prompts
    assert (lens(clean) - model(clean)).abs().max() <= TOLERANCE


@pytest.mark.slow  # booting TransformerLens takes about 10 s
@torch.no_grad()
def test_residual_patching_sweep_equals_lens(model, lens, prompts):
    # TransformerLens runs one forward pass per (layer, position); here all L·T patched copies run as one batch,
    # one Set per layer naming its T copies and T positions (copy T·l + p patches position p at layer l).
    from transformer_lens import patching

    clean, corrupt = prompts
    _, clean_cache = lens.run_with_cache(clean)
    expected = patching.get_act_patch_resid_pre(lens, corrupt, clean_cache, lens_metric)  # [L, T]
    _, clean_trace = model(clean, trace=TraceRequest(capture=("resid_pre",)))
    copies = torch.arange(L * T).view(L, T)
    edits = [Set("resid_pre", layer=l, rows=copies[l], positions=torch.arange(T), source=clean_trace)
             for l in range(L)]
    patched = logit_difference(model(corrupt.expand(L * T, -1), edits=edits)).view(L, T)
    assert expected.shape == patched.shape and (expected - patched).abs().max() <= TOLERANCE
    assert expected.std() > 0.01  # the patches do move the metric


@pytest.mark.slow  # booting TransformerLens takes about 10 s
@torch.no_grad()
def test_head_output_patching_equals_lens(model, lens, prompts):
    # every head at every position: L·T·H copies, one Set per layer pairing rows, positions and heads
    from transformer_lens import patching

    clean, corrupt = prompts
    _, clean_cache = lens.run_with_cache(clean)
    by_position = patching.get_act_patch_attn_head_out_by_pos(lens, corrupt, clean_cache, lens_metric)  # [L, T, H]
    all_positions = patching.get_act_patch_attn_head_out_all_pos(lens, corrupt, clean_cache, lens_metric)  # [L, H]
    _, clean_trace = model(clean, trace=TraceRequest(capture=("head_out",)))
    positions, heads = torch.arange(T).repeat_interleave(H), torch.arange(H).repeat(T)
    copies = torch.arange(L * T * H).view(L, T * H)
    edits = [Set("head_out", layer=l, rows=copies[l], positions=positions, head=heads, source=clean_trace)
             for l in range(L)]
    patched = logit_difference(model(corrupt.expand(L * T * H, -1), edits=edits)).view(L, T, H)
    assert (by_position - patched).abs().max() <= TOLERANCE
    copies = torch.arange(L * H).view(L, H)  # all positions of one head: rows paired with heads
    edits = [Set("head_out", layer=l, rows=copies[l], head=torch.arange(H), source=clean_trace) for l in range(L)]
    patched = logit_difference(model(corrupt.expand(L * H, -1), edits=edits)).view(L, H)
    assert (all_positions - patched).abs().max() <= TOLERANCE


@pytest.mark.slow  # booting TransformerLens takes about 10 s
@torch.no_grad()
def test_zero_ablating_a_head_equals_a_hook_on_hook_z(model, lens, prompts):
    clean, _ = prompts

    def zero_head(z, hook):
        z[:, :, 2] = 0.0
        return z

    expected = lens.run_with_hooks(clean, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)])
    edited = model(clean, edits=[Ablate("head_out", layer=1, head=2)])
    assert (expected - edited).abs().max() <= TOLERANCE
    assert (edited - model(clean)).abs().max() > 1e-3


@pytest.mark.slow  # booting TransformerLens takes about 10 s
@torch.no_grad()
def test_steering_equals_an_additive_hook_on_resid_pre(model, lens, prompts):
    clean, _ = prompts
    vector = torch.randn(D, generator=torch.Generator().manual_seed(3))

    def add(x, hook):
        return x + 3.0 * vector

    expected = lens.run_with_hooks(clean, fwd_hooks=[("blocks.1.hook_resid_pre", add)])
    edited = model(clean, edits=[Add("resid_pre", layer=1, vector=vector, coefficient=3.0)])
    assert (expected - edited).abs().max() <= TOLERANCE
    assert (edited - model(clean)).abs().max() > 1e-3


# Each site and the TransformerLens hook that sees the same value (patterns [B, H, T, S] there, [B, T, H, S] here).
LENS_HOOKS = {"resid_pre": "blocks.{l}.hook_resid_pre", "ln_1": "blocks.{l}.ln1.hook_normalized",
              "pattern": "blocks.{l}.attn.hook_pattern", "head_out": "blocks.{l}.attn.hook_z",
              "attn_out": "blocks.{l}.hook_attn_out", "resid_mid": "blocks.{l}.hook_resid_mid",
              "ln_2": "blocks.{l}.ln2.hook_normalized", "mlp_out": "blocks.{l}.hook_mlp_out",
              "resid_post": "blocks.{l}.hook_resid_post", "ln_f": "ln_final.hook_normalized"}


@pytest.mark.slow  # booting TransformerLens takes about 10 s
@pytest.mark.slow  # booting TransformerLens takes about 10 s
@pytest.mark.parametrize("site", sorted(LENS_HOOKS))
@torch.no_grad()
def test_scaling_a_site_at_one_position_equals_a_hook(model, lens, prompts, site):
    clean, _ = prompts
    layer = None if site == "ln_f" else 1

    def scale(value, hook):
        value = value.clone()
        if site == "pattern":
            value[:, :, 5] *= 0.5  # [B, H, T, S]: query 5
        else:
            value[:, 5] *= 0.5
        return value

    hooks = [(LENS_HOOKS[site].format(l=layer), scale)]
    if site == "resid_mid":  # the bridge's hook_resid_mid is ln2's input hook: the residual stream itself goes on
        kept = {}  # unedited, so a second hook carries the change on into resid_post (x_mid' + mlp_out')

        def remember(value, hook):
            kept["change"] = scale(value, hook) - value
            return value + kept["change"]

        def carry(value, hook):
            return value + kept["change"]

        hooks = [(LENS_HOOKS[site].format(l=layer), remember), (f"blocks.{layer}.hook_resid_post", carry)]
    expected = lens.run_with_hooks(clean, fwd_hooks=hooks)
    edited = model(clean, edits=[Scale(site, layer=layer, positions=5, factor=0.5)])
    assert (expected - edited).abs().max() <= TOLERANCE


# ---- NumPy oracles: rotation on the sphere, the frozen scale's attribution --------------------------------


def numpy_rotation(p: np.ndarray, u: np.ndarray, angle: float) -> np.ndarray:
    """p turned by angle toward u in their plane, ‖p‖ kept (float64 rows)."""
    p_hat = p / np.linalg.norm(p, axis=-1, keepdims=True)
    u_perp = u - (u * p_hat).sum(-1, keepdims=True) * p_hat
    u_perp /= np.linalg.norm(u_perp, axis=-1, keepdims=True)
    return np.linalg.norm(p, axis=-1, keepdims=True) * (math.cos(angle) * p_hat + math.sin(angle) * u_perp)


@torch.no_grad()
def test_rotating_ln_f_points_toward_a_vector_equals_numpy(model, prompts):
    clean, _ = prompts
    toward = torch.randn(D, generator=torch.Generator().manual_seed(5))
    _, trace = model(clean, trace=TraceRequest(capture=("ln_f",)))
    logits = model(clean, edits=[Rotate("ln_f", positions=[3, 6], angle=0.7, toward=toward)])
    p = trace.captured["ln_f"][0, [3, 6]].double().numpy()
    u = toward.double().numpy()
    rotated = numpy_rotation(p, u - u.mean(), 0.7)  # layer norm's direction of u: its part in Σx = 0
    gamma, beta = model.ln_f.weight.double().numpy(), model.ln_f.bias.double().numpy()
    expected = (gamma * rotated + beta) @ model.wte.weight.double().numpy().T
    assert np.abs(logits[0, [3, 6]].double().numpy() - expected).max() <= TOLERANCE
    assert np.allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(p, axis=-1), rtol=1e-12)  # same sphere
    untouched = [i for i in range(T) if i not in (3, 6)]
    assert torch.equal(logits[0, untouched], model(clean)[0, untouched])


@torch.no_grad()
def test_rotating_a_point_toward_another_words_point_equals_numpy(model, prompts):
    clean, _ = prompts
    _, before = model(clean, trace=TraceRequest(capture=("ln_2",)))
    rotate = Rotate("ln_2", layer=0, positions=6, angle=math.pi / 3, toward_position=2)
    _, after = model(clean, trace=TraceRequest(capture=("ln_2",)), edits=[rotate])
    points = before.captured["ln_2"][0, 0].double().numpy()  # [T, d]
    expected = numpy_rotation(points[6], points[2], math.pi / 3)
    assert np.abs(after.captured["ln_2"][0, 0, 6].double().numpy() - expected).max() <= TOLERANCE
    angle = np.arccos(expected @ points[6] / (np.linalg.norm(expected) * np.linalg.norm(points[6])))
    assert abs(angle - math.pi / 3) <= 1e-6
    (applied,) = after.edits
    assert abs(float(applied.change[0]) - np.linalg.norm(expected - points[6])) <= TOLERANCE


@torch.no_grad()
def test_frozen_ln_f_scale_makes_the_logit_difference_a_sum_of_components(model, prompts):
    # Direct logit attribution: with ln_f's scale s held at a reference run's value, ln_f is linear, so the
    # logit difference is Σ_c s·centre(c)·(γ ⊙ (e_a − e_w)) over the residual's components c (the embeddings,
    # each head's write, each b_O, each MLP update) plus β·(e_a − e_w). NumPy computes it from the components.
    clean, corrupt = prompts
    capture = ("resid_pre", "resid_post", "head_write", "mlp_out")
    _, reference = model(corrupt, trace=TraceRequest(capture=capture))
    logits, trace = model(clean, trace=TraceRequest(capture=capture),
                          edits=[FreezeScale("ln_f", reference=reference)])
    x_ref = reference.captured["resid_post"][-1, 0].double().numpy()  # [T, d]: what ln_f read in the reference
    centred = x_ref - x_ref.mean(-1, keepdims=True)
    scale = 1 / np.sqrt((centred**2).mean(-1) + model.config.ln_eps)  # layer norm's 1/σ, per position
    gamma, beta = model.ln_f.weight.double().numpy(), model.ln_f.bias.double().numpy()
    E = model.wte.weight.double().numpy()
    direction = gamma * (E[ANSWER] - E[WRONG])

    def attribution(component: np.ndarray) -> float:  # component [d] at the last position
        return float(scale[-1] * (component - component.mean()) @ direction)

    captured = {site: trace.captured[site].double().numpy() for site in capture}
    parts = [attribution(captured["resid_pre"][0, 0, -1])]  # x_0 = E[idx] + P[pos]
    for layer in range(L):
        parts += [attribution(write) for write in captured["head_write"][layer, 0, -1]]  # each head
        parts.append(attribution(model.h[layer].attn.c_proj.bias.double().numpy()))  # b_O
        parts.append(attribution(captured["mlp_out"][layer, 0, -1]))
    total = sum(parts) + float(beta @ (E[ANSWER] - E[WRONG]))
    assert abs(total - float(logit_difference(logits))) <= TOLERANCE
    assert abs(float(logit_difference(logits) - logit_difference(model(clean)))) > 1e-4  # the scale did change


# ---- no edit silently ignored ---------------------------------------------------------------------------


def an_edit_at(site: str) -> Scale:
    return Scale(site, layer=None if site == "ln_f" else 1, positions=[2, 5], factor=0.5)


@pytest.mark.parametrize("site", list(SITES))
@torch.no_grad()
def test_every_site_edited_changes_the_logits(model, prompts, site):
    clean, _ = prompts
    assert (model(clean, edits=[an_edit_at(site)]) - model(clean)).abs().max() > 1e-4


@torch.no_grad()
def test_every_operation_changes_the_logits(model, prompts):
    clean, corrupt = prompts
    _, other = model(corrupt, trace=TraceRequest(states=True, capture=("head_out", "resid_mid")))
    edits = [Set("resid_mid", layer=0, positions=4, value=torch.ones(D)),
             Set("resid_mid", layer=0, positions=4, source=other),
             Add("mlp_out", layer=1, vector=torch.linspace(-1, 1, D), coefficient=0.5),
             Scale("head_out", layer=0, head=1, factor=-1.0), Ablate("head_out", layer=0, head=1),
             Ablate("head_out", layer=0, head=1, how="mean", reference=other),
             Ablate("head_out", layer=0, head=1, how="resample", reference=other, seed=1),
             Rotate("ln_1", layer=1, positions=7, angle=1.0, toward_position=0),
             FreezeScale("ln_2", layer=1, reference=other), FreezeScale("ln_f", reference=other)]
    plain = model(clean)
    for edit in edits:
        assert (model(clean, edits=[edit]) - plain).abs().max() > 1e-4, edit


@torch.no_grad()
def test_a_traced_run_reports_each_edit_and_how_far_it_moved_its_site(model, prompts):
    clean, _ = prompts
    edits = [Scale("resid_mid", layer=1, positions=[1, 4], factor=0.5), Ablate("head_out", layer=0, head=3)]
    _, plain = model(clean, trace=TraceRequest(capture=("head_out",)))
    _, trace = model(clean, trace=TraceRequest(capture=("resid_mid",)), edits=edits)
    assert [applied.edit for applied in trace.edits] == edits[::-1]  # in the order of the steps: layer 0 first
    zeroed, moved = trace.edits
    halved = trace.captured["resid_mid"][1, :, [1, 4]]  # the value after the edit: ‖x/2 − x‖ = ‖x/2‖
    assert (moved.change - halved.norm(dim=-1)).abs().max() <= TOLERANCE
    assert (zeroed.change - plain.captured["head_out"][0, :, :, 3].norm(dim=-1)).abs().max() <= TOLERANCE
    assert model(clean, trace=True)[1].edits == ()


@torch.no_grad()
def test_captured_sites_are_the_trace_states_and_patterns(model, prompts):
    clean, _ = prompts
    capture = ("resid_pre", "resid_post", "pattern")
    _, trace = model(clean, trace=TraceRequest(states=True, patterns=True, capture=capture))
    assert torch.equal(trace.captured["resid_pre"], trace.states[:-1])
    assert torch.equal(trace.captured["resid_post"], trace.states[1:])
    assert (trace.captured["pattern"].transpose(2, 3) - trace.attention.pattern).abs().max() <= 1e-6


# ---- the reference math and the fused kernels apply edits alike, on every variant ------------------------


def edits_for(variant_model, other):
    geometry = variant_model.ln_f.variant.geometry
    edits = [Set("resid_pre", layer=1, rows=[0, 1], positions=[3, 6], source=other),
             Scale("pattern", layer=0, head=[1, 2], positions=[5, 7], factor=0.3),
             Ablate("head_write", layer=1, head=0), Add("resid_post", layer=0, vector=torch.linspace(-1, 2, D)),
             Ablate("mlp_out", layer=1, positions=2, how="mean", reference=other)]
    if geometry.sphere:
        edits.append(Rotate("ln_f", positions=4, angle=0.5, toward_position=1))
    if geometry.scale_free:
        edits.append(FreezeScale("ln_1", layer=1, reference=other))
    return edits


@pytest.mark.parametrize("norm", sorted(BUILT_IN))
@torch.no_grad()
def test_reference_and_fused_apply_edits_alike(model, norm):
    variant = model.with_norm(norm)
    idx = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(4))
    _, other = variant(idx.flip(1), trace=TraceRequest(capture=("resid_pre", "mlp_out", "resid_pre"), states=True))
    edits = edits_for(variant, other)
    request = TraceRequest(patterns=True, capture=("head_out", "ln_2"))
    fast = variant(idx, trace=request, edits=edits)
    with reference_math():
        reference = variant(idx, trace=request, edits=edits)
    assert (fast[0] - reference[0]).abs().max() <= TOLERANCE
    for name, tensor in fast[1].flat().items():
        assert (tensor - reference[1].flat()[name]).abs().max() <= TOLERANCE, name
    for site in request.capture:
        assert (fast[1].captured[site] - reference[1].captured[site]).abs().max() <= TOLERANCE
    assert (fast[0] - variant(idx)).abs().max() > 1e-4


# ---- the KV cache and generation ------------------------------------------------------------------------


@torch.no_grad()
def test_edits_on_new_positions_with_a_cache_equal_the_whole_sequence(model, prompts):
    clean, _ = prompts
    steer = torch.randn(D, generator=torch.Generator().manual_seed(8))
    whole = model(clean, edits=[Scale("head_out", layer=1, positions=[6], head=0, factor=2.0),
                                Add("resid_pre", layer=1, positions=[1, 7], vector=steer)])
    cache = KVCache(L, model.config.n_ctx)
    first = model(clean[:, :5], cache=cache, edits=[Add("resid_pre", layer=1, positions=1, vector=steer)])
    second = model(clean[:, 5:], cache=cache, edits=[Scale("head_out", layer=1, positions=[6], head=0, factor=2.0),
                                                     Add("resid_pre", layer=1, positions=7, vector=steer)])
    assert (torch.cat([first, second], dim=1) - whole).abs().max() <= TOLERANCE


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "recompute"])
@torch.no_grad()
def test_a_steering_vector_applies_to_every_new_token(model, prompts, use_cache):
    clean, _ = prompts
    steer = Add("resid_pre", layer=1, vector=torch.randn(D, generator=torch.Generator().manual_seed(9)),
                coefficient=4.0)
    steered = generate(model, clean, 6, Sampling(temperature=0), edits=[steer], use_cache=use_cache)
    sequence = clean  # the same greedy choice, each step a whole steered pass over the sequence so far
    for _ in range(6):
        token = model(sequence, edits=[steer])[:, -1].argmax(dim=-1)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
    assert torch.equal(steered, sequence)
    assert not torch.equal(steered, generate(model, clean, 6, Sampling(temperature=0)))


# ---- every bad edit: one InputError naming the field -----------------------------------------------------


def bad_edits(model, trace):
    vector = torch.ones(D)
    return {
        "unknown site": ([Scale("resid", layer=0, factor=2.0)], r"edits\[0\] \(Scale\)\.site: unknown site 'resid'"),
        "layer out of range": ([Scale("resid_pre", layer=2, factor=2.0)], r"\.layer: .*0 … 1, got 2"),
        "no layer": ([Scale("mlp_out", factor=2.0)], r"\.layer: site 'mlp_out' needs a layer"),
        "layer for ln_f": ([Scale("ln_f", layer=1, factor=2.0)], r"\.layer: ln_f .* has no layer"),
        "head at a site without heads": ([Scale("resid_pre", layer=0, head=1, factor=2.0)], r"\.head: site 'resid_pre'"),
        "head out of range": ([Scale("head_out", layer=0, head=4, factor=2.0)], r"\.head: 4 is out of range"),
        "position out of range": ([Scale("resid_pre", layer=0, positions=[1, 8], factor=2.0)],
                                  r"\.positions: 8 is out of range"),
        "row out of range": ([Scale("resid_pre", layer=0, rows=1, factor=2.0)], r"\.rows: 1 is out of range"),
        "float positions": ([Scale("resid_pre", layer=0, positions=[1.5], factor=2.0)], r"\.positions: expected an int"),
        "a pair named twice": ([Scale("resid_pre", layer=0, rows=[0, 0], positions=[3, 3], factor=2.0)],
                               "more than once"),
        "wrong shape": ([Add("resid_pre", layer=0, vector=torch.ones(D + 1))], r"\.vector: shape \[49\] does not"),
        "wrong dtype": ([Add("resid_pre", layer=0, vector=torch.ones(D, dtype=torch.int64))],
                        r"\.vector: expected a floating-point tensor"),
        "not finite": ([Set("resid_pre", layer=0, value=torch.full((D,), math.inf))], r"\.value: .*not finite"),
        "scale by 1": ([Scale("resid_pre", layer=0, factor=1)], r"\.factor: scaling by 1 changes nothing"),
        "a zero vector": ([Add("resid_pre", layer=0, vector=torch.zeros(D))], "a zero vector adds nothing"),
        "coefficient 0": ([Add("resid_pre", layer=0, vector=vector, coefficient=0)], "coefficient 0 adds nothing"),
        "rotate by 0": ([Rotate("ln_f", angle=0.0, toward=vector + torch.arange(D))], r"\.angle: a rotation by 0"),
        "rotate by 2π": ([Rotate("ln_f", angle=2 * math.pi, toward=torch.arange(D) * 1.0)], r"\.angle"),
        "rotate toward what the site cannot see": ([Rotate("ln_f", angle=0.3, toward=vector)],
                                                   r"\.toward: the vector has no component the site reads"),
        "rotate toward itself": ([Rotate("ln_f", positions=[2, 3], angle=0.3, toward_position=3)],
                                 r"\.toward_position: position 3 is among the positions rotated"),
        "rotate a residual": ([Rotate("resid_pre", layer=0, angle=0.3, toward_position=3)],
                              r"\.site: Rotate acts on a norm site's point"),
        "set with value and source": ([Set("resid_pre", layer=0, value=vector, source=trace)], "exactly one of value"),
        "a source without the site": ([Set("resid_mid", layer=0, source=trace)],
                                      r"\.source: the run captured no 'resid_mid'"),
        "a source that is not a trace": ([Set("resid_mid", layer=0, source="clean")], r"\.source: expected a Trace"),
        "unknown ablation": ([Ablate("resid_pre", layer=0, how="noise")], r"\.how: 'noise' is not one of"),
        "zero ablation with a reference": ([Ablate("resid_pre", layer=0, reference=trace)],
                                           r"\.reference: a zero ablation reads no reference"),
        "mean ablation without a reference": ([Ablate("resid_pre", layer=0, how="mean")], r"\.reference: how='mean'"),
        "not an edit": ([Scale("resid_pre", layer=0, factor=2.0), "resid_pre"], r"edits\[1\] is str"),
        "not a list": (Scale("resid_pre", layer=0, factor=2.0), "edits must be a list or tuple"),
    }


@pytest.fixture(scope="module")
def a_trace(model, prompts):
    with torch.no_grad():
        return model(prompts[0], trace=TraceRequest(capture=("resid_pre",)))[1]


@pytest.mark.parametrize("case", list(bad_edits(None, None)))
def test_a_bad_edit_is_one_input_error_naming_its_field(model, prompts, a_trace, case):
    edits, message = bad_edits(model, a_trace)[case]
    with pytest.raises(InputError, match=message):
        model(prompts[0], edits=edits)


@pytest.mark.parametrize("operation", [Rotate("ln_f", angle=0.3, toward_position=1),
                                       FreezeScale("ln_f", reference=None)], ids=["rotate", "freeze-scale"])
def test_geometry_edits_are_refused_in_one_line_where_the_variant_has_no_sphere(model, prompts, operation):
    dyt = model.with_norm("dyt")
    with pytest.raises(InputError, match=r"\.site: ln_f runs 'dyt', which .*: the open box"):
        dyt(prompts[0], edits=[operation])


def test_editing_a_position_held_in_the_kv_cache_is_refused(model, prompts):
    cache = KVCache(L, model.config.n_ctx)
    with torch.no_grad():
        model(prompts[0][:, :5], cache=cache)
    with pytest.raises(InputError, match=r"\.positions: position 3 is already held in the KV cache"):
        model(prompts[0][:, 5:], cache=cache, edits=[Scale("resid_pre", layer=0, positions=[3, 6], factor=2.0)])
    assert cache.length == 5  # refused before anything ran


def test_capturing_an_unknown_site_is_refused():
    with pytest.raises(InputError, match="TraceRequest.capture: unknown site 'z'"):
        TraceRequest(capture=("resid_pre", "z"))


def test_generation_refuses_an_edit_naming_positions(model, prompts):
    with pytest.raises(InputError, match=r"edits\[0\]\.positions: generation edits every token"):
        generate(model, prompts[0], 4, edits=[Scale("resid_pre", layer=0, positions=3, factor=2.0)])
