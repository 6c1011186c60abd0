"""Head ablation: knock each head out in turn and measure what the model loses.

A head's output z_l^h (before W_O, every position) is replaced by

    zero       0: the head writes nothing (b_O, shared by the heads, stays)
    mean       its mean over the reference texts at each position: the head's typical output there
    resample   its output on one reference text drawn at random (seeded), at the same positions

and the change in the metric is reported per head: the next-token loss over the text (mean cross-entropy), or
the metric of an answer against a wrong word (metric.py). Each ablated run is one row of a batch, L·H rows in
a few forward passes (batching.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..model.edits import Ablate, Set
from ..model.gpt2 import GPT2
from ..model.trace_request import TraceRequest
from .batching import by_layer, chunks, pass_rows
from .metric import METRIC_WORDS, Contrast, choose_contrast
from .tables import Table
from .text import encode_text, token_words

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..text.tokenizer import Tokenizer

METHODS = ("zero", "mean", "resample")
LOSS = "loss"


@dataclass(frozen=True)
class AblationResult:
    """The metric with each head ablated, and without."""

    method: str  # METHODS
    metric: str  # "loss" or a Contrast's metric
    values: Tensor  # [L, H] float32: the metric with head (l, h) ablated
    baseline: float  # the metric of the run as it is
    words: tuple[str, ...]
    contrast: Contrast | None = None  # None for the loss
    passes: int = 0  # forward passes the sweep ran, the unablated and reference runs included
    answer_word: str | None = None
    wrong_word: str | None = None

    @property
    def change(self) -> Tensor:
        """values − baseline per head: the loss rises (> 0) or the answer's lead falls (< 0) when a head matters."""
        return self.values - self.baseline

    @property
    def metric_words(self) -> str:
        """The metric in words."""
        return "next-token loss (nats)" if self.metric == LOSS else METRIC_WORDS[self.metric]


def check_method(method: str) -> None:
    """InputError unless `method` is an ablation this module knows."""
    if method not in METHODS:
        raise InputError(f"ablation must be one of {', '.join(METHODS)}, got {method!r}", "method")


def next_token_loss(logits: Tensor, idx: Tensor) -> Tensor:
    """Mean −log p(w_t+1 | w_≤t) over the positions of each row: logits [B, T, V], idx [1 or B, T] -> [B]."""
    targets = idx[:, 1:].expand(logits.shape[0], -1)
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")  # [B, T−1]
    return losses.mean(dim=-1)


def head_edits(cells: Tensor, start: int, H: int, method: str, source: object, draws: Tensor | None) -> list:
    """The edits of one pass: for each layer among `cells` (indices l·H + h, held by rows cells − start), its heads
    ablated: zero or mean through Ablate; resample as a Set of the reference row drawn for each cell."""
    edits = []
    for layer, mine in by_layer(cells, H):
        place = dict(layer=layer, rows=mine - start, head=mine % H)
        if method == "resample":  # [n, T, d_head]: the drawn reference row's output of each head, every position
            value = source.captured["head_out"][layer, draws[mine].to(source.captured["head_out"].device), :, mine % H]
            edits.append(Set("head_out", value=value, **place))
        else:
            edits.append(Ablate("head_out", how=method, reference=source, **place))
    return edits


