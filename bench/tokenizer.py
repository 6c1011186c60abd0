"""Encoding throughput of minigpt_geom's tokenizer (and its fast backend) against transformers' GPT-2 BPE and tiktoken.

Self-contained: it generates a few MB of mixed text, trains a byte-level BPE vocabulary on it with
Hugging Face `tokenizers` (fast), writes it in GPT-2's layout (256 bytes, merges in order, <|endoftext|>
last), loads it into each tokenizer, checks they all give identical ids, and times `encode`.

    python bench/tokenizer.py [--mb 2] [--merges 20000] [--repeats 3] [--letters 100000]

Each timing is one `encode` of the whole text on a freshly loaded tokenizer (its cache starts empty);
the best of --repeats is reported. Then BPE's worst case: one piece of --letters random letters (no
space or digit for the regex to cut at), whose merges a quadratic BPE takes minutes over.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EOT = "<|endoftext|>"


def make_text(megabytes: float, seed: int = 0) -> str:
    """English-like words with a Zipf frequency, capitals, digits, punctuation, code-ish lines and some Unicode."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    words = ["".join(rng.choices(letters, weights, k=rng.choice([1, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 10])))
             for _ in range(30_000)]
    words += ["café", "naïve", "straße", "Ελλάδα", "москва", "日本語", "中文", "한국어", "😀", "👩‍💻", "ångström"]
    rng.shuffle(words)
    zipf = [1 / (rank + 1) for rank in range(len(words))]
    out, size = [], 0
    while size < megabytes * 1e6:
        line = rng.choices(words, zipf, k=rng.randint(4, 20))
        for k in range(len(line)):
            r = rng.random()
            if r < 0.08:
                line[k] = line[k].capitalize()
            elif r < 0.12:
                line[k] = str(rng.randint(0, 10 ** rng.randint(1, 6)))
            elif r < 0.2:
                line[k] += rng.choice([",", ".", ";", ":", "!", "?", "'s", "'ll", "n't", ")", '"'])
        text = " ".join(line)
        if rng.random() < 0.05:
            text = "    " + text.replace(" ", "_", 2) + "()  # " + rng.choice(words)
        text += rng.choice(["\n", "\n", "\n\n", "  \n", "\r\n", "\t\n"])
        out.append(text)
        size += len(text.encode("utf-8"))
    return "".join(out)


