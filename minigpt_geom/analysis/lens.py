"""The logit lens: decode every residual state x_l as if it were the last one (Traveling Words, section 3).

    lens_l = LN_f(x_l) Eᵀ          [..., vocab]; LN_f recomputes μ and σ from x_l itself, with ln_f's γ, β
    p_l    = softmax(lens_l)        at l = L this is the model's own next-word distribution

LN_f is the model's own ln_f module, whatever its variant, and Eᵀ its one unembedding (`model.unembed`: E
tied, or the folded W with its bias), so the last layer is exactly the model's output.

For every layer l = 0..L (l = 0 is the embedding x_0) and position t the lens reports the top-k words of
p_l, the probability and rank of the final prediction argmax p_L, the entropy of p_l, the divergence
KL(p_L ‖ p_l) of the final distribution from the layer's, and (from the trace) the angular step and the
angular path travelled so far. Refinement shows as rank → 1, KL → 0 layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..model.gpt2 import GPT2
from ..model.geometry import centred_direction
from ..model.trace import Trace
from .text import token_words, trace_text

if TYPE_CHECKING:
    from ..text.tokenizer import Tokenizer


@dataclass(frozen=True)
class LensResult:
    """The logit lens of one traced forward pass; fields [L+1, B, T] unless noted (layer 0 = x_0)."""

    top_ids: Tensor  # [L+1, B, T, k] the k most probable words of p_l, most probable first
    top_probs: Tensor  # [L+1, B, T, k] their probabilities
    prediction: Tensor  # [B, T] argmax p_L: the model's predicted next word
    prediction_prob: Tensor  # p_l(prediction)
    prediction_rank: Tensor  # 1 + #{v : lens_l[v] > lens_l[prediction]}: 1 = the top word
    entropy: Tensor  # −Σ_v p_l(v) log p_l(v), nats
    kl_to_final: Tensor  # KL(p_L ‖ p_l) = Σ_v p_L(v) (log p_L(v) − log p_l(v)), nats; 0 at l = L
    angular_step: Tensor  # angle between x_{l−1} and x_l in the model's geometry, radians; 0 at l = 0
    angular_path: Tensor  # Σ of the steps up to layer l, radians

    @property
    def n_states(self) -> int:
        """Number of decoded states x_0 … x_L: L + 1."""
        return self.prediction_prob.shape[0]



@torch.inference_mode()
def lens_logits(model: GPT2, x: Tensor) -> Tensor:
    """x_l [..., d] -> logits [..., vocab] as the output head makes them: the model's ln_f, then its unembedding."""
    x_hat, _ = model.ln_f(x)
    return model.unembed(x_hat)


def angular_steps(trace: Trace) -> tuple[Tensor, Tensor]:
    """(step, path) [L+1, B, T] radians: the trace's residual.angle and angular_path with a leading 0 for x_0."""
    zero = torch.zeros_like(trace.residual.angle[:1])
    return torch.cat([zero, trace.residual.angle]), torch.cat([zero, trace.angular_path])


@torch.inference_mode()
def logit_lens(model: GPT2, trace: Trace, k: int = 5) -> LensResult:
    """Decode every state of a trace taken with TraceRequest(states=True); one layer's logits in memory at a time.

    k ≥ 1 words per layer are kept, clipped to the vocabulary."""
    if trace.states is None:
        raise ValueError("logit_lens needs the residual states: call model(idx, trace=TraceRequest(states=True))")
    if k < 1:
        raise InputError(f"the number of top words must be at least 1, got {k}")
    states = trace.states  # [L+1, B, T, d]
    final_logp = torch.log_softmax(lens_logits(model, states[-1]).float(), dim=-1)  # [B, T, V]
    final_p = final_logp.exp()
    prediction = final_logp.argmax(dim=-1)  # [B, T]
    k = min(k, final_logp.shape[-1])
    fields: dict[str, list[Tensor]] = {n: [] for n in ("top_ids", "top_probs", "prob", "rank", "entropy", "kl")}
    for x in states:
        logp = torch.log_softmax(lens_logits(model, x).float(), dim=-1)  # [B, T, V]
        p = logp.exp()
        top_logp, top_ids = logp.topk(k, dim=-1)
        target = logp.gather(-1, prediction[..., None])  # [B, T, 1]
        fields["top_ids"].append(top_ids)
        fields["top_probs"].append(top_logp.exp())
        fields["prob"].append(target[..., 0].exp())
        fields["rank"].append((logp > target).sum(dim=-1) + 1)
        fields["entropy"].append(-(p * logp).sum(dim=-1))
        fields["kl"].append((final_p * (final_logp - logp)).sum(dim=-1).clamp_min(0))  # KL ≥ 0: −1e-9 is rounding
    step, path = angular_steps(trace)
    stack = lambda name: torch.stack(fields[name])  # noqa: E731
    return LensResult(
        top_ids=stack("top_ids"), top_probs=stack("top_probs"), prediction=prediction,
        prediction_prob=stack("prob"), prediction_rank=stack("rank"), entropy=stack("entropy"),
        kl_to_final=stack("kl"), angular_step=step.float(), angular_path=path.float(),
    )


