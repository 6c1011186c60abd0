"""What does a normalisation do when a model is trained with it? One budget, five variants, one table.

    python bench/norm_variants.py                     # 4 layers, d = 128, 4 heads, n_ctx 128, default budget
    python bench/norm_variants.py --steps 100         # a quicker look
    python bench/norm_variants.py --threads 1         # on a machine shared with other work

Every variant trains from the same initialisation seed on the same windows of the Python standard library's
source (its top-level modules; the last 10% of tokens held out) for the same number of steps. The table gives
each variant's validation loss beside the held-out set's unigram entropy (the loss of a model that only knows
how often each token occurs); then the logit lens of the layernorm model on held-out text, KL(p_L ‖ p_l) per
layer, beside the same for the untrained model; then every trained variant on one held-out text with
`analysis.compare` (the figure in OUT/compare.png): per variant the mean radius at ln_1, the mean angular step
and the logit lens's KL per layer, each in the variant's own geometry. The vocabulary is a small BPE trained on the same source by the
tests' textbook trainer (tests/bpe_files.py), cached with the token ids in --cache.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from bpe_files import write_vocab  # noqa: E402

from minigpt_geom import GPT2, GPT2Config, TraceRequest  # noqa: E402
from minigpt_geom.analysis.lens import logit_lens  # noqa: E402
from minigpt_geom.text.token_files import TokenData, windows  # noqa: E402
from minigpt_geom.text.tokenizer import Tokenizer  # noqa: E402
from minigpt_geom.training.collapse import unigram_entropy  # noqa: E402
from minigpt_geom.training.loop import TrainSettings, train  # noqa: E402

VARIANTS = ["layernorm", "rmsnorm", "sphere", "dyt", "none"]


def stdlib_files() -> list[Path]:
    """The standard library's top-level modules, sorted (the same on every machine with this Python)."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def vocabulary(cache: Path, merges: int, sample_bytes: int) -> Path:
    """A folder with vocab.json + merges.txt: BPE trained on the first sample_bytes of the source (cached)."""
    folder = cache / f"vocab-{merges}-{sample_bytes}"
    if not (folder / "merges.txt").is_file():
        sample = "".join(f.read_text(encoding="utf-8", errors="replace") for f in stdlib_files())[:sample_bytes]
        print(f"training a BPE vocabulary of {merges} merges on {sample_bytes:,} characters …", flush=True)
        write_vocab(folder, merges, text=sample)
    return folder


def token_data(cache: Path, vocab: Path, max_files: int | None) -> TokenData:
    """The source tokenised (cached as .npy), the last 10% of ids held out."""
    path = cache / f"{vocab.name}-{max_files}.npy"
    if not path.is_file():
        tokenizer = Tokenizer.from_pretrained(vocab)
        ids = np.array([i for path in stdlib_files()[:max_files]
                        for i in tokenizer.encode_ordinary(path.read_text(encoding="utf-8")) + [tokenizer.eot_token]],
                       dtype=np.uint16)
        np.save(path, ids)
    ids = np.load(path, mmap_mode="r")
    split = len(ids) - len(ids) // 10
    return TokenData(ids[:split], ids[split:], {"vocab_size": int(ids.max()) + 1})


@torch.no_grad()
def lens_kl(model, ids: np.ndarray, context: int, n_windows: int) -> list[float]:
    """Mean KL(p_L ‖ p_l) over n_windows held-out windows, per layer l = 0 … L."""
    starts = torch.linspace(0, len(ids) - context - 1, n_windows).long()
    x, _ = windows(ids, starts, context)
    _, trace = model(x, trace=TraceRequest(states=True))
    return logit_lens(model, trace).kl_to_final.mean(dim=(1, 2)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per variant (default: 300)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows of 128 tokens a step (default: 8)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--merges", type=int, default=1000, help="BPE merges of the vocabulary (default: 1000)")
    parser.add_argument("--max-files", type=int, default=None, help="only the first N modules (default: all)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "minigpt_geom" / "norm_variants")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster on a machine others share)")
    parser.add_argument("--out", type=Path, default=None, help="keep each variant's checkpoint in OUT/<variant>")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    args.cache.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary(args.cache, args.merges, sample_bytes=400_000)
    data = token_data(args.cache, vocab, args.max_files)
    config = GPT2Config(n_layer=4, n_head=4, n_embd=128, n_ctx=128, vocab_size=Tokenizer.from_pretrained(vocab).n_vocab)
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                             warmup_steps=max(args.steps // 20, 1), eval_interval=args.steps, eval_windows=64,
                             sample_tokens=0, seed=args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(data.train):,} training and "
          f"{len(data.val):,} held-out tokens, vocabulary {config.vocab_size}; {args.steps} steps x "
          f"{args.batch_size} x {config.n_ctx} tokens, lr {args.lr}, seed {args.seed}", flush=True)

    out = args.out or args.cache / "runs"
    rows, trained = [], {}
    for variant in args.variants:
        model = GPT2(config, norm=variant, seed=args.seed)
        began = time.perf_counter()
        log = train(model, data, vocab, out / variant, settings, overwrite=True)
        rows.append((variant, log[0].val_loss, log[-1].val_loss, time.perf_counter() - began))
        trained[variant] = model

    entropy = unigram_entropy(np.asarray(data.val))
    print(f"\n| variant | validation loss at step 0 | after {args.steps} steps | held-out unigram entropy | seconds |")
    print("|---|---|---|---|---|")
    for variant, first, last, seconds in rows:
        print(f"| {variant} | {first:.3f} | {last:.3f} | {entropy:.3f} | {seconds:.0f} |")

    if "layernorm" in trained:
        kl_trained = lens_kl(trained["layernorm"], data.val, config.n_ctx, 16)
        kl_random = lens_kl(GPT2(config, seed=args.seed), data.val, config.n_ctx, 16)
        print("\nlogit lens of the layernorm model on 16 held-out windows: mean KL(p_L ‖ p_l), nats")
        print("| layer l | trained | untrained |\n|---|---|---|")
        for layer, (a, b) in enumerate(zip(kl_trained, kl_random)):
            print(f"| {layer} | {a:.3f} | {b:.3f} |")
    if len(trained) >= 2:
        compare_trained(trained, vocab, data, out)


def compare_trained(trained: dict, vocab: Path, data: TokenData, out: Path) -> None:
    """Every trained variant on one held-out text (the first 96 held-out tokens): tables and a figure."""
    from minigpt_geom.analysis import plots
    from minigpt_geom.analysis.compare import compare_models

    tokenizer = Tokenizer.from_pretrained(vocab)
    text = tokenizer.decode([int(i) for i in data.val[:96]])
    comparison = compare_models(trained, tokenizer, text)
    print(f"\ncompare on {len(comparison.words)} held-out tokens (means over positions); layer 0 = embedding")
    for field, what in (("radius", "radius ‖x̂‖ at the site reading x_l (ln_1; ln_f for the last)"),
                        ("angular_step", "angular step into x_l, radians, in each variant's geometry"),
                        ("kl_to_final", "logit lens KL(p_L ‖ p_l), nats")):
        names = list(trained)
        print(f"\n{what}\n| layer | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
        layers = sorted({row["layer"] for row in comparison.rows})
        for layer in layers:
            values = [next(r[field] for r in comparison.rows if r["model"] == n and r["layer"] == layer) for n in names]
            print(f"| {layer} | " + " | ".join(f"{abs(v) if abs(v) < 5e-4 else v:.3f}" for v in values) + " |")
    path = plots.save_figure(plots.compare_figure(comparison), out / "compare.png")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