def write_vocabulary(text: str, num_merges: int, folder: Path) -> int:
    """Train merges with HF `tokenizers` and write vocab.json + merges.txt in GPT-2's layout; return #merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from minigpt_geom.text.tokenizer import bytes_to_unicode

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer_tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + num_merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    trainer_tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    trained = json.loads(trainer_tok.to_str())["model"]["merges"]
    # GPT-2 layout: ids 0..255 are the bytes in the table's order, then one new token per merge, then EOT.
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    merges = []
    for pair in trained:
        first, second = pair if isinstance(pair, list) else pair.split(" ")
        if first + second not in vocab:  # keep ids in merge order: one new token per merge
            vocab[first + second] = len(vocab)
            merges.append(f"{first} {second}")
    vocab[EOT] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(merges)


def load_candidates(folder: Path) -> dict:
    """name -> (loader returning a fresh encode function)."""
    import tiktoken
    import transformers
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    from minigpt_geom.text.fast_tokenizer import FastTokenizer
    from minigpt_geom.text.tokenizer import Tokenizer

    transformers.logging.set_verbosity_error()  # no "sequence longer than 1024" warning
    vocab, merges = str(folder / "vocab.json"), str(folder / "merges.txt")
    eot = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))[EOT]

    def ours():
        return Tokenizer.from_files(vocab, merges).encode

    def ours_fast(library):
        return lambda: FastTokenizer(vocab, merges, library=library).encode_ordinary

    def python_gpt2():
        if issubclass(transformers.GPT2Tokenizer, transformers.PreTrainedTokenizer):  # transformers < 5
            tok = transformers.GPT2Tokenizer(vocab, merges)
        else:
            # transformers 5 made GPT2Tokenizer a wrapper of the Rust `tokenizers`. Its Python GPT-2 BPE lives on,
            # line for line, in ClvpTokenizer, which only adds an English text normalizer: switch that off.
            class PythonGPT2Tokenizer(transformers.ClvpTokenizer):
                normalizer = property(lambda self: (lambda text: text))

            tok = PythonGPT2Tokenizer(vocab, merges)
        return lambda text: tok.encode(text, add_special_tokens=False)

    def rust_gpt2():
        tok = transformers.GPT2Tokenizer.from_pretrained(str(folder))
        return lambda text: tok.encode(text, add_special_tokens=False)

    def tik():
        os.environ["TIKTOKEN_CACHE_DIR"] = ""
        ranks = data_gym_to_mergeable_bpe_ranks(merges, vocab)
        return tiktoken.Encoding("bench", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={EOT: eot}).encode_ordinary

    python_name = "transformers GPT2Tokenizer (Python)"
    candidates = {"minigpt_geom": ours, "minigpt_geom fast backend (tiktoken)": ours_fast("tiktoken"),
                  "minigpt_geom fast backend (tokenizers)": ours_fast("tokenizers"), python_name: python_gpt2}
    if not issubclass(transformers.GPT2Tokenizer, transformers.PreTrainedTokenizer):
        candidates["transformers GPT2Tokenizer (Rust, v5)"] = rust_gpt2
    candidates["tiktoken (Rust, 1 thread)"] = tik
    return candidates


def main() -> None:
    """Generate text, build the vocabulary, check ids agree, print MB/s of each tokenizer."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=2.0, help="size of the generated text in MB (default 2)")
    parser.add_argument("--merges", type=int, default=20_000, help="BPE merges to train (default 20000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tokenizer, best kept (default 3)")
    parser.add_argument("--letters", type=int, default=100_000,
                        help="length of the one-piece text of random letters (default 100000)")
    args = parser.parse_args()

    import transformers

    text = make_text(args.mb)
    megabytes = len(text.encode("utf-8")) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        num_merges = write_vocabulary(text, args.merges, folder)
        print(f"text: {megabytes:.2f} MB; vocabulary: 256 bytes + {num_merges} merges + {EOT} "
              f"(trained in {time.perf_counter() - start:.1f} s); transformers {transformers.__version__}")
        candidates = load_candidates(folder)
        results = time_candidates(candidates, text, args.repeats)
        # The Python GPT2Tokenizer's BPE is quadratic in the piece: minutes on the one-piece text.
        letters = "".join(random.Random(1).choices("abcdefghijklmnopqrstuvwxyz", k=args.letters))
        quick = {name: load for name, load in candidates.items() if "Python" not in name}
        long_results = time_candidates(quick, letters, args.repeats)

    print(f"\n{'tokenizer':40} {'MB/s':>8} {'seconds':>8}  same ids as minigpt_geom")
    for name, (seconds, same) in results.items():
        print(f"{name:40} {megabytes / seconds:8.2f} {seconds:8.2f}  {same}")
    python = next(v for k, v in results.items() if "Python" in k)
    print(f"\nminigpt_geom / transformers Python GPT2Tokenizer: {python[0] / results['minigpt_geom'][0]:.2f}x")

    print(f"\none piece of {args.letters} random letters (the Python GPT2Tokenizer is left out: quadratic)")
    print(f"{'tokenizer':40} {'seconds':>8}  same ids as minigpt_geom")
    for name, (seconds, same) in long_results.items():
        print(f"{name:40} {seconds:8.2f}  {same}")
    print("\nall identical ids:", all(same for *_, same in [*results.values(), *long_results.values()]))


def time_candidates(candidates: dict, text: str, repeats: int) -> dict[str, tuple[float, bool]]:
    """name -> (best seconds of `repeats` encodes of `text`, whether its ids equal the first candidate's)."""
    results, reference = {}, None
    for name, load in candidates.items():
        best, ids = float("inf"), None
        for _ in range(repeats):
            encode = load()  # fresh instance: empty cache
            start = time.perf_counter()
            ids = encode(text)
            best = min(best, time.perf_counter() - start)
        reference = ids if reference is None else reference
        results[name] = (best, ids == reference)
    return results


if __name__ == "__main__":
    main()
