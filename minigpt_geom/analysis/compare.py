"""Two models side by side on the same text: how far each word travels, how long its vector is, and how soon
each layer's decoding agrees with the final one. Made for a model and its LN-free fine-tune (remove-ln):
what happens to the trajectory when there is no sphere?"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import GPT2
from .lens import text_lens

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

def compare_rows(models: dict[str, GPT2], tokenizer: Tokenizer, text: str) -> list[dict]:
    """One record per (model, state l = 0 … L), each a mean over the text's positions:
    ‖x_l‖, the angular path travelled up to l (radians), KL(p_L ‖ p_l) and the rank of the final prediction."""
    rows = []
    for name, model in models.items():
        _, trace, lens = text_lens(model, tokenizer, text)
        norms = trace.states.float().norm(dim=-1)  # [L+1, B, T]
        for layer in range(lens.n_states):
            rows.append({"model": name, "layer": layer, "residual_norm": norms[layer].mean().item(),
                         "angular_path": lens.angular_path[layer].mean().item(),
                         "kl_to_final": lens.kl_to_final[layer].mean().item(),
                         "prediction_rank": lens.prediction_rank[layer].float().mean().item()})
    return rows
