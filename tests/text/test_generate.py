"""Generation: the KV cache gives the logits of a full recomputation, greedy decoding matches
`transformers` (past the context too, with nanoGPT's sliding window), sampling is reproducible and filters
exactly, stop strings and batches of prompts give each prompt's own text, and `minigpt-geom generate` streams it."""

from __future__ import annotations

import pytest
import torch

from helpers import random_hf_model, save_official_layout
from minigpt_geom import GPT2, InputError, KVCache
from minigpt_geom.text.generation import (Sampling, TextStream, filter_top_k, filter_top_p, generate, generate_stream,
                                         generate_text, next_token, stream_text)

TOLERANCE = 1e-4
LIVELY = dict(n_layer=2, n_head=4, n_embd=48, n_positions=32, vocab_size=101)  # a short context to slide past


def random_prompt(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small_model(tiny_checkpoint) -> GPT2:
    return GPT2.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def lively(tmp_path_factory):
    """(transformers model, our model) on the same random weights whose greedy text depends on the prompt.

    With tied embeddings a small random GPT-2 mostly repeats its last input token. Position vectors ten
    times larger, token vectors and attention weights three times larger make the continuation wander
    and depend on the prompt, so a token-for-token comparison means something."""
    hf_model = random_hf_model(seed=2, **LIVELY)  # a seed whose greedy rows differ enough for the eos tests
    with torch.no_grad():
        hf_model.transformer.wpe.weight.mul_(10)
        hf_model.transformer.wte.weight.mul_(3)
        for name, p in hf_model.named_parameters():
            if ".attn.c_" in name and name.endswith("weight"):
                p.mul_(3)
    folder = tmp_path_factory.mktemp("lively")
    save_official_layout(hf_model, folder)
    return hf_model, GPT2.from_pretrained(folder)


# ---- 1. the cache ---------------------------------------------------------------------------------


@torch.no_grad()
def test_cached_logits_equal_full_recomputation(small_model):
    idx = random_prompt(3, 20, 101)
    full = small_model(idx)  # [3, 20, vocab]
    cache = KVCache(small_model.config.n_layer, small_model.config.n_ctx)
    pieces = [small_model(idx[:, :5], cache=cache)]  # prefill: the first 5 positions
    pieces.append(small_model(idx[:, 5:9], cache=cache))  # a chunk of 4 after a cached prefix (T < S mask)
    assert cache.length == 9
    for t in range(9, 20):  # then one position at a time
        pieces.append(small_model(idx[:, t : t + 1], cache=cache))
    assert cache.length == 20
    assert all(k.shape == (3, 4, 64, 12) and v.shape == k.shape for k, v in ((c.keys, c.values) for c in cache.layers))
    worst = (torch.cat(pieces, dim=1) - full).abs().max().item()
    print(f"worst |Δlogits| cached vs full = {worst:.2e}")
    assert worst <= TOLERANCE


def test_cache_does_not_change_samples(small_model):
    prompt = random_prompt(2, 6, 101)
    settings = {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "seed": 3}
    with_cache = generate(small_model, prompt, 20, Sampling(**settings))
    assert torch.equal(with_cache, generate(small_model, prompt, 20, Sampling(**settings), use_cache=False))


@torch.no_grad()
def crop_loop_on_transformers(hf_model, prompt: torch.Tensor, n: int, keep: int, sampling: Sampling) -> torch.Tensor:
    """Tokens by the sliding-window rule, restated on transformers without a cache: the model reads the tokens
    since the window's start, which moves to the last `keep` tokens whenever more than n_ctx would be read
    (keep = n_ctx: nanoGPT's crop `idx[:, -n_ctx:]` at every step). Drawn as generate draws them (next_token,
    one generator seeded alike), so equal logits give equal samples."""
    n_ctx, generator = hf_model.config.n_positions, sampling.generator(torch.device("cpu"))
    sequence, start = prompt, max(0, prompt.shape[1] - n_ctx)
    for _ in range(n):
        if sequence.shape[1] - start > n_ctx:
            start = sequence.shape[1] - keep
        logits = hf_model(sequence[:, start:]).logits[:, -1]
        sequence = torch.cat([sequence, next_token(logits, sampling, generator)[:, None]], dim=1)
    return sequence


@pytest.mark.slow
def test_generation_slides_past_the_context_as_nanogpt_does(lively):
    hf_model, model = lively
    n_ctx, sampling = model.config.n_ctx, Sampling(temperature=1.5, seed=0)  # 32; hot: no loop of one token
    prompt = random_prompt(2, 8, 101, seed=1)
    oracle = crop_loop_on_transformers(hf_model, prompt, 60, n_ctx, sampling)  # 68 tokens: 36 past the context
    assert torch.equal(generate(model, prompt, 60, sampling), oracle)
    assert torch.equal(generate(model, prompt, 60, sampling, use_cache=False), oracle)
    assert min(len(set(row)) for row in oracle[:, n_ctx:].tolist()) >= 5  # a real continuation past the context
    for step in (5,):  # the cache restarted every `step` tokens on the last n_ctx − step + 1
        ours = generate(model, prompt, 60, sampling, window_step=step)
        assert torch.equal(ours, crop_loop_on_transformers(hf_model, prompt, 60, n_ctx - step + 1, sampling)), step
        assert not torch.equal(ours, oracle)  # a shorter context after each restart: other samples
    long_prompt = random_prompt(1, 45, 101, seed=2)  # longer than the context: the model reads its last 32
    ours = generate(model, long_prompt, 10, sampling)
    assert ours.shape == (1, 55) and torch.equal(ours[:, :45], long_prompt)
    assert torch.equal(ours, crop_loop_on_transformers(hf_model, long_prompt, 10, n_ctx, sampling))
    with pytest.raises(InputError, match="window_step"):
        generate_stream(model, prompt, 5, window_step=n_ctx + 1)  # raised at the call, not at the first next()


def test_bad_settings_are_input_errors(small_model):
    prompt = random_prompt(1, 4, 101)
    for bad in ({"max_new_tokens": -1}, {"temperature": -0.5}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        n = bad.pop("max_new_tokens", 3)
        with pytest.raises(InputError):
            generate(small_model, prompt, n, Sampling(**bad))
    assert torch.equal(generate(small_model, prompt, 0), prompt)


# ---- 2. greedy = transformers -------------------------------------------------------------------


def test_greedy_matches_transformers(lively):
    hf_model, model = lively
    prompt = random_prompt(4, 8, 101, seed=1)
    ours = generate(model, prompt, 20, Sampling(temperature=0))
    theirs = hf_model.generate(prompt, do_sample=False, max_new_tokens=20, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours, theirs)
    new = ours[:, 8:].tolist()
    assert all(len(set(row)) >= 5 for row in new)  # a real continuation, not one repeated token
    assert len({tuple(row) for row in new}) == 4  # that depends on the prompt


def first_new_token_index(row: list[int], start: int) -> tuple[int, int]:
    """(position k ≥ start, token) of the first token in row that did not occur before it."""
    for k in range(start, len(row)):
        if row[k] not in row[:k]:
            return k, row[k]
    raise AssertionError("no fresh token to use as eos")


def eos_ending_rows_at_different_steps(rows: list[list[int]]) -> int:
    """A token that occurs in every row before its last step, first at different steps in different rows."""
    for token in sorted(set(rows[0])):
        firsts = [row.index(token) if token in row[:-1] else None for row in rows]
        if None not in firsts and len(set(firsts)) > 1:
            return token
    raise AssertionError("no token ends the rows at different steps")


@pytest.mark.slow
def test_eos_stops_each_sequence_like_transformers(lively):
    hf_model, model = lively
    prompt = random_prompt(4, 8, 101, seed=2)  # a token that ends the rows at different steps (the weights changed)
    free = generate(model, prompt, 20, Sampling(temperature=0))[:, 8:].tolist()  # [4, 20], no eos
    for eos in (eos_ending_rows_at_different_steps(free), first_new_token_index(free[2], 2)[1]):
        ours = generate(model, prompt, 20, Sampling(temperature=0), eos_id=eos)
        # Each row up to and including its first eos, then eos until every row has finished (or 20 tokens).
        ends = [row.index(eos) + 1 if eos in row else 20 for row in free]
        expected = [row[:end] + [eos] * (max(ends) - end) for row, end in zip(free, ends)]
        assert ours[:, 8:].tolist() == expected
        assert len(set(ends)) > 1
        theirs = hf_model.generate(prompt, do_sample=False, max_new_tokens=20, eos_token_id=eos, pad_token_id=eos)
        assert torch.equal(ours, theirs)


def test_eos_stops_a_single_sequence_early(lively):
    _, model = lively
    prompt = random_prompt(1, 8, 101, seed=1)
    free = generate(model, prompt, 20, Sampling(temperature=0))[0, 8:].tolist()
    k, eos = first_new_token_index(free, 4)
    stopped = generate(model, prompt, 20, Sampling(temperature=0), eos_id=eos)[0, 8:].tolist()
    assert stopped == free[: k + 1] and stopped[-1] == eos


# ---- 3. sampling --------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible_and_private(lively):
    _, model = lively
    prompt = random_prompt(2, 4, 101)
    rng_before = torch.get_rng_state()
    torch.manual_seed(1)
    first = generate(model, prompt, 24, Sampling(seed=7))
    torch.manual_seed(2)  # the global seed plays no part
    again = generate(model, prompt, 24, Sampling(seed=7))
    assert torch.equal(first, again)
    assert not torch.equal(first, generate(model, prompt, 24, Sampling(seed=8)))
    assert not torch.equal(first[0], first[1])  # one generator, but each row draws its own tokens
    torch.set_rng_state(rng_before)
    generate(model, prompt, 5, Sampling(seed=7))
    generate(model, prompt, 5)  # unseeded: a fresh private generator
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_top_k_1_is_greedy(lively):
    _, model = lively
    prompt = random_prompt(2, 6, 101, seed=2)
    greedy = generate(model, prompt, 20, Sampling(temperature=0))
    assert torch.equal(generate(model, prompt, 20, Sampling(temperature=1.3, top_k=1, seed=0)), greedy)
    assert torch.equal(generate(model, prompt, 20, Sampling(top_p=1e-6, seed=0)), greedy)  # the nucleus of one token


def test_top_k_keeps_the_k_largest():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    kept = filter_top_k(logits, 7).isfinite()
    assert kept.sum(dim=-1).tolist() == [7] * 5
    top = logits.topk(7, dim=-1).indices
    assert kept.gather(-1, top).all()
    assert torch.equal(filter_top_k(logits, 50), logits)


def nucleus_by_brute_force(probs: list[float], p: float) -> set[int]:
    """The smallest set of most likely tokens whose probabilities sum to at least p."""
    kept, mass = set(), 0.0
    for i in sorted(range(len(probs)), key=lambda i: -probs[i]):
        kept.add(i)
        mass += probs[i]
        if mass >= p:
            return kept
    return kept


def test_top_p_keeps_the_smallest_set_reaching_p():
    generator = torch.Generator().manual_seed(0)
    logits = 2.0 * torch.randn(8, 60, generator=generator)
    for p in [0.05, 0.3, 0.5, 0.77, 0.9, 0.99, *torch.rand(6, generator=generator).tolist()]:
        kept = filter_top_p(logits, p).isfinite()
        probs = torch.softmax(logits.double(), dim=-1)
        for row in range(logits.shape[0]):
            expected = nucleus_by_brute_force(probs[row].tolist(), p)
            assert set(kept[row].nonzero().flatten().tolist()) == expected, (p, row)
    assert torch.equal(filter_top_p(logits, 1.0), logits)


def test_samples_follow_the_filtered_distribution():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0]).expand(20000, 5)
    tokens = next_token(logits, Sampling(temperature=0.5, top_k=3), generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=5).double() / len(tokens)
    expected = torch.softmax(torch.tensor([2.0, 1.5, 1.0]).double() / 0.5, dim=-1)
    assert frequencies[3:].sum() == 0
    assert torch.allclose(frequencies[:3], expected, atol=0.015)


