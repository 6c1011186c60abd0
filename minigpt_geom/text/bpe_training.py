"""A byte-level BPE vocabulary for a corpus of your own, trained by Hugging Face `tokenizers`.

GPT-2's 50257 words cost a small model most of its parameters (a d = 128 model's embedding is 6.4 M of its
7.2 M), and most of those words never occur in a small corpus. Training a vocabulary of a few thousand on the
corpus itself, as GPT-2's own was trained on WebText, is the usual remedy:

    pre-tokenise       GPT-2's regex (tokenizer.GPT2_PATTERN): merges never cross a piece boundary
    bytes              each piece as its UTF-8 bytes, in GPT-2's byte alphabet: 256 base tokens
    learn merges       repeatedly merge the most frequent adjacent pair into a new token (BpeTrainer)
    special            <|endoftext|>, the separator `prepare` puts between documents (id 0 here)

The trainer is the `tokenizers` library's (a compiled, widely used implementation: the `fast` extra); the
files it writes, vocab.json and merges.txt, are the ones GPT-2 ships and `Tokenizer.from_files` reads, and the
reference tokenizer encodes every text with them exactly as `tokenizers` does (tests/test_bpe_training.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from ..errors import InputError, OutputError
from .corpus import text_chunks
from .tokenizer import ENDOFTEXT, GPT2_PATTERN

if TYPE_CHECKING:
    import tokenizers

BASE_TOKENS = 256 + 1  # every byte, and <|endoftext|>: the smallest vocabulary
MIN_FREQUENCY = 2  # a pair seen once in the corpus is not worth a token


def byte_level_bpe() -> tokenizers.Tokenizer:
    """An empty byte-level BPE with GPT-2's pre-tokeniser: its regex, then GPT-2's byte alphabet (no space
    added in front of a text), decoded back to text the same way."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),  # the pieces, as tokenizer.py cuts them
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),  # bytes -> GPT-2's characters
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def corpus_texts(files: Sequence[Path]) -> Iterator[str]:
    """The corpus as the trainer reads it: each file in chunks cut where the pre-tokeniser cuts too (corpus.py),
    invalid UTF-8 as U+FFFD, exactly the text `prepare` tokenises."""
    for path in files:
        yield from text_chunks(path)


def train_bpe(files: Sequence[Path], vocab_size: int, *, min_frequency: int = MIN_FREQUENCY,
              progress: bool = False) -> tokenizers.Tokenizer:
    """A byte-level BPE of at most `vocab_size` tokens (fewer when the corpus has too few pairs seen
    `min_frequency` times) learned on `files`."""
    try:
        from tokenizers import pre_tokenizers, trainers
    except ImportError:
        raise InputError("training a tokenizer needs Hugging Face `tokenizers`: pip install 'minigpt-geom[fast]'"
                         ) from None
    if vocab_size < BASE_TOKENS:
        raise InputError(f"a byte-level vocabulary holds the 256 bytes and {ENDOFTEXT}: the vocabulary size must "
                         f"be at least {BASE_TOKENS}, got {vocab_size}", field="vocab_size")
    tokenizer = byte_level_bpe()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=progress,
                                  special_tokens=[ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # every byte, seen or not
    tokenizer.train_from_iterator(corpus_texts(files), trainer,
                                  length=sum(path.stat().st_size for path in files))
    return tokenizer


def write_bpe(tokenizer: tokenizers.Tokenizer, folder: str | os.PathLike) -> list[Path]:
    """vocab.json (token -> id) and merges.txt (the merges in learned order) into `folder`: GPT-2's two files.

    The Rust library reports a failed write (a full disk) as a bare Exception: an OutputError naming the folder."""
    try:
        return [Path(path) for path in tokenizer.model.save(str(folder))]
    except Exception as error:  # tokenizers' own error type is Exception itself
        raise OutputError(f"cannot write the tokenizer into {folder}: {error}") from None
