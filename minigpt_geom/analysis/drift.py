"""Experiment 5 (after Traveling Words): does each layer move the word from itself towards the next word?

    drift_l[t] = LN_f(x_l[t]) · (e_{t+1} − e_t)
               = lens_l[t][w_{t+1}] − lens_l[t][w_t]        the logit lens (lens.py) of the two words
               = log p_l(w_{t+1}) − log p_l(w_t)             the softmax normaliser cancels

averaged over every position t of a corpus that has a next word in its window, for each l = 0..L
(l = 0 is the embedding). The mean log-probabilities log p_l(next) and log p_l(current) are reported
too; they need every layer's full-vocabulary softmax (about 3× the forward pass; `logprobs=False` skips
them), and their difference is the drift again, a check on the identity above.

A corpus is a text file or a folder of them, read as a stream: bytes in chunks, decoded incrementally,
each chunk cut at its last whitespace character that precedes a non-space. GPT-2's pre-tokeniser always
starts a piece there, so encoding chunk by chunk gives exactly the ids of encoding the whole file.
Tokens are grouped into windows of n_ctx (the last, shorter one kept) that never cross a file, and
windows are batched; memory stays O(chunk + batch) whatever the corpus size.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import regex
import torch
from torch import Tensor

from ..errors import InputError
from ..model import GPT2

CHUNK_BYTES = 1 << 20  # read a file 1 MiB at a time
LOGSUMEXP_ROWS = 512  # rows of [rows, vocab] logits held at once for the softmax normaliser
SAFE_CUT = regex.compile(r"(?r)\s(?=\S)")  # searched from the end: the last place a new piece starts


@dataclass(frozen=True)
class DriftResult:
    """Per-layer means over all positions that have a next word; arrays [L+1] (layer 0 = embedding)."""

    drift: np.ndarray  # mean of LN_f(x_l[t]) · (e_{t+1} − e_t)
    drift_std: np.ndarray  # its standard deviation over positions
    logp_next: np.ndarray | None  # mean log p_l(w_{t+1}), None when not computed
    logp_current: np.ndarray | None  # mean log p_l(w_t)
    positions: int  # number of (t, t+1) pairs averaged
    windows: int  # number of windows of at most n_ctx tokens


# ---- computing: one batch of windows ----------------------------------------------------------------

def unembedding(model: GPT2) -> tuple[Tensor, Tensor | None]:
    """(W [V, d], bias [V] or None) with logits = LN_f-point Wᵀ + bias: E itself unless ln_f was folded."""
    if model.unembed_weight is None:
        return model.wte.weight, None
    return model.unembed_weight, model.unembed_bias


@torch.inference_mode()
def drift_terms(model: GPT2, idx: Tensor, states: Tensor | None = None, logprobs: bool = True) -> dict[str, Tensor]:
    """Per-position terms [L+1, B, T−1] for windows idx [B, T]: "drift", and "logp_next", "logp_current"."""
    if states is None:
        _, trace = model(idx, keep_states=True)
        states = trace.states  # [L+1, B, T, d]
    x_hat = model.ln_f(states[:, :, :-1])[0]  # [L+1, B, T−1, d]: positions with a next word
    W, bias = unembedding(model)
    current, following = idx[:, :-1], idx[:, 1:]  # [B, T−1]
    logit_current = (x_hat * W[current]).sum(dim=-1)  # lens_l[t][w_t]
    logit_next = (x_hat * W[following]).sum(dim=-1)  # lens_l[t][w_{t+1}]
    if bias is not None:
        logit_current, logit_next = logit_current + bias[current], logit_next + bias[following]
    terms = {"drift": logit_next - logit_current}  # = LN_f(x_l[t]) · (e_{t+1} − e_t)
    if logprobs:
        rows = x_hat.reshape(-1, x_hat.shape[-1])  # [(L+1)·B·(T−1), d]
        log_normaliser = torch.cat(
            [torch.logsumexp(model.unembed(chunk), dim=-1) for chunk in rows.split(LOGSUMEXP_ROWS)]
        ).view(logit_next.shape)
        terms["logp_next"] = logit_next - log_normaliser
        terms["logp_current"] = logit_current - log_normaliser
    return terms


# ---- reading: files -> token ids -> windows -----------------------------------------------------------

def corpus_files(path: str | Path, pattern: str = "*.txt") -> list[Path]:
    """The file itself, or every file under a folder matching `pattern` (recursive, sorted, no hidden)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"corpus {path} does not exist: give a text file or a folder of text files")
    files = sorted(
        p for p in path.rglob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise InputError(f"no files matching {pattern!r} under {path}")
    return files


def text_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES, progress=None) -> Iterator[str]:
    """The text of a UTF-8 file (invalid bytes -> U+FFFD) in pieces that the pre-tokeniser cuts between too."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    carry = ""
    with path.open("rb") as f:
        while block := f.read(chunk_bytes):
            if progress is not None:
                progress.update(len(block))
            text = carry + decoder.decode(block)
            last = SAFE_CUT.search(text)  # the last "whitespace, then non-space"
            cut = last.start() if last else 0
            if cut > 0:
                yield text[:cut]
            carry = text[cut:]
    carry += decoder.decode(b"", final=True)
    if carry:
        yield carry


def encode_plain(tokenizer, text: str) -> list[int]:
    """Token ids of corpus text; special-token text such as <|endoftext|> is encoded as plain text."""
    encode = getattr(tokenizer, "encode_ordinary", tokenizer.encode)
    return encode(text)


def token_windows(token_chunks: Iterable[Sequence[int]], size: int) -> Iterator[list[int]]:
    """Group a stream of id chunks into consecutive windows of `size` ids; the last one is kept if ≥ 2 ids."""
    window: list[int] = []
    for chunk in token_chunks:
        window.extend(chunk)
        while len(window) >= size:
            yield window[:size]
            window = window[size:]
    if len(window) >= 2:
        yield window


def corpus_windows(files: Sequence[Path], tokenizer, size: int, chunk_bytes: int = CHUNK_BYTES,
                   progress=None) -> Iterator[list[int]]:
    """Windows of every file in turn, read and tokenised incrementally (windows never cross files)."""
    for path in files:
        chunks = (encode_plain(tokenizer, text) for text in text_chunks(path, chunk_bytes, progress))
        yield from token_windows(chunks, size)


def text_windows(texts: Iterable[str], tokenizer, size: int) -> Iterator[list[int]]:
    """The same windows as corpus_windows, from texts held in memory (each encoded whole)."""
    for text in texts:
        yield from token_windows([encode_plain(tokenizer, text)], size)


# ---- accumulating over a corpus ------------------------------------------------------------------------

@torch.inference_mode()
def corpus_drift(model: GPT2, windows: Iterable[Sequence[int]], *, batch_size: int = 4, logprobs: bool = True,
                 max_windows: int | None = None) -> DriftResult:
    """Mean drift per layer over all windows (ids lists), run in batches of windows of equal length."""
    device = model.wte.weight.device
    L1 = model.config.n_layer + 1
    sums = {name: np.zeros(L1) for name in ("drift", "drift_sq", "logp_next", "logp_current")}
    count = n_windows = 0

    def add(batch: list[Sequence[int]]) -> None:
        nonlocal count
        idx = torch.tensor(batch, dtype=torch.long, device=device)  # [B, T]
        terms = drift_terms(model, idx, logprobs=logprobs)
        for name, values in terms.items():  # [L+1, B, T−1] -> sums over positions, float64
            sums[name] += values.double().sum(dim=(1, 2)).cpu().numpy()
        sums["drift_sq"] += terms["drift"].double().pow(2).sum(dim=(1, 2)).cpu().numpy()
        count += idx.shape[0] * (idx.shape[1] - 1)

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
    if count == 0:
        raise InputError("the corpus has no pair of consecutive tokens: give a longer text")
    mean = sums["drift"] / count
    return DriftResult(
        drift=mean,
        drift_std=np.sqrt(np.maximum(sums["drift_sq"] / count - mean**2, 0.0)),
        logp_next=sums["logp_next"] / count if logprobs else None,
        logp_current=sums["logp_current"] / count if logprobs else None,
        positions=count,
        windows=n_windows,
    )


def text_drift(model: GPT2, ids: Sequence[int], states: Tensor | None = None, logprobs: bool = True) -> DriftResult:
    """The drift of a single text (ids of one window), reusing its states [L+1, 1, T, d] if given."""
    if len(ids) < 2:
        raise InputError("drift needs at least two tokens")
    idx = torch.tensor([list(ids)], dtype=torch.long, device=model.wte.weight.device)
    terms = {k: v.double()[:, 0].cpu().numpy() for k, v in drift_terms(model, idx, states, logprobs).items()}
    return DriftResult(
        drift=terms["drift"].mean(axis=1), drift_std=terms["drift"].std(axis=1),
        logp_next=terms["logp_next"].mean(axis=1) if logprobs else None,
        logp_current=terms["logp_current"].mean(axis=1) if logprobs else None,
        positions=len(ids) - 1, windows=1,
    )


# ---- formatting -----------------------------------------------------------------------------------------

def drift_rows(result: DriftResult) -> list[dict]:
    """One record per layer: the CSV form of a DriftResult."""
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


def format_drift(result: DriftResult) -> str:
    """A text table: per layer the mean drift ± std and, if computed, the mean log-probabilities."""
    has_logp = result.logp_next is not None
    head = f"{'layer':>5} {'drift':>10} {'± std':>9}"
    if has_logp:
        head += f" {'log p(next)':>12} {'log p(cur)':>11}"
    lines = [f"{result.positions} positions in {result.windows} windows", head]
    for layer in range(len(result.drift)):
        line = f"{layer:>5} {result.drift[layer]:>10.4f} {result.drift_std[layer]:>9.4f}"
        if has_logp:
            line += f" {result.logp_next[layer]:>12.4f} {result.logp_current[layer]:>11.4f}"
        lines.append(line)
    lines.append("drift = LN_f(x_l[t]) · (e_{t+1} − e_t) = log p_l(next) − log p_l(current); layer 0 = embedding")
    return "\n".join(lines)