@torch.inference_mode()
def ablate_heads(model: GPT2, idx: Tensor, *, method: str = "zero", reference: Tensor | None = None,
                 contrast: Contrast | None = None, seed: int = 0, rows: int | None = None,
                 progress: tqdm | None = None) -> tuple[Tensor, float, int]:
    """Every head of every layer ablated in turn on idx [1, T]: (metric [L, H], unablated metric, passes).

    The metric is the next-token loss (contrast None) or the contrast's at the last position. "mean" and
    "resample" read the heads' outputs on `reference` [R, T] (one traced pass); resample draws one reference
    row per head from `seed`, the same whatever the batch size. Copy r of the text has head (r // H, r % H)
    ablated, `rows` copies a pass, one edit per layer; one more row runs unablated."""
    check_method(method)
    if contrast is None and idx.shape[1] < 2:
        raise InputError("the next-token loss needs a text of at least two tokens; give --answer for a metric")
    if contrast is not None:
        contrast.check(model.config.vocab_size)
    L, H, T = model.config.n_layer, model.config.n_head, idx.shape[1]
    passes, source, draws = 0, None, None
    if method != "zero":
        if reference is None:
            raise InputError(f"{method}-ablation reads the heads' outputs on reference texts: give them")
        if reference.shape[1] != T:
            raise InputError(f"the reference texts are {reference.shape[1]} tokens long and the text {T}: "
                             f"{method}-ablation replaces each position by the reference's at the same position")
        if method == "resample" and bool((reference == idx).all()):
            raise InputError("resampling the text from itself changes nothing: give other reference texts")
        _, source = model(reference, trace=TraceRequest(capture=("head_out",)), last_only=True)
        draws = torch.randint(reference.shape[0], (L * H,), generator=torch.Generator().manual_seed(seed))
        passes += 1
    n = L * H + 1  # every head, then the text as it is
    size = pass_rows(model, T, rows, all_positions=contrast is None)
    if progress is not None:
        progress.reset(total=passes + -(-n // size))
        progress.update(passes)
    measured = torch.empty(n)
    for chunk in chunks(n, size):
        cells = torch.tensor([c for c in chunk if c < n - 1], dtype=torch.long)
        edits = head_edits(cells, chunk.start, H, method, source, draws)
        batch = idx.expand(len(chunk), T)
        if contrast is None:
            measured[chunk.start:chunk.stop] = next_token_loss(model(batch, edits=edits), idx).cpu()
        else:
            logits = model(batch, edits=edits, last_only=True)[:, -1]
            measured[chunk.start:chunk.stop] = contrast.measure(logits).cpu()
        passes += 1
        if progress is not None:
            progress.update()
    return measured[:-1].view(L, H), float(measured[-1]), passes


def text_ablation(model: GPT2, tokenizer: Tokenizer, text: str, *, method: str = "zero",
                  reference: Sequence[str] | None = None, answer: str | None = None, wrong: str | None = None,
                  metric: str = "logit_diff", seed: int = 0, rows_per_pass: int | None = None,
                  progress: tqdm | None = None) -> AblationResult:
    """Head ablation of a text: the next-token loss, or with `answer` (or `wrong`) the contrast at the last
    position (the wrong word defaulting to the second most likely); reference texts for mean and resample."""
    check_method(method)
    ids = encode_text(tokenizer, text, model.config.n_ctx)
    device = model.wte.weight.device
    idx = torch.tensor([ids], device=device)
    references = None
    if reference:
        encoded = [encode_text(tokenizer, other, model.config.n_ctx) for other in reference]
        lengths = sorted({len(other) for other in encoded})
        if lengths != [len(ids)]:
            raise InputError(f"the reference texts are {', '.join(map(str, lengths))} tokens long and the text "
                             f"{len(ids)}: {method}-ablation reads each position from the same position")
        references = torch.tensor(encoded, device=device)
    contrast, words = None, (None, None)
    if answer is not None or wrong is not None:
        with torch.inference_mode():
            logits = model(idx, last_only=True)[0, -1]
        contrast, *words = choose_contrast(tokenizer, logits, answer, wrong, metric)
    values, baseline, passes = ablate_heads(model, idx, method=method, reference=references, contrast=contrast,
                                            seed=seed, rows=rows_per_pass, progress=progress)
    return AblationResult(method, LOSS if contrast is None else contrast.metric, values, baseline,
                          tuple(token_words(tokenizer, ids)), contrast, passes + (contrast is not None),
                          *words)


def ablation_rows(result: AblationResult) -> list[dict]:
    """One record per head: layer, head, the metric ablated and its change (full precision)."""
    change = result.change
    return [{"layer": layer, "head": head, "metric": float(result.values[layer, head]),
             "change": float(change[layer, head])}
            for layer in range(result.values.shape[0]) for head in range(result.values.shape[1])]


def ablation_matrix(result: AblationResult) -> Table:
    """The change per head as a matrix: one row per layer, one column per head."""
    change = result.change
    header = ["layer", *(f"head {h}" for h in range(change.shape[1]))]
    rows = [[layer, *(float(v) for v in change[layer])] for layer in range(change.shape[0])]
    caption = (f"{result.method}-ablation of each head: change in the {result.metric_words} "
               f"(unablated {result.baseline:.4g})")
    return Table(header, rows, caption)
