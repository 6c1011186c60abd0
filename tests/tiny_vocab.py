"""A small byte-level BPE vocabulary in GPT-2's file format, trained here on a sample text.

Used to give random test checkpoints a tokenizer: 256 byte tokens, `n_merges` merges, `<|endoftext|>` last."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import regex

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SAMPLE = (
    "To kill two birds with one stone. The cat sat on the mat, and the dog ate the bone. "
    "There is a house in the town where the people meet. We walk to the station at seven o'clock. "
) * 4


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (bytes that are not printable map past 255)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def train(text: str, n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties broken by the pair itself)."""
    symbols = byte_symbols()
    words = Counter(tuple(symbols[b] for b in piece.encode()) for piece in regex.findall(GPT2_PATTERN, text))
    vocab = {s: i for i, s in enumerate(symbols)}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def write_vocab(folder: Path, n_merges: int = 43, text: str = SAMPLE) -> int:
    """Write vocab.json and merges.txt into folder; returns the vocabulary size (257 + n_merges)."""
    vocab, merges = train(text, n_merges)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return len(vocab)
