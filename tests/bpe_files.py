"""Byte-level BPE vocabularies in GPT-2's file formats, trained by the tests themselves.

Written independently of minigpt_geom.text.tokenizer, so that tests can compare it with tiktoken and
Hugging Face `tokenizers` on the same files, and give random checkpoints a real tokenizer."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import regex

EOT = "<|endoftext|>"
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SAMPLE = (
    "To kill two birds with one stone. The cat sat on the mat, and the dog ate the bone. "
    "There is a house in the town where the people meet. We walk to the station at seven o'clock. "
) * 4


def byte_table() -> dict[int, str]:
    """GPT-2's byte -> character table: printable Latin-1 bytes stand for themselves, the rest shift past 255."""
    kept = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    shifted = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + n) for n, b in enumerate(shifted)}}


def merge_pair(word: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    """Replace each occurrence of `pair` in `word`, left to right, by its concatenation."""
    out, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def textbook_bpe(word: bytes, merges: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Encode one piece the obvious quadratic way: merge the lowest-ranked pair everywhere until none is left."""
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    parts = tuple(bytes([b]) for b in word)
    while learned := [pair for pair in zip(parts, parts[1:]) if pair in ranks]:
        parts = merge_pair(parts, min(learned, key=ranks.__getitem__))
    return list(parts)


def train_bpe(text: str, num_merges: int) -> list[tuple[bytes, bytes]]:
    """Textbook BPE training: repeatedly merge the most frequent adjacent pair inside each piece."""
    pieces = Counter(regex.findall(GPT2_PATTERN, text))
    words = {tuple(bytes([b]) for b in p.encode("utf-8")): n for p, n in pieces.items()}
    merges, known = [], {bytes([b]) for b in range(256)}
    table = byte_table()
    spelled = lambda pair: tuple("".join(table[b] for b in token) for token in pair)  # noqa: E731
    for _ in range(num_merges):
        counts: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += n
        # GPT-2 has one new token per merge: skip pairs whose concatenation is already a token.
        fresh = [(n, spelled(pair), pair) for pair, n in counts.items() if pair[0] + pair[1] not in known]
        if not fresh:
            break
        *_, best = max(fresh)  # ties broken by the pair as GPT-2 spells it ('Ġt' for ' t'): deterministic
        merges.append(best)
        known.add(best[0] + best[1])
        words = {merge_pair(word, best): n for word, n in words.items()}
    return merges


def write_vocab(folder: Path, merges: list[tuple[bytes, bytes]] | int = 43, text: str = SAMPLE,
                names: tuple[str, str] = ("vocab.json", "merges.txt")) -> int:
    """Write vocab.json + merges.txt (256 bytes in table order, one token per merge, then EOT) into folder.

    `merges` is a trained list or a number of merges to train on `text`; returns the vocabulary size."""
    if isinstance(merges, int):
        merges = train_bpe(text, merges)
    table = byte_table()
    spell = lambda token: "".join(table[b] for b in token)  # noqa: E731
    tokens = [bytes([b]) for b in table] + [a + b for a, b in merges]
    vocab = {spell(token): i for i, token in enumerate(tokens)}
    vocab[EOT] = len(vocab)
    assert len(vocab) == 256 + len(merges) + 1, "every byte and every merge is a distinct token"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / names[0]).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / names[1]).write_text("#version: 0.2\n" + "".join(f"{spell(a)} {spell(b)}\n" for a, b in merges),
                                   encoding="utf-8")
    return len(vocab)


SAMPLES = [  # texts that stress a pre-tokeniser (SAMPLE above is one paragraph to train on)
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Café, naïve, façade, résumé, Ångström, Straße, Ελληνικά, русский текст",
    "emoji 😀🎉 and ZWJ families 👨‍👩‍👧‍👦 👩🏽‍💻 🏳️‍🌈 flags 🇫🇷🇯🇵",
    "中文文本，日本語のテキスト、한국어 텍스트。",
    "whitespace   runs\t\ttabs\n\nnewlines\r\nwindows\r\n  \n end   ",
    "   leading spaces and trailing spaces   ",
    "it's, don't, they're, we've, I'm, you'll, he'd; IT'S DON'T THEY'RE; 's 't 'd",
    "'stop 'twas o'dem l'really 'very 'llama 'mad 'STOP O'STOP L'TWAS O'DEM D'REALLY N'VERY Y'LLAMA I'MAD",
    "numbers 0 1 42 3.14159 2024-01-01 1,000,000 ١٢٣ ½ ²",
    "def f(x):\n    return {'a': [x ** 2, x // 3]}  # comment\n\tif x != 0: pass\n",
    "<html><body class=\"x\">a&amp;b</body></html> a->b && c || d; i++;",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces\u200bzero-width",
    "",
    " ",
    "a",
    "\n",
    "😀",
]


def make_corpus(seed: int = 0) -> str:
    """Training text: the samples plus random English-like words, numbers, code and symbols."""
    rng = random.Random(seed)
    syllables = ["th", "e", "an", "in", "er", "re", "on", "at", "st", "ing", "qu", "ou", "al", "é", "ü", "中", "文"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(300)]
    lines = []
    for _ in range(400):
        line = " ".join(rng.choice(words).capitalize() if rng.random() < 0.1 else rng.choice(words)
                        for _ in range(rng.randint(3, 12)))
        line += rng.choice([".", ",", "!", "?", " 123", " 2024.", "'s", "'ll", " 😀", "\t", "  "])
        line = line.upper() if rng.random() < 0.2 else line  # upper-case merges: 'S is not a contraction
        lines.append(line)
    return "\n".join(lines * 2 + SAMPLES * 3)