@torch.inference_mode()
def next_word_ranks(model: GPT2, states: Tensor, ids: Sequence[int]) -> Tensor:
    """Rank of the text's own next word ids[t+1] in p_l at position t: [L+1, T−1] (1 = the top word).

    states [L+1, T, d] of one text; rank = 1 + #{v : lens_l[v] > lens_l[ids[t+1]]}, as prediction_rank."""
    following = torch.as_tensor(list(ids)[1:], device=states.device)  # [T−1]
    ranks = []
    for x in states[:, :-1]:  # [T−1, d], one layer's logits in memory at a time
        logits = lens_logits(model, x).float()  # [T−1, V]
        target = logits.gather(-1, following[:, None])
        ranks.append((logits > target).sum(dim=-1) + 1)
    return torch.stack(ranks)


def text_lens(model: GPT2, tokenizer: Tokenizer, text: str, k: int = 5) -> tuple[list[str], Trace, LensResult]:
    """Run a text (within the context) and decode every state: its tokens' words, the trace, the lens."""
    ids, _, trace = trace_text(model, tokenizer, text)
    return token_words(tokenizer, ids), trace, logit_lens(model, trace, k=k)


# ---- formatting: tables of the lens, computed above -----------------------------------------------

def lens_rows(lens: LensResult, words: Sequence[str], decode: Callable[[int], str], batch: int = 0) -> list[dict]:
    """One flat record per (position, layer): the CSV form of the lens; `decode(id) -> str`."""
    rows = []
    k = lens.top_ids.shape[-1]
    for t, word in enumerate(words):
        predicted = decode(int(lens.prediction[batch, t]))
        for layer in range(lens.n_states):
            row = {"position": t, "token": word, "layer": layer, "prediction": predicted}
            for j in range(k):
                row[f"top{j + 1}"] = decode(int(lens.top_ids[layer, batch, t, j]))
                row[f"top{j + 1}_prob"] = float(lens.top_probs[layer, batch, t, j])
            row.update(
                prediction_prob=float(lens.prediction_prob[layer, batch, t]),
                prediction_rank=int(lens.prediction_rank[layer, batch, t]),
                entropy=float(lens.entropy[layer, batch, t]),
                kl_to_final=float(lens.kl_to_final[layer, batch, t]),
                angular_step_rad=float(lens.angular_step[layer, batch, t]),
                angular_path_rad=float(lens.angular_path[layer, batch, t]),
            )
            rows.append(row)
    return rows


def angle_note(model: GPT2) -> str:
    """What the lens table's step and path measure on this model: the angle between x_l and x_l+1 as each block's
    ln_1 reads them (the trace's residual.angle), said in its variant's terms."""
    variants = {block.ln_1.variant.name: block.ln_1.variant for block in model.h}
    if len(variants) > 1:
        return f"as each block's ln_1 reads them ({', '.join(variants)})"
    variant = next(iter(variants.values()))
    geometry = variant.geometry
    read = "centred, x − μ·1" if geometry.direction is centred_direction else "as they are"
    where = "the angle along its sphere" if geometry.scale_free else "their magnitude counts too, the angle leaves it out"
    return f"as ln_1 ({variant.name}) reads them: {read}; {where}"


def format_lens(lens: LensResult, words: Sequence[str], decode: Callable[[int], str], positions: Sequence[int] | None = None,
                batch: int = 0, angle: str = "as each block's ln_1 reads them") -> str:
    """A text table per position: the layers' top words, p and rank of the prediction, KL, angles.

    The words column is as wide as its widest entry over every position printed: a token is never cut, and the
    positions' tables line up under one another."""
    lines = []
    k = lens.top_ids.shape[-1]
    positions = list(positions if positions is not None else range(len(words)))
    top_words = {t: [" ".join(f"{decode(int(i))!r} {float(p):.4g}"
                              for i, p in zip(lens.top_ids[layer, batch, t], lens.top_probs[layer, batch, t]))
                     for layer in range(lens.n_states)] for t in positions}
    width = max(len(f"top-{k} words (probability)"), *(len(top) for tops in top_words.values() for top in tops))
    for t in positions:
        predicted = decode(int(lens.prediction[batch, t]))
        tops = top_words[t]
        lines.append(f"position {t} {words[t]!r} -> predicts {predicted!r}")
        lines.append(f"  {'layer':>5}  {'top-' + str(k) + ' words (probability)':<{width}} {'p(pred)':>8} "
                     f"{'rank':>6} {'KL':>7} {'step':>6} {'path':>6}")
        for layer, top in enumerate(tops):
            lines.append(
                f"  {layer:>5}  {top:<{width}} {float(lens.prediction_prob[layer, batch, t]):>8.4g} "
                f"{int(lens.prediction_rank[layer, batch, t]):>6} {float(lens.kl_to_final[layer, batch, t]):>7.4g} "
                f"{float(lens.angular_step[layer, batch, t]):>6.4g} {float(lens.angular_path[layer, batch, t]):>6.4g}"
            )
        lines.append("")
    lines.append(f"KL = KL(final ‖ layer) in nats; step, path: angle in radians between x_l and x_l+1 {angle}; "
                 f"layer 0 = embedding")
    return "\n".join(lines)
