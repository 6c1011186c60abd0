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

from torch import Tensor

from .tables import Table


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


def steering_table(result: SteeringResult) -> Table:
    """The two continuations, then the words v promoted and demoted most at the first new token."""
    rows = [["continuation", "unsteered", result.unsteered], ["continuation", f"steered (c = {result.coefficient:g})",
                                                              result.steered]]
    rows += [["Δ log p", repr(word), float(shift)] for word, shift in zip(result.shifted_words, result.shifts)]
    caption = (f"ActAdd at block {result.layer}: v = {result.coefficient:g} · (x_l({result.plus!r}) − "
               f"x_l({result.minus!r})), ‖v‖ = {result.vector_norm:.4g} against a mean ‖x_l‖ of "
               f"{result.residual_norm:.4g}")
    return Table(["what", "which", "value"], rows, caption)