# ---- 4. text and the command line ---------------------------------------------------------------


def test_stream_text_waits_for_whole_characters(tiny_checkpoint):
    from minigpt_geom.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    text = "The café sat on the mat 🙂 日本"
    ids = tokenizer.encode(text)
    assert any(tokenizer.decode([i]) == "\ufffd" for i in ids)  # some character is split across ids
    pieces = list(stream_text(tokenizer, ids))
    assert "".join(pieces) == text and not any("\ufffd" in piece for piece in pieces)
    broken = ids[:-1]  # cut the last character in half: its bytes can never complete
    assert "".join(stream_text(tokenizer, broken)) == tokenizer.decode(broken)


def test_cli_generate_streams_the_continuation(tiny_checkpoint, capsys):
    from minigpt_geom.cli import main
    from minigpt_geom.text.tokenizer import Tokenizer

    prompt = "The cat sat"
    argv = ["generate", "--weights", str(tiny_checkpoint), prompt, "--max-new-tokens", "20", "--seed", "3",
            "--top-k", "50", "--top-p", "0.9", "--temperature", "0.8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    model = GPT2.from_pretrained(tiny_checkpoint)
    idx = torch.tensor([tokenizer.encode(prompt)])
    new = generate(model, idx, 20, Sampling(temperature=0.8, top_k=50, top_p=0.9, seed=3), eos_id=tokenizer.eot_token)
    new_ids = [i for i in new[0, idx.shape[1] :].tolist() if i != tokenizer.eot_token]
    assert printed == prompt + tokenizer.decode(new_ids) + "\n"
    assert len(printed) > len(prompt) + 1


def test_cli_generate_empty_prompt_and_errors(tiny_checkpoint, capsys):
    from minigpt_geom.cli import main

    assert main(["generate", "--weights", str(tiny_checkpoint), "--max-new-tokens", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().err.startswith("minigpt-geom generate: weights: ")  # where they came from, at the end
    assert main(["generate", "--weights", str(tiny_checkpoint), "hello", "--max-new-tokens", "5", "--window-step",
                 "65"]) == 2
    error = capsys.readouterr().err
    assert "context of 64" in error and error.count("\n") == 1
    assert main(["generate", "--weights", str(tiny_checkpoint), "hello", "--prompts", "-"]) == 2
    assert "not both" in capsys.readouterr().err


# ---- 5. text in, text out: stop strings and a batch of prompts ------------------------------------------


class CharacterTokenizer:
    """Ids are bytes: enough for TextStream, whose stop strings are then found in any split of the text."""

    def decode_bytes(self, ids):
        return bytes(ids)


def shown_text(text: str, stop: list[str]) -> tuple[str, bool]:
    """What a TextStream shows of `text`'s bytes pushed one by one, and whether it is done."""
    stream, shown = TextStream(CharacterTokenizer(), stop), ""
    for i in text.encode("utf-8"):
        shown += stream.push(i)
    return shown + stream.finish(), stream.done


def test_text_stream_cuts_before_the_first_stop_string():
    assert shown_text("Hello world. Bye", ["."]) == ("Hello world", True)
    assert shown_text("one two\n\nthree", ["\n\n", "three"]) == ("one two", True)  # the earliest of them
    assert shown_text("abcab", ["abd"]) == ("abcab", True)  # a held-back start that never completes: shown
    assert shown_text("café ☕ done", ["☕"]) == ("café ", True)  # a stop string split across bytes
    assert shown_text("no stop here", ["STOP"]) == ("no stop here", True)
    stream = TextStream(CharacterTokenizer(), ["world"])  # nothing that may begin a stop string is shown early
    assert [stream.push(i) for i in b"hello wor"] == ["h", "e", "l", "l", "o", " ", "", "", ""]
    assert stream.push(ord("m")) == "worm" and not stream.done
    with pytest.raises(InputError, match="list of strings"):
        TextStream(CharacterTokenizer(), "\n")
    with pytest.raises(InputError, match="non-empty"):
        TextStream(CharacterTokenizer(), [""])


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    from minigpt_geom.text.tokenizer import Tokenizer

    return GPT2.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)


def test_a_batch_of_prompts_gives_each_prompt_its_own_continuation(tiny):
    model, tokenizer = tiny
    prompts = ["The cat sat", "The one", "", "the one", "A"]
    lengths = [len(tokenizer.encode(p)) for p in prompts if p]
    assert len(set(lengths)) < len(lengths) < len(prompts)  # some prompts share a batch, some run alone
    texts = generate_text(model, tokenizer, prompts, 12, Sampling(temperature=0))
    eot = tokenizer.eot_token
    for prompt, text in zip(prompts, texts):  # each as the ids-level generate gives it alone
        ids = tokenizer.encode(prompt) if prompt else [eot]
        new = generate(model, torch.tensor([ids]), 12, Sampling(temperature=0), eos_id=eot)[0, len(ids):].tolist()
        assert text == tokenizer.decode(new[:new.index(eot)] if eot in new else new), prompt
    assert len(set(texts)) > 1
    stop = texts[1][3:5]  # a stop string inside the second continuation: it ends there, without it
    stopped = generate_text(model, tokenizer, prompts, 12, Sampling(temperature=0), stop=[stop])
    assert stopped[1] == texts[1][:texts[1].index(stop)]
    assert all(s == t[:t.index(stop)] if stop in t else s == t for s, t in zip(stopped, texts))
    with pytest.raises(InputError, match="list of strings"):
        generate_text(model, tokenizer, "The cat", 5)


@pytest.mark.slow
def test_cli_generate_reads_words_stop_strings_and_a_file_of_prompts(tiny, tiny_checkpoint, tmp_path, capsys):
    from minigpt_geom.cli import main

    model, tokenizer = tiny
    common = ["--weights", str(tiny_checkpoint), "--temperature", "0", "--max-new-tokens", "80", "--quiet"]
    assert main(["generate", "The", "cat", "sat", *common]) == 0  # unquoted words: one prompt; 80 > the context
    whole = capsys.readouterr().out
    assert whole == "The cat sat" + generate_text(model, tokenizer, ["The cat sat"], 80, Sampling(temperature=0))[0] \
        + "\n"
    common[common.index("80")] = "20"
    stop = whole[len("The cat sat") + 4:][:3]
    assert main(["generate", "The cat sat", "--stop", stop, "XYZ", *common]) == 0
    assert capsys.readouterr().out == whole[:whole.index(stop, len("The cat sat"))] + "\n"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\n\nTo kill two birds\n", encoding="utf-8")
    assert main(["generate", "--prompts", str(prompts), *common]) == 0
    expected = generate_text(model, tokenizer, ["The cat sat", "To kill two birds"], 20, Sampling(temperature=0))
    assert capsys.readouterr().out == (f"==> prompt 1 <==\nThe cat sat{expected[0]}\n"
                                       f"==> prompt 2 <==\nTo kill two birds{expected[1]}\n")
