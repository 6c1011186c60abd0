"""Experiment 5 (after Traveling Words): does each layer move the word from itself towards the next word?

    drift_l[t] = LN_f(x_l[t]) · (e_{t+1} − e_t)
               = lens_l[t][w_{t+1}] − lens_l[t][w_t]        the logit lens (lens.py) of the two words
               = log p_l(w_{t+1}) − log p_l(w_t)             the softmax normaliser cancels

LN_f is the model's own ln_f module, whatever its variant, and e_w the row of its own unembedding (E tied,
or a folded W with its bias b_w added): the logits are those the model itself would give.

for each layer l = 0..L (l = 0 is the embedding) and each position t within a window that has a next
word: averaged per (layer, position) over the corpus, and per layer over all positions (the count-weighted
mean of the per-position means). The mean log-probabilities log p_l(next) and log p_l(current) are
reported per layer too; they need every layer's full-vocabulary softmax (`logprobs=False` skips them), and
their difference is the drift again.

The windows of token ids come from corpus.py (a corpus read as a stream); here they are batched by length,
so memory stays O(chunk + batch) whatever the corpus size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import InputError
from ..model.gpt2 import GPT2
from ..model.variants import map_label
from ..model.trace import TraceRequest
from .tables import significant

LOGSUMEXP_ROWS = 512  # rows of [rows, vocab] logits held at once for the softmax normaliser


@dataclass(frozen=True)
class DriftResult:
    """Means over the positions that have a next word (layer 0 = embedding; P = longest window − 1)."""

    drift_by_position: np.ndarray  # [L+1, P] mean of LN_f(x_l[t]) · (e_{t+1} − e_t) at position t of a window
    position_counts: np.ndarray  # [P] number of (t, t+1) pairs averaged at each position
    drift: np.ndarray  # [L+1] mean over all positions (= drift_by_position weighted by position_counts)
    drift_std: np.ndarray  # [L+1] its standard deviation over all positions
    logp_next: np.ndarray | None  # [L+1] mean log p_l(w_{t+1}), None when not computed
    logp_current: np.ndarray | None  # [L+1] mean log p_l(w_t)
    positions: int  # number of (t, t+1) pairs averaged
    windows: int  # number of windows of at most n_ctx tokens
    state_map: str = r"$\mathrm{LN}_{f}(x_l[t])$"  # mathtext: what ln_f makes of x_l[t], in the model's variant


# ---- computing: one batch of windows ----------------------------------------------------------------

@torch.inference_mode()
def drift_terms(model: GPT2, idx: Tensor, states: Tensor | None = None, logprobs: bool = True) -> dict[str, Tensor]:
    """Per-position terms [L+1, B, T−1] for windows idx [B, T]: "drift", and "logp_next", "logp_current"."""
    if states is None:
        _, trace = model(idx, trace=TraceRequest(states=True))
        states = trace.states  # [L+1, B, T, d]
    x_hat = model.ln_f(states[:, :, :-1])[0]  # [L+1, B, T−1, d]: positions with a next word
    current, following = idx[:, :-1], idx[:, 1:]  # [B, T−1]
    logit_current = model.word_logits(x_hat, current)  # lens_l[t][w_t], one column of model.unembed(x_hat)
    logit_next = model.word_logits(x_hat, following)  # lens_l[t][w_{t+1}]
    terms = {"drift": logit_next - logit_current}  # = LN_f(x_l[t]) · (e_{t+1} − e_t)
    if logprobs:
        rows = x_hat.reshape(-1, x_hat.shape[-1])  # [(L+1)·B·(T−1), d]
        log_normaliser = torch.cat(
            [torch.logsumexp(model.unembed(chunk), dim=-1) for chunk in rows.split(LOGSUMEXP_ROWS)]
        ).view(logit_next.shape)
        terms["logp_next"] = logit_next - log_normaliser
        terms["logp_current"] = logit_current - log_normaliser
    return terms


# ---- accumulating over a corpus ------------------------------------------------------------------------

def summarise(sums: dict[str, np.ndarray], counts: np.ndarray, windows: int) -> DriftResult:
    """A DriftResult from float64 sums [L+1, P] over pairs at each position ("drift", "drift_sq", and
    "logp_next", "logp_current" if computed) and the pair counts [P]."""
    if counts.sum() == 0:
        raise InputError("the corpus has no pair of consecutive tokens: give a longer text")
    used = int(np.flatnonzero(counts)[-1]) + 1  # positions up to the longest window's last pair
    counts, sums = counts[:used], {name: values[:, :used] for name, values in sums.items()}
    count = int(counts.sum())
    by_position = sums["drift"] / counts  # [L+1, P]
    mean = (by_position * counts).sum(axis=1) / count  # [L+1]: per layer, from the per-position means
    logprobs = "logp_next" in sums
    return DriftResult(
        drift_by_position=by_position,
        position_counts=counts,
        drift=mean,
        drift_std=np.sqrt(np.maximum(sums["drift_sq"].sum(axis=1) / count - mean**2, 0.0)),
        logp_next=sums["logp_next"].sum(axis=1) / count if logprobs else None,
        logp_current=sums["logp_current"].sum(axis=1) / count if logprobs else None,
        positions=count,
        windows=windows,
    )


def position_sums(terms: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Terms [L+1, B, T−1] -> their sums over the batch [L+1, T−1] in float64, with "drift_sq" added."""
    sums = {name: values.double().sum(dim=1).cpu().numpy() for name, values in terms.items()}
    sums["drift_sq"] = terms["drift"].double().pow(2).sum(dim=1).cpu().numpy()
    return sums


