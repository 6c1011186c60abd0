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

from dataclasses import dataclass

from torch import Tensor

from .tables import Table


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


def attribution_table(result: Attribution) -> Table:
    """Every part with its contribution (logits) and its share of the logit difference, then the totals."""
    m = result.logit_diff
    rows = [[name, layer, head, value, value / m if m else None] for name, layer, head, value in result.parts()]
    rows += [["sum of the parts", None, None, result.total, result.total / m if m else None],
             ["logit difference", None, None, m, 1.0 if m else None]]
    caption = (f"direct logit attribution of z[{result.answer_word!r}] − z[{result.wrong_word!r}] at position "
               f"{result.position} ({result.words[result.position]!r}), through ln_f with its scale frozen")
    return Table(["component", "layer", "head", "contribution", "share"], rows, caption)


def layer_totals(result: Attribution) -> list[tuple[str, float]]:
    """The parts summed per block: (label, logits) for the embeddings, each block's attention (heads and bias)
    and MLP, and the rest; in forward order."""
    totals = [("embeddings", result.embeddings)]
    for layer in range(result.heads.shape[0]):
        attention = float(result.heads[layer].double().sum()) + float(result.attention_bias[layer])
        totals += [(f"attn {layer}", attention), (f"mlp {layer}", float(result.mlps[layer]))]
    return totals + [("rest", result.rest)]
