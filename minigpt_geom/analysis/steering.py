"""Steering by activation addition (ActAdd, Turner et al. 2023): push the residual stream along a difference.

Run two prompts that differ in what one wants more and less of ("Love" / "Hate"), take their residual states
entering block l at their last positions, and add

    v = c · (x_l(plus)[-1] − x_l(minus)[-1])

to the residual stream entering block l at every position of a third prompt and of every token generated
after it (the steering edit applies to new tokens too, through the KV cache). The state's norm sets the
scale: ‖v‖ is reported beside the typical ‖x_l‖ of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import InputError
from ..model.edits import Add
from ..model.gpt2 import GPT2
from ..model.trace_request import TraceRequest
from ..text.generation import Sampling, generate
from .tables import Table
from .text import encode_text

if TYPE_CHECKING:
    from ..text.tokenizer import Tokenizer


@dataclass(frozen=True)
class SteeringResult:
    """A prompt continued with and without the steering vector, and what the vector did to the next word."""

    layer: int
    coefficient: float
    plus: str
    minus: str
    prompt: str
    unsteered: str  # the continuation as the model writes it
    steered: str  # the continuation with v added at every position
    vector_norm: float  # ‖v‖
    residual_norm: float  # mean ‖x_l‖ over the prompt's positions (the first excluded when there are others)
    shifted_words: tuple[str, ...]  # the words whose log-probability at the first new position moved most
    shifts: Tensor  # [k] their change in log p (nats), rises first, then falls


@torch.inference_mode()
def steering_vector(model: GPT2, plus: Tensor, minus: Tensor, layer: int) -> Tensor:
    """x_l(plus)[-1] − x_l(minus)[-1], the residual streams entering block `layer` at the prompts' last positions,
    idx [1, T+] and [1, T−] (their lengths may differ): [d]."""
    if not 0 <= layer < model.config.n_layer:
        raise InputError(f"layer {layer} is outside the model's blocks 0 … {model.config.n_layer - 1}", "layer")
    states = []
    for idx in (plus, minus):
        _, trace = model(idx, trace=TraceRequest(capture=("resid_pre",)), last_only=True)
        states.append(trace.captured["resid_pre"][layer, 0, -1])
    vector = states[0] - states[1]
    if not bool(vector.any()):
        raise InputError("the two prompts leave the same residual stream at their last positions: their difference "
                         "is zero and steers nowhere; choose prompts that differ at the end")
    return vector


@torch.inference_mode()
def next_word_shift(model: GPT2, idx: Tensor, edit: Add, k: int) -> tuple[Tensor, Tensor]:
    """The k words whose log-probability as the next token rises most under `edit`, then the k that fall most:
    (ids [2k], Δ log p [2k])."""
    before = torch.log_softmax(model(idx, last_only=True)[0, -1].float(), dim=-1)
    after = torch.log_softmax(model(idx, edits=[edit], last_only=True)[0, -1].float(), dim=-1)
    shift = after - before
    k = min(k, shift.shape[0] // 2)
    rises, falls = shift.topk(k), (-shift).topk(k)
    return torch.cat([rises.indices, falls.indices.flip(0)]), torch.cat([rises.values, -falls.values.flip(0)])


def text_steering(model: GPT2, tokenizer: Tokenizer, prompt: str, plus: str, minus: str, *, layer: int | None = None,
                  coefficient: float = 4.0, max_new_tokens: int = 20, sampling: Sampling = Sampling(0.0),
                  top_k: int = 10) -> SteeringResult:
    """Continue `prompt` without and with ActAdd's vector c·(x_l(plus) − x_l(minus)) at block `layer` (default: the
    middle one), the same sampling for both; and the words the vector moves most at the first new token."""
    layer = model.config.n_layer // 2 if layer is None else layer
    device = model.wte.weight.device
    encode = lambda text: torch.tensor([encode_text(tokenizer, text, model.config.n_ctx)], device=device)  # noqa: E731
    idx = encode(prompt)
    vector = steering_vector(model, encode(plus), encode(minus), layer)
    edit = Add("resid_pre", layer=layer, vector=vector, coefficient=coefficient)
    with torch.inference_mode():
        _, trace = model(idx, trace=TraceRequest(capture=("resid_pre",)), last_only=True)
    norms = torch.linalg.vector_norm(trace.captured["resid_pre"][layer, 0].float(), dim=-1)  # [T]
    residual = float(norms[1:].mean() if len(norms) > 1 else norms[0])  # the first position is an outlier in GPT-2
    texts = []
    for edits in ([], [edit]):  # the same sampling seed for both continuations
        ids = generate(model, idx, max_new_tokens, sampling, edits=edits)[0, idx.shape[1]:]
        texts.append(tokenizer.decode(ids.tolist()))
    words, shifts = next_word_shift(model, idx, edit, top_k)
    return SteeringResult(layer, coefficient, plus, minus, prompt, texts[0], texts[1],
                          abs(coefficient) * float(torch.linalg.vector_norm(vector.float())), residual,
                          tuple(tokenizer.decode([int(i)]) for i in words), shifts.cpu())


def steering_table(result: SteeringResult) -> Table:
    """The two continuations, then the words v promoted and demoted most at the first new token."""
    rows = [["continuation", "unsteered", result.unsteered], ["continuation", f"steered (c = {result.coefficient:g})",
                                                              result.steered]]
    rows += [["Δ log p", repr(word), float(shift)] for word, shift in zip(result.shifted_words, result.shifts)]
    caption = (f"ActAdd at block {result.layer}: v = {result.coefficient:g} · (x_l({result.plus!r}) − "
               f"x_l({result.minus!r})), ‖v‖ = {result.vector_norm:.4g} against a mean ‖x_l‖ of "
               f"{result.residual_norm:.4g}")
    return Table(["what", "which", "value"], rows, caption)