@torch.inference_mode()
def corpus_drift(model: GPT2, windows: Iterable[Sequence[int]], *, batch_size: int = 4, logprobs: bool = True,
                 max_windows: int | None = None) -> DriftResult:
    """Mean drift per (layer, position) and per layer over all windows (ids lists), in batches of equal length."""
    if max_windows is not None and max_windows < 1:
        raise InputError(f"the number of windows must be at least 1, got {max_windows}")
    device = model.wte.weight.device
    shape = (model.config.n_layer + 1, model.config.n_ctx - 1)  # [L+1, P]: a window has at most n_ctx − 1 pairs
    names = ("drift", "drift_sq", "logp_next", "logp_current") if logprobs else ("drift", "drift_sq")
    sums = {name: np.zeros(shape) for name in names}
    counts = np.zeros(shape[1], dtype=np.int64)
    n_windows = 0

    def add(batch: list[Sequence[int]]) -> None:
        idx = torch.tensor(batch, dtype=torch.long, device=device)  # [B, T]
        B, T = idx.shape
        for name, values in position_sums(drift_terms(model, idx, logprobs=logprobs)).items():
            sums[name][:, : T - 1] += values
        counts[: T - 1] += B

    pending: dict[int, list[Sequence[int]]] = {}  # windows waiting for a batch, by length
    for window in windows:
        if max_windows is not None and n_windows >= max_windows:
            break
        n_windows += 1
        batch = pending.setdefault(len(window), [])
        batch.append(window)
        if len(batch) == batch_size:
            add(pending.pop(len(window)))
    for batch in pending.values():
        add(batch)
    if dist.is_available() and dist.is_initialized():  # under torchrun each process streamed its own files
        n_windows = add_across_processes(sums, counts, n_windows)
    return replace(summarise(sums, counts, n_windows), state_map=map_label(model.ln_f.variant, "f", "x_l[t]"))


def add_across_processes(sums: dict[str, np.ndarray], counts: np.ndarray, n_windows: int) -> int:
    """Replace each process's sums and counts (in place) by those of all processes; return the total windows.

    Every statistic is a sum over windows, so adding the processes' sums is exactly the sum over the whole
    corpus (to float64 rounding): the means are computed only afterwards, by `summarise`."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    names = sorted(sums)
    totals = torch.from_numpy(np.stack([sums[name] for name in names])).to(device)  # float64 [k, L+1, P]
    tallies = torch.from_numpy(np.append(counts, n_windows)).to(device)  # int64 [P + 1]
    dist.all_reduce(totals)
    dist.all_reduce(tallies)
    for name, total in zip(names, totals.cpu().numpy()):
        sums[name][...] = total
    counts[...] = tallies[:-1].cpu().numpy()
    return int(tallies[-1])


def text_drift(model: GPT2, ids: Sequence[int], states: Tensor | None = None, logprobs: bool = True) -> DriftResult:
    """The drift of a single text (ids of one window), reusing its states [L+1, 1, T, d] if given."""
    if len(ids) < 2:
        raise InputError("drift needs at least two tokens")
    idx = torch.tensor([list(ids)], dtype=torch.long, device=model.wte.weight.device)
    sums = position_sums(drift_terms(model, idx, states, logprobs))
    result = summarise(sums, np.ones(len(ids) - 1, dtype=np.int64), windows=1)
    return replace(result, state_map=map_label(model.ln_f.variant, "f", "x_l[t]"))


# ---- formatting -----------------------------------------------------------------------------------------

def drift_rows(result: DriftResult) -> list[dict]:
    """One record per layer: the CSV form of a DriftResult's per-layer means."""
    rows = []
    for layer in range(len(result.drift)):
        row = {"layer": layer, "drift": float(result.drift[layer]), "drift_std": float(result.drift_std[layer]),
               "drift_sem": float(result.drift_std[layer] / np.sqrt(result.positions))}
        if result.logp_next is not None:
            row.update(logp_next=float(result.logp_next[layer]), logp_current=float(result.logp_current[layer]),
                       logprob_difference=float(result.logp_next[layer] - result.logp_current[layer]))
        row["positions"] = result.positions
        rows.append(row)
    return rows


def drift_position_rows(result: DriftResult) -> list[dict]:
    """One record per (layer, position): the CSV form of drift_by_position."""
    return [
        {"layer": layer, "position": t, "drift": float(result.drift_by_position[layer, t]),
         "pairs": int(result.position_counts[t])}
        for layer in range(result.drift_by_position.shape[0])
        for t in range(result.drift_by_position.shape[1])
    ]


def format_drift(result: DriftResult) -> str:
    """A text table: per layer the mean drift ± std and, if computed, the mean log-probabilities."""
    has_logp = result.logp_next is not None
    head = f"{'layer':>5} {'drift':>10} {'± std':>10}"
    if has_logp:
        head += f" {'log p(next)':>12} {'log p(cur)':>11}"
    lines = [f"{result.positions} positions in {result.windows} windows", head]
    for layer in range(len(result.drift)):  # 4 significant digits, as every printed table
        drift, std = significant(float(result.drift[layer])), significant(float(result.drift_std[layer]))
        line = f"{layer:>5} {drift:>10} {std:>10}"
        if has_logp:
            line += (f" {significant(float(result.logp_next[layer])):>12}"
                     f" {significant(float(result.logp_current[layer])):>11}")
        lines.append(line)
    lines.append("drift = ln_f(x_l[t]) · (e_{t+1} − e_t) = log p_l(next) − log p_l(current), through the model's own "
                 "ln_f and unembedding; layer 0 = embedding")
    return "\n".join(lines)
