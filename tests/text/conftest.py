"""The tokenizer tests' fixtures: a byte-level BPE vocabulary the tests train themselves, loaded into this
package's tokenizer and into the two oracles, tiktoken and Hugging Face `tokenizers` (each skips the tests that
use it, by name, where its extra is not installed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import pytest

from bpe_files import EOT, make_corpus, train_bpe, write_vocab
from helpers import needs
from minigpt_geom.text.fast_tokenizer import LIBRARIES, FastTokenizer
from minigpt_geom.text.tokenizer import Tokenizer

if TYPE_CHECKING:  # the oracles are imported where a fixture needs them, so the rest run without them
    import tiktoken
    import tokenizers


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Path:
    """A folder with vocab.json + merges.txt (and their OpenAI twins): 256 bytes, merges in order, then EOT."""
    folder = tmp_path_factory.mktemp("bpe")
    merges = train_bpe(make_corpus(), num_merges=600)
    for names in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        write_vocab(folder, merges, names=names)
    return folder


@pytest.fixture(scope="session")
def ours(files) -> Tokenizer:
    return Tokenizer.from_files(files / "vocab.json", files / "merges.txt")


def tiktoken_from(encoder_json: Path, vocab_bpe: Path) -> "tiktoken.Encoding":
    """tiktoken, with ranks read by tiktoken's own GPT-2 file loader (it also checks ids follow merge order)."""
    tiktoken = needs("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    with mock.patch.dict(os.environ, {"TIKTOKEN_CACHE_DIR": ""}):  # no cache: tmp paths get reused
        ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    eot = json.loads(encoder_json.read_text(encoding="utf-8"))[EOT]
    return tiktoken.Encoding("trained", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={EOT: eot})


@pytest.fixture(scope="session")
def tik(files) -> "tiktoken.Encoding":
    return tiktoken_from(files / "encoder.json", files / "vocab.bpe")


@pytest.fixture(scope="session")
def hf(files) -> "tokenizers.Tokenizer":
    """Hugging Face `tokenizers`: BPE from the same files, GPT-2's byte-level pre-tokenizer and decoder."""
    needs("tokenizers")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    vocab, merges = models.BPE.read_file(str(files / "vocab.json"), str(files / "merges.txt"))
    tok = HFTokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> tuple[Tokenizer, "tiktoken.Encoding"]:
    """Ours and tiktoken on a vocabulary trained on runs of one character, whose merges overlap ("aa", "aaaa")."""
    folder = tmp_path_factory.mktemp("runs")
    text = "\n".join(f"{'a' * k} {'7' * k}{' ' * k}x {'ab' * k}" for k in range(1, 40))
    write_vocab(folder, 40, text)
    return Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt"), tiktoken_from(folder / "vocab.json",
                                                                                              folder / "merges.txt")


@pytest.fixture(scope="session", params=LIBRARIES)
def fast(files, request) -> FastTokenizer:
    """The fast backend on each library it can use (tiktoken, Hugging Face `tokenizers`)."""
    needs(request.param)
    return FastTokenizer(files / "vocab.json", files / "merges.txt", library=request.param)
