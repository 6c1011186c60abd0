"""Activation patching: which activation, moved from a clean run into a corrupted one, restores the answer?

Two prompts of the same length differ in a detail ("… the Eiffel Tower is in" / "… the Colosseum is in").
Run the clean one and keep the activation at a site; run the corrupted one with that activation set back to
its clean value at one place (a layer and a position, or a layer and a head), and measure the metric m
(metric.py). Over every place this gives a map of where the information that decides the answer sits:

    resid_pre   x_l[t], the residual stream entering block l at position t          -> [L, T]
    head_out    head h's output of block l (before W_O), at every position at once  -> [L, H]

Every patched run is one row of a batch: the corrupted prompt repeated, each row edited at its own place
(edits that name (row, position) pairs with one value each), as many rows per forward pass as the memory
budget allows (batching.py), never one forward pass per patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import InputError
from ..model.edits import Set
from ..model.gpt2 import GPT2
from ..model.trace_request import TraceRequest
from .batching import by_layer, chunks, pass_rows
from .metric import METRIC_WORDS, Contrast, choose_contrast, normalised
from .tables import Table
from .text import encode_text, token_words

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..text.tokenizer import Tokenizer

SITES = {"resid_pre": ("layer", "position"), "head_out": ("layer", "head")}
SITE_WORDS = {"resid_pre": "the residual stream x_l entering block l, one position at a time",
              "head_out": "each head's output (before W_O), at every position at once"}


@dataclass(frozen=True)
class PatchingResult:
    """A sweep's metric for every patched run, with the clean and corrupted runs' own values."""

    site: str  # "resid_pre" or "head_out" (SITES)
    contrast: Contrast
    values: Tensor  # [L, T] or [L, H] float32: m of the corrupted run with that one place patched
    clean: float  # m of the clean run
    corrupted: float  # m of the corrupted run
    clean_words: tuple[str, ...]  # the prompts' tokens, for labels
    corrupted_words: tuple[str, ...]
    answer_word: str
    wrong_word: str | None = None
    passes: int = 0  # forward passes the sweep ran, the clean and corrupted runs included

    @property
    def normalised(self) -> Tensor:
        """(m − m_corrupted) / (m_clean − m_corrupted) per place: 0 = corrupted, 1 = clean."""
        return normalised(self.values, self.clean, self.corrupted)

    @property
    def axes(self) -> tuple[str, str]:
        """The names of the two axes of `values`: ("layer", "position") or ("layer", "head")."""
        return SITES[self.site]

    def place_label(self, index: int) -> str:
        """The label of column `index`: the position's token (clean/corrupted where they differ), or the head."""
        if self.site == "head_out":
            return f"head {index}"
        clean, corrupted = self.clean_words[index], self.corrupted_words[index]
        return repr(clean) if clean == corrupted else f"{clean!r}/{corrupted!r}"


def check_site(site: str) -> None:
    """InputError unless `site` is one patching sweeps over."""
    if site not in SITES:
        raise InputError(f"patching site must be one of {', '.join(SITES)}, got {site!r}", "site")


def check_pair(clean: Sequence[int], corrupted: Sequence[int]) -> None:
    """InputError unless the two prompts are non-empty and of the same length in tokens."""
    if not len(clean) or not len(corrupted):
        raise InputError("the clean and the corrupted prompt must each have at least one token")
    if len(clean) != len(corrupted):
        raise InputError(f"the clean prompt is {len(clean)} tokens and the corrupted one {len(corrupted)}: patching "
                         "moves each position to the same position, so both must have the same number of tokens")


# ---- the sweep ---------------------------------------------------------------------------------------------

