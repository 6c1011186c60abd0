"""--vocab-from: word counts against NumPy's bincount, and every full-vocabulary ranking, restricted to the
words seen, against brute force over those words alone (float64 NumPy on the model's own scores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bpe_files import SAMPLE

from helpers import requires
from minigpt_geom import GPT2, InputError
from minigpt_geom.analysis.circuits import ln_1_embeddings
from minigpt_geom.analysis.embeddings import reachability, top_and_bottom
from minigpt_geom.analysis.probe import query_key_probe, query_key_scores
from minigpt_geom.analysis.qk import query_key_sides, strongest_pairs
from minigpt_geom.analysis.svd import head_svd, key_bias_words, singular_pair_words
from minigpt_geom.analysis.vocabulary import allowed_words, word_counts
from minigpt_geom.cli import main
from minigpt_geom.text.token_files import prepare
from minigpt_geom.text.tokenizer import Tokenizer

TEXTS = {"a.txt": SAMPLE, "more/b.txt": "the cat and the dog. " * 3, "binary.dat": None}


@pytest.fixture(scope="module")
def world(tiny_checkpoint, tmp_path_factory):
    """The tiny model, its tokenizer, a corpus folder (with a file that is not text), its counts by NumPy."""
    model, tokenizer = GPT2.from_pretrained(tiny_checkpoint).eval(), Tokenizer.from_pretrained(tiny_checkpoint)
    corpus = tmp_path_factory.mktemp("vocab") / "corpus"
    for name, text in TEXTS.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            (corpus / name).write_bytes(b"\xff\xfe\x00binary")
        else:
            (corpus / name).write_text(text, encoding="utf-8")
    V = model.config.vocab_size
    ids = np.concatenate([tokenizer.encode_ordinary(t) for t in TEXTS.values() if t is not None])
    return dict(model=model, tokenizer=tokenizer, corpus=corpus, counts=np.bincount(ids, minlength=V), V=V)


def test_counts_of_text_folders_token_files_and_prepared_folders(world, tiny_checkpoint, tmp_path):
    counts = word_counts([world["corpus"]], world["tokenizer"], world["V"])
    np.testing.assert_array_equal(counts, world["counts"])
    prepared = prepare(world["corpus"], tiny_checkpoint, tmp_path / "tokens", pattern="*.txt", progress=False)
    from_folder = word_counts([tmp_path / "tokens"], world["tokenizer"], world["V"])
    np.testing.assert_array_equal(from_folder, np.bincount(np.asarray(prepared.train), minlength=world["V"]))
    from_file = word_counts([tmp_path / "tokens" / "val.bin"], world["tokenizer"], world["V"])
    np.testing.assert_array_equal(from_file, np.bincount(np.asarray(prepared.val), minlength=world["V"]))
    (tmp_path / "wide.bin").write_bytes(np.array([world["V"] + 3], dtype=np.uint16).tobytes())
    with pytest.raises(InputError, match="outside this vocabulary"):
        word_counts([tmp_path / "wide.bin"], world["tokenizer"], world["V"])
    with pytest.raises(InputError, match="lower --min-count"):
        allowed_words(world["counts"], min_count=10**9)


def test_rankings_name_only_the_words_seen(world):
    model, counts = world["model"], world["counts"]
    allowed = allowed_words(counts, min_count=2)
    seen = np.flatnonzero(counts >= 2)
    assert 10 < len(seen) < world["V"] // 2  # the filter matters

    # query-key pairs: brute force over the seen words' V' × V' scores
    queries, keys = query_key_sides(model, 1, 2)
    scores = (queries.double() @ keys.double().T).numpy()[np.ix_(seen, seen)]
    best = np.argsort(scores, axis=None)[::-1][:10]
    expected = [(seen[i // len(seen)], seen[i % len(seen)]) for i in best]
    pairs = strongest_pairs(model, 1, 2, k=10, chunk_size=7, allowed=allowed)
    assert [(p.query, p.key) for p in pairs] == expected

    # reach: top and bottom among the seen words
    for row in top_and_bottom(reachability(model), k=3, allowed=allowed):
        assert row.token in seen
    values = reachability(model)["norm"].double().numpy()[seen]
    rows = [r for r in top_and_bottom(reachability(model), k=3, allowed=allowed) if r.measure == "norm"]
    assert [r.token for r in rows[:3]] == list(seen[np.argsort(values)[::-1][:3]])

    # singular vectors and key-bias words
    svd = head_svd(model, 0, 1, "QK")
    for pair in singular_pair_words(model, svd, n_pairs=4, k=3, allowed=allowed):
        assert set(pair.left) | set(pair.right) <= set(seen)
    bias = key_bias_words(model, 0, 1, k=4, allowed=allowed)
    assert set(bias.positive) | set(bias.negative) <= set(seen)

    # the query-key probe: each word's matches are the top k of its masked scores
    words = [("x", int(seen[0])), ("y", int(seen[5]))]
    rows = query_key_probe(model, 1, words, k=4, allowed=allowed)
    from minigpt_geom.analysis.circuits import head_weights

    E_tilde = ln_1_embeddings(model, 1)
    head_scores = query_key_scores(head_weights(model, 1, 0), E_tilde, torch.tensor([t for _, t in words]))
    for i, row in enumerate(r for r in rows if r.head == 0):
        assert list(row.matches) == list(seen[np.argsort(head_scores[i].double().numpy()[seen])[::-1][:4]])


@requires("matplotlib")
def test_qk_command_with_vocab_from_draws_only_seen_words(world, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "qk"
    assert main(["qk", "--weights", str(tiny_checkpoint), "--layer", "1", "--head", "2", "-k", "8", "--vocab-from",
                 str(world["corpus"]), "--min-count", "2", "-o", str(out), "--quiet"]) == 0
    assert (out / "qk_layer1_head2.png").read_bytes()[:4] == b"\x89PNG"
    import csv

    with open(out / "qk_layer1_head2.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seen = set(np.flatnonzero(world["counts"] >= 2).tolist())
    assert len(rows) == 8 and all(int(r["query"]) in seen and int(r["key"]) in seen for r in rows)
    capsys.readouterr()
    assert main(["qk", "--weights", str(tiny_checkpoint), "--vocab-from", str(world["corpus"]), "--min-count",
                 "1000000"]) == 2
    assert "lower --min-count" in capsys.readouterr().err
