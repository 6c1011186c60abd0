"""Direct logit attribution: how much each head and each MLP writes the answer over the wrong word.

The residual stream at the last block is a sum of updates (block.py):

    x_L = x_0 + Σ_l ( Σ_h z_l^h W_O^h + b_O,l ) + Σ_l mlp_l          x_0 = E[w] + P[t], the embeddings

and the logit difference reads it through ln_f: m = N_f(x_L) · (e_answer − e_wrong) + (b_answer − b_wrong),
with N_f = γ ⊙ project(·) + β and e the unembedding's rows (E, or the folded W and its bias b). The projection
is not linear (layer norm divides by σ(x)), but with its scale frozen at the value of this very run (the
freeze-scale edit) it is, so that

    m = Σ_components γ ⊙ project_frozen(c) · (e_answer − e_wrong)  +  rest,

rest = β · (e_answer − e_wrong) + b_answer − b_wrong. Each term is the component of that update along the
unembedding difference, seen through ln_f's own geometry: the paper's drift, one component at a time. The
parts sum to the model's logit difference (the tests hold them to it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import InputError
from ..model.gpt2 import GPT2
from ..model.trace_request import TraceRequest
from .metric import Contrast, choose_contrast
from .tables import Table
from .text import encode_text, token_words

if TYPE_CHECKING:
    from ..model.norm_site import SphereNorm
    from ..text.tokenizer import Tokenizer

CAPTURED = ("resid_pre", "head_write", "attn_out", "mlp_out", "resid_post")


@dataclass(frozen=True)
class Attribution:
    """Each component's share of m = z_answer − z_wrong at one position (logits)."""

    embeddings: float  # x_0 = E[w] + P[t]
    heads: Tensor  # [L, H] each head's write z_l^h W_O^h
    attention_bias: Tensor  # [L] b_O of each block's attention
    mlps: Tensor  # [L] each block's MLP update, its biases included
    rest: float  # β · (e_answer − e_wrong) + b_answer − b_wrong: ln_f's shift and the unembedding's bias
    logit_diff: float  # the model's own m, from its logits
    words: tuple[str, ...]  # the prompt's tokens
    answer_word: str
    wrong_word: str
    position: int  # where m is read (the last position by default)
    reading: str  # how ln_f was made linear, for captions: ln_f_reading

    @property
    def total(self) -> float:
        """The sum of every part: the logit difference again, up to rounding."""
        return (self.embeddings + float(self.heads.double().sum()) + float(self.attention_bias.double().sum())
                + float(self.mlps.double().sum()) + self.rest)

    def parts(self) -> list[tuple[str, int | None, int | None, float]]:
        """(component, layer, head, contribution) in forward order: embeddings, each block's heads, its
        attention bias and its MLP, then the rest."""
        parts: list[tuple[str, int | None, int | None, float]] = [("embeddings", None, None, self.embeddings)]
        for layer in range(self.heads.shape[0]):
            parts += [("head", layer, head, float(self.heads[layer, head])) for head in range(self.heads.shape[1])]
            parts += [("attention bias", layer, None, float(self.attention_bias[layer])),
                      ("mlp", layer, None, float(self.mlps[layer]))]
        return parts + [("rest", None, None, self.rest)]


def frozen_projection(site: SphereNorm, x_ref: Tensor) -> Callable[[Tensor], Tensor]:
    """The site's projection made linear at x_ref [d]: for a variant whose point is direction(x) times a scale
    (layer norm, RMSNorm, the sphere) the FreezeScale edit's map c -> direction(c) · s_ref, with
    s_ref = ‖project(x_ref)‖ / ‖direction(x_ref)‖; for the others the projection itself (the caller checks that
    it is linear)."""
    geometry = site.variant.geometry
    if not geometry.scale_free:
        return site.project
    scale = torch.linalg.vector_norm(site.project(x_ref)) / torch.linalg.vector_norm(geometry.direction(x_ref))
    return lambda c: geometry.direction(c) * scale


def ln_f_reading(site: SphereNorm) -> str:
    """How the attribution reads x_L's parts through ln_f: with its scale frozen (a rescaling of a direction), or
    as it is (a linear variant: none, fixed σ), for captions."""
    variant = site.variant
    if variant.geometry.scale_free:
        return f"through ln_f ({variant.name}) with its scale frozen"
    return f"through ln_f ({variant.name}, linear: nothing to freeze)"