@torch.inference_mode()
def patch_sweep(model: GPT2, clean: Tensor, corrupted: Tensor, contrast: Contrast, *, site: str = "resid_pre",
                rows: int | None = None, progress: tqdm | None = None) -> tuple[Tensor, float, float, int]:
    """Patch every place of `site` from the clean run [1, T] into the corrupted one [1, T]:
    (values [L, T] or [L, H], m_clean, m_corrupted, forward passes run).

    One traced pass keeps the clean run's values at the site; then copy r of the corrupted prompt has place r
    (layer r // P, position or head r % P) set to its clean value, `rows` copies a pass (default: the memory
    budget's), one Set edit per layer naming its (row, place) pairs. One more row, unedited, measures the
    corrupted run itself."""
    check_site(site)
    check_pair(clean[0], corrupted[0])
    contrast.check(model.config.vocab_size)
    L, T = model.config.n_layer, clean.shape[1]
    P = T if site == "resid_pre" else model.config.n_head
    logits, source = model(clean, trace=TraceRequest(capture=(site,)), last_only=True)
    m_clean = float(contrast.measure(logits[0, -1]))
    n = L * P + 1  # every place, then the corrupted run as it is
    size = pass_rows(model, T, rows)
    if progress is not None:
        progress.reset(total=1 + -(-n // size))
        progress.update()
    measured = torch.empty(n)
    for chunk in chunks(n, size):
        cells = torch.tensor([c for c in chunk if c < n - 1], dtype=torch.long)
        edits = []
        for layer, mine in by_layer(cells, P):  # this layer's cells; mine − chunk.start the rows that hold them
            place = {"positions" if site == "resid_pre" else "head": mine % P}
            edits.append(Set(site, layer=layer, rows=mine - chunk.start, source=source, **place))
        batch = corrupted.expand(len(chunk), T)
        measured[chunk.start:chunk.stop] = contrast.measure(model(batch, edits=edits, last_only=True)[:, -1]).cpu()
        if progress is not None:
            progress.update()
    passes = 1 + -(-n // size)
    return measured[:-1].view(L, P), m_clean, float(measured[-1]), passes


def text_patching(model: GPT2, tokenizer: Tokenizer, clean: str, corrupted: str, answer: str | None = None,
                  wrong: str | None = None, *, metric: str = "logit_diff", site: str = "resid_pre",
                  rows_per_pass: int | None = None, progress: tqdm | None = None) -> PatchingResult:
    """Patching of two texts of the same length in tokens (ids_patching)."""
    check_site(site)
    ids = [encode_text(tokenizer, text, model.config.n_ctx) for text in (clean, corrupted)]
    return ids_patching(model, tokenizer, *ids, answer, wrong, metric=metric, site=site, rows_per_pass=rows_per_pass,
                        progress=progress)


def ids_patching(model: GPT2, tokenizer: Tokenizer, clean_ids: Sequence[int], corrupted_ids: Sequence[int],
                 answer: str | None = None, wrong: str | None = None, *, metric: str = "logit_diff",
                 site: str = "resid_pre", rows_per_pass: int | None = None, progress: tqdm | None = None
                 ) -> PatchingResult:
    """Patching of two prompts' ids. The answer defaults to the clean prompt's most likely next word, the wrong
    word to the corrupted prompt's most likely other word."""
    check_site(site)
    check_pair(clean_ids, corrupted_ids)
    pair = torch.tensor([list(clean_ids), list(corrupted_ids)], device=model.wte.weight.device)
    with torch.inference_mode():
        logits = model(pair, last_only=True)[:, -1]  # both prompts' next-word logits, for the default words
    contrast, answer_word, wrong_word = choose_contrast(tokenizer, logits[0], answer, wrong, metric, logits[1])
    values, m_clean, m_corrupted, passes = patch_sweep(model, pair[:1], pair[1:], contrast, site=site,
                                                       rows=rows_per_pass, progress=progress)
    return PatchingResult(site, contrast, values, m_clean, m_corrupted, tuple(token_words(tokenizer, clean_ids)),
                          tuple(token_words(tokenizer, corrupted_ids)), answer_word, wrong_word, passes + 1)


def nearest_word(model: GPT2, token: int, vocabulary: int | None = None) -> int:
    """The word whose unembedding row points most nearly as `token`'s does (cosine; itself excluded), among the
    first `vocabulary` ids: a corruption that keeps the text's length and most of its sense."""
    rows = model.unembedding_rows()[:vocabulary].detach().float()
    cosine = torch.nn.functional.cosine_similarity(rows, rows[token][None], dim=-1)
    cosine[token] = float("-inf")
    return int(cosine.argmax())


# ---- tables ---------------------------------------------------------------------------------------------

def patching_rows(result: PatchingResult) -> list[dict]:
    """One record per patched place: layer, position or head, its token(s), m raw and normalised (full precision)."""
    first, second = result.axes
    values, shares = result.values, result.normalised
    rows = []
    for layer in range(values.shape[0]):
        for place in range(values.shape[1]):
            row = {"layer": layer, second: place}
            if second == "position":
                row["clean_token"] = result.clean_words[place]
                row["corrupted_token"] = result.corrupted_words[place]
            row["metric"] = float(values[layer, place])
            row["normalised"] = float(shares[layer, place])
            rows.append(row)
    return rows


def patching_matrix(result: PatchingResult) -> Table:
    """The normalised sweep as a matrix: one row per layer, one column per position (or head)."""
    shares = result.normalised
    header = ["layer", *(f"{i} {result.place_label(i)}" if result.site == "resid_pre" else str(i)
                         for i in range(shares.shape[1]))]
    rows = [[layer, *(float(v) for v in shares[layer])] for layer in range(shares.shape[0])]
    what = METRIC_WORDS[result.contrast.metric]
    caption = (f"activation patching of {SITE_WORDS[result.site]}: {what}, normalised (0 = corrupted "
               f"{result.corrupted:.4g}, 1 = clean {result.clean:.4g}); rows are layers, columns "
               f"{'positions' if result.site == 'resid_pre' else 'heads'}")
    return Table(header, rows, caption)