@torch.inference_mode()
def direct_logit_attribution(model: GPT2, idx: Tensor, contrast: Contrast, position: int = -1
                             ) -> tuple[float, Tensor, Tensor, Tensor, float, float]:
    """Split m = z_answer − z_wrong at `position` of idx [1, T] over the components of x_L: (embeddings, heads
    [L, H], attention biases [L], MLPs [L], rest, m), in float64; one traced forward pass.

    InputError where ln_f's variant is neither a rescaling of its direction nor linear: then no frozen scale
    makes m a sum over components (DyT's tanh, a user's variant that does not declare itself scale-free)."""
    if contrast.metric != "logit_diff" or contrast.wrong is None:
        raise InputError("direct logit attribution splits the logit difference (linear in ln_f's output), not a "
                         "probability: give a wrong word and the logit_diff metric")
    contrast.check(model.config.vocab_size)
    T = idx.shape[1]
    if not -T <= position < T:
        raise InputError(f"position {position} is outside the text's {T} tokens", "position")
    logits, trace = model(idx, trace=TraceRequest(capture=CAPTURED))
    kept = trace.captured
    p = position % T
    heads = kept["head_write"][:, 0, p]  # [L, H, d]: z_l^h W_O^h
    parts = {"embeddings": kept["resid_pre"][0, 0, p], "heads": heads,
             "attention_bias": kept["attn_out"][:, 0, p] - heads.sum(dim=1),  # b_O: the update less the heads' writes
             "mlps": kept["mlp_out"][:, 0, p]}
    x_L = kept["resid_post"][-1, 0, p]
    ln_f = model.ln_f
    project = frozen_projection(ln_f, x_L)
    points = {name: project(value).double() for name, value in parts.items()}
    whole = points["embeddings"] + points["heads"].sum(dim=(0, 1)) + points["attention_bias"].sum(0) + \
        points["mlps"].sum(0)
    target = project(x_L).double()
    # The parts were added in the model's dtype: their float64 sum differs from x_L by its rounding (bfloat16's
    # ε = 2⁻⁷ per addition), so the test of linearity allows that much, and 1e-4 in float32.
    tolerance = max(1e-4, 4 * torch.finfo(x_L.dtype).eps * math.sqrt(2 * model.config.n_layer + 1))
    if float(torch.linalg.vector_norm(whole - target)) > tolerance * (1 + float(torch.linalg.vector_norm(target))):
        variant = ln_f.variant
        raise InputError(f"ln_f runs {variant.name!r} ({variant.geometry.output_set}), whose point is neither "
                         "direction(x) times a scale nor linear in x: no frozen scale makes the logit difference a sum "
                         "over the components, so direct logit attribution does not apply (a variant of your own "
                         "that is a rescaling can say so: register it with a Geometry whose scale_free is True)")
    gamma, beta = (t.double() for t in ln_f.affine_map())
    rows = model.unembedding_rows().double()
    u = rows[contrast.answer] - rows[contrast.wrong]  # e_answer − e_wrong
    read = lambda point: (gamma * point) @ u  # noqa: E731  (γ ⊙ point) · (e_answer − e_wrong), over the last axis
    rest = float(beta @ u)
    if not model.lm_head.tied:  # a folded unembedding's bias
        rest += float(model.lm_head.bias[contrast.answer].double() - model.lm_head.bias[contrast.wrong].double())
    m = float(contrast.measure(logits[0, p]))
    return (float(read(points["embeddings"])), read(points["heads"]), read(points["attention_bias"]),
            read(points["mlps"]), rest, m)


def text_attribution(model: GPT2, tokenizer: Tokenizer, text: str, answer: str | None = None,
                     wrong: str | None = None, *, position: int = -1) -> Attribution:
    """Direct logit attribution on a text; the answer defaults to the most likely next word at `position`, the
    wrong word to the second most likely."""
    ids = encode_text(tokenizer, text, model.config.n_ctx)
    if not -len(ids) <= position < len(ids):
        raise InputError(f"--position {position} is outside the text's {len(ids)} tokens", "position")
    idx = torch.tensor([ids], device=model.wte.weight.device)
    with torch.inference_mode():
        logits = model(idx)[0, position]
    contrast, answer_word, wrong_word = choose_contrast(tokenizer, logits, answer, wrong)
    embeddings, heads, bias, mlps, rest, m = direct_logit_attribution(model, idx, contrast, position)
    return Attribution(embeddings, heads.float().cpu(), bias.float().cpu(), mlps.float().cpu(), rest, m,
                       tuple(token_words(tokenizer, ids)), answer_word, wrong_word, position % len(ids),
                       ln_f_reading(model.ln_f))


def attribution_table(result: Attribution) -> Table:
    """Every part with its contribution (logits) and its share of the logit difference, then the totals."""
    m = result.logit_diff
    rows = [[name, layer, head, value, value / m if m else None] for name, layer, head, value in result.parts()]
    rows += [["sum of the parts", None, None, result.total, result.total / m if m else None],
             ["logit difference", None, None, m, 1.0 if m else None]]
    caption = (f"direct logit attribution of z[{result.answer_word!r}] − z[{result.wrong_word!r}] at position "
               f"{result.position} ({result.words[result.position]!r}), {result.reading}")
    return Table(["component", "layer", "head", "contribution", "share"], rows, caption)


def layer_totals(result: Attribution) -> list[tuple[str, float]]:
    """The parts summed per block: (label, logits) for the embeddings, each block's attention (heads and bias)
    and MLP, and the rest; in forward order."""
    totals = [("embeddings", result.embeddings)]
    for layer in range(result.heads.shape[0]):
        attention = float(result.heads[layer].double().sum()) + float(result.attention_bias[layer])
        totals += [(f"attn {layer}", attention), (f"mlp {layer}", float(result.mlps[layer]))]
    return totals + [("rest", result.rest)]
