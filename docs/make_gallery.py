"""Make the gallery: every figure of minigpt-geom and a screenshot of its report, from a model trained here.

    python docs/make_gallery.py --docs           # the full budget (about 9 CPU minutes), into docs/ itself
    python docs/make_gallery.py --tiny --out DIR # a smoke run of every step in seconds: tests/test_docs.py

It needs no network and no weights: the corpus is the docstrings of Python's own standard library (every
machine with Python has them), the tokenizer a byte-level BPE trained on them with Hugging Face `tokenizers`
(in the test extra), the model a 4-layer GPT-2 trained on them with `minigpt_geom.training.loop`. Every
figure is then drawn by the command a user would run (`trajectory`, `lens`, `drift`, `svd`, `embeddings`,
`probe`, `qk`, `patch`, `attribute`, `report`), or, for the two the report alone draws, by `analysis.plots`.
It writes DIR/gallery.md and its pictures under DIR/gallery/ (DIR = a new temporary folder unless --out, or
docs/ with --docs), the generated part of gallery.md between two markers, the text around them kept; the report's
screenshot needs Chromium and is left out, saying so, without it. A figure of the code before issue 18,
kept under DIR/gallery/before/ by hand, is shown beside its new form when it is there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import shutil
import tempfile
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STDLIB_MODULES = (
    "builtins os os.path re json collections itertools functools pathlib string textwrap math statistics random "
    "datetime calendar decimal fractions heapq bisect array enum typing dataclasses abc contextlib operator copy "
    "pprint shutil glob fnmatch tempfile io csv configparser logging argparse subprocess threading queue socket "
    "email http.client urllib.parse zipfile tarfile gzip hashlib hmac secrets base64 struct codecs unicodedata "
    "difflib inspect ast dis traceback warnings weakref gc sys time sched asyncio concurrent.futures "
    "multiprocessing sqlite3 xml.etree.ElementTree html html.parser unittest doctest pdb timeit cmd shlex locale "
    "gettext ipaddress uuid zlib pickle shelve"
).split()
PROMPT = "Return a new list containing all items from the iterable in ascending order."
WORD = " iterable"  # the highlighted word of the trajectory and the report
PROBE_WORDS = ("list", "file", "string", "object", "value", "function", "module", "number", "name", "path",
               "error", "default", "class", "type", "time", "data")
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, n_ctx=128)
TINY_SHAPE = dict(n_layer=2, n_head=2, n_embd=32, n_ctx=64)  # --tiny: every step runs, nothing is worth looking at
VOCAB = 2048
MIN_COUNT = 5  # full-vocabulary rankings name words seen at least this often in the corpus


def docstrings(modules=STDLIB_MODULES) -> str:
    """The docstrings of the modules, their public members and those members' methods, each once, in order."""
    seen, parts = set(), []

    def add(obj) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        doc = inspect.getdoc(obj)
        if doc:
            parts.append(doc)

    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module this Python was built without (e.g. sqlite3): its docstrings are skipped
            continue
        add(module)
        for attribute in sorted(dir(module)):
            member = getattr(module, attribute, None)
            if attribute.startswith("_") or not (inspect.isclass(member) or inspect.isroutine(member)):
                continue
            add(member)
            if inspect.isclass(member):
                for method in sorted(vars(member)):
                    if not method.startswith("_") and inspect.isroutine(vars(member)[method]):
                        add(vars(member)[method])
    return "\n\n".join(parts)


def train_tokenizer(corpus: Path, folder: Path, vocab_size: int = VOCAB) -> Path:
    """A byte-level BPE in GPT-2's files (vocab.json, merges.txt), trained on the corpus by HF `tokenizers`."""
    try:
        from tokenizers import ByteLevelBPETokenizer
    except ImportError:
        sys.exit("the gallery trains its tokenizer with Hugging Face tokenizers: pip install tokenizers")
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train([str(corpus)], vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"],
                    show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_model(str(folder))
    return folder


def train_model(corpus: Path, tokenizer: Path, out: Path, steps: int, shape: dict) -> tuple[Path, Path]:
    """A GPT-2 of `shape` trained for `steps` steps of 16 windows of n_ctx tokens on the corpus: (the checkpoint
    folder, the folder of its token files, whose counts the rankings' --vocab-from reads)."""
    from minigpt_geom.config import GPT2Config
    from minigpt_geom.model.gpt2 import GPT2
    from minigpt_geom.text.tokenizer import Tokenizer
    from minigpt_geom.training.loop import TrainSettings, load_corpus, train

    vocab = Tokenizer.from_pretrained(tokenizer).n_vocab
    model = GPT2(GPT2Config(vocab_size=vocab, **shape), seed=0)  # freshly initialised
    from minigpt_geom.text.token_files import cache_folder

    data = load_corpus(corpus, tokenizer, cache_dir=out.parent / "tokens", progress=False)
    settings = TrainSettings(steps=steps, batch_size=16, context=shape["n_ctx"], learning_rate=2e-3,
                             warmup_steps=max(1, steps // 20), eval_interval=max(steps, 1), eval_windows=4,
                             sample_tokens=0)
    log = train(model, data, tokenizer, out, settings, progress=False)
    losses = [row.val_loss for row in log if row.val_loss is not None]
    print(f"trained {steps} steps: validation loss {losses[0]:.2f} -> {losses[-1]:.2f} nats")
    return out, cache_folder(corpus, tokenizer, cache_dir=out.parent / "tokens")


def run(*argv: str) -> None:
    """One minigpt-geom command, its printed tables swallowed; stop the gallery if it fails."""
    from minigpt_geom.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main([*argv, "--quiet"])
    if code != 0:
        sys.exit(f"minigpt-geom {argv[0]} failed (exit {code})")


def python_figures(weights: Path, out: Path, dpi: int) -> None:
    """The two figures only the report draws: the norms across layers and one head's attention pattern."""
    from minigpt_geom.analysis import plots
    from minigpt_geom.text.pretrained import load_model_and_tokenizer
    from minigpt_geom.analysis.text import token_words, trace_text

    model, tokenizer = load_model_and_tokenizer(str(weights))
    ids, _, trace = trace_text(model, tokenizer, PROMPT, keep_attention=True)
    words = token_words(tokenizer, ids)
    plots.save_figure(plots.norm_profile_figure(trace), out / "norms.png", dpi=dpi)
    plots.save_figure(plots.attention_figure(trace.attention.pattern[1, 0, 0], words, 1, 0), out / "attention.png",
                      dpi=dpi)


def corrupted_prompt(weights: Path) -> str:
    """PROMPT with WORD swapped for the word whose unembedding row is nearest to it (by cosine) among those that
    keep the prompt's length in tokens: the corrupted prompt the patching map patches into."""
    import torch

    from minigpt_geom.text.pretrained import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(weights))
    ids = tokenizer.encode(PROMPT)
    word = tokenizer.encode(WORD)
    where = ids.index(word[0]) if len(word) == 1 and word[0] in ids else len(ids) // 2
    rows = model.unembedding_rows()[:tokenizer.n_vocab].detach()
    cosine = torch.nn.functional.cosine_similarity(rows, rows[ids[where]][None], dim=-1)
    for other in cosine.argsort(descending=True).tolist()[1:]:
        text = tokenizer.decode(ids[:where] + [other] + ids[where + 1:])
        if len(tokenizer.encode(text)) == len(ids):
            return text
    sys.exit("no word keeps the prompt's length when swapped in: the gallery cannot draw the patching map")


def screenshot(page: Path, png: Path) -> bool:
    """A 1400-px-wide picture of the report's first screens by headless Chromium; False without Chromium."""
    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(name)), None)
    if browser is None:
        return False
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={page.parent / 'profile'}", "--window-size=1400,2200",
                    "--virtual-time-budget=4000", f"--screenshot={png}", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    return png.is_file()


# name -> (picture under gallery/, what it shows, what changed in issue 18)
FIGURES = {
    "trajectory": ("trajectory/trajectory.png", "the highlighted word's path through the layers, every token's "
                   "final-norm output projected to 3-D by PCA, with the cosine to its prediction beside it",
                   "the logit lens's top word written at every layer of the path; a 2-D panel of cos(LN_f(x_l), "
                   "u_pred) per layer shows the approach that depth hides; other paths faint; the title names "
                   "what the points are for the model's own final norm (x_l itself without one)"),
    "lens": ("lens/lens_grid.png", "positions × layers: the logit lens's top word, shaded by its probability",
             "one logarithmic colour scale from 10⁻³ to 1 for every model (a weak model is no longer white); "
             "a panel of the rank of the text's own next word at every layer; labels in mathtext"),
    "drift": ("drift/drift.png", "per layer, the mean drift LN_f(x_l[t])·(e_{t+1} − e_t) and the lens's "
              "log-probabilities of the next and the current word",
              "labels in mathtext; the ± standard-error band drawn only when it can be seen, otherwise its size "
              "given in the legend"),
    "drift_by_position": ("drift/drift_by_position.png", "the mean drift at each position of the window",
                          "every layer on one symmetric colour scale (not each scaled by its own maximum), so "
                          "layers can be compared; the number of windows averaged in the title"),
    "svd": ("svd/svd_layer0_qk_spectrum.png", "each head's singular values of W_QK, one small panel per head",
            "small multiples on shared log axes, the other heads grey behind each, and r₉₀ (singular values "
            "holding 90 % of Σσ) instead of eight overlapping cumulative curves told apart by colour"),
    "reach": ("embeddings/embeddings_reach.png", "the words ln_f's output reaches most and least easily, "
              "by six measures", "drawn by `embeddings` at last; panel titles in mathtext instead of code "
              "names; long tokens cut; words seen fewer than 5 times in the corpus left out (--vocab-from)"),
    "probe": ("probe/probe_layer0.png", "each head's best match for each probed word, query-key and key-value",
              "drawn by `probe` at last; long tokens cut with their length; titles in mathtext; rankings "
              "restricted to words seen in the corpus"),
    "qk": ("qk/qk_layer0_head0.png", "a head's strongest query-key word pairs over the vocabulary",
           "drawn by `qk` at last; square cells, the map left out when one query holds every pair; "
           "words seen in the corpus only, so untrained rows of E no longer fill the list"),
    "attention": ("attention.png", "one head's causal attention pattern", "labels in mathtext"),
    "norms": ("norms.png", "‖x_l‖, the updates and what each norm site makes of them, per layer",
              "a legend in a readable size"),
    "patch": ("patch/patch.png", "activation patching (`minigpt-geom patch`): the prompt with its highlighted word "
              "swapped for its nearest word, each layer and position of the residual stream set back to the clean "
              "run's; the logit difference of the two prompts' answers, normalised (1 = the clean run)",
              "new in issue 26"),
    "attribute": ("attribute/attribute.png", "direct logit attribution (`minigpt-geom attribute`): each block's "
                  "attention and MLP, and each head, along e_answer − e_wrong through ln_f with its scale frozen",
                  "new in issue 26"),
    "report": ("report.png", "the HTML report at 1400 px (`minigpt-geom report`)",
               "a research page: word, layer and head chosen in the page; text coloured by loss; every head's "
               "pattern in a grid, one enlarged on click; the 3-D view fills its box with PCA axes named by "
               "variance; tables scroll in their boxes"),
}


def write_markdown(out: Path, pictures: Path, cost: str, steps: int, screenshot_made: bool) -> Path:
    """DIR/gallery.md: each figure, what it shows, what issue 18 changed, and its former self when kept."""
    lines = [
        "# Gallery",
        "",
        "Every figure of `minigpt-geom`, drawn from a 4-layer GPT-2 (d = 128, 4 heads, context 128, a 2048-word "
        "byte-level BPE) trained here on the docstrings of Python's standard library. Made by one script, no "
        "network, no weights:",
        "",
        "```",
        f"python docs/make_gallery.py --docs   # {steps} steps; {cost}",
        "```",
        "",
        f"The text of the per-text figures: `{PROMPT}` (highlighted: `{WORD!r}`).",
        "Before/after: a figure drawn by the code before issue 18 is shown beside the new one when it was kept.",
        "",
    ]
    for name, (path, shows, changed) in FIGURES.items():
        picture = pictures / path
        if name == "report" and not screenshot_made:
            lines += [f"## {name}", "", "(no screenshot: Chromium was not found when this gallery was made)", ""]
            continue
        lines += [f"## {name}", "", f"{shows[0].upper()}{shows[1:]}.", "",
                  f"![{name}]({picture.relative_to(out).as_posix()})", ""]
        before = pictures / "before" / f"{name}.png"
        if before.is_file():
            lines += [f"Changed in issue 18: {changed}. Before:", "",
                      f"<img alt=\"{name}, before\" src=\"{before.relative_to(out).as_posix()}\" width=\"480\">", ""]
    path = out / "gallery.md"
    path.write_text(with_hand_written_text(path, "\n".join(lines)), encoding="utf-8")
    return path


BEGIN, END = "<!-- generated by docs/make_gallery.py: from here -->", "<!-- generated until here -->"


def with_hand_written_text(path: Path, generated: str) -> str:
    """The page with its generated part between BEGIN and END replaced by `generated`, every hand-written line
    outside the markers kept; a page without the markers is refused, never overwritten."""
    if not path.exists():
        return f"{BEGIN}\n{generated}\n{END}\n"
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has hand-written text and no {BEGIN} … {END} markers around a generated part: "
                         f"add them, or give another --out")
    before, rest = text.split(BEGIN, 1)
    return f"{before}{BEGIN}\n{generated}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    """Train, draw, write the gallery."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    place = parser.add_mutually_exclusive_group()
    place.add_argument("--out", type=Path, default=None,
                       help="folder for gallery.md and gallery/ (default: a new temporary folder, printed)")
    place.add_argument("--docs", action="store_true",
                       help="write into docs/ itself: the committed gallery (its hand-written text is kept)")
    parser.add_argument("--steps", type=int, default=250, help="training steps (default: 250, the full budget)")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke run: a 2-layer model, 2 steps on the docstrings of 6 modules, figures at 30 dpi")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the corpus, tokenizer and checkpoint (default: OUT/gallery-work, removed)")
    parser.add_argument("--reuse", action="store_true",
                        help="draw from the checkpoint a previous run left in --work instead of training again")
    args = parser.parse_args(argv)
    args.out = HERE if args.docs else args.out or Path(tempfile.mkdtemp(prefix="gallery-"))
    began = time.process_time()  # CPU seconds of this process and its threads (the machine may be shared)
    pictures = args.out / "gallery"
    work = args.work or args.out / "gallery-work"
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    steps, shape, dpi = (2, TINY_SHAPE, "30") if args.tiny else (args.steps, SHAPE, "100")
    if args.reuse and (work / "model" / "model.safetensors").is_file():
        from minigpt_geom.text.token_files import cache_folder

        weights, tokens = work / "model", cache_folder(corpus, work / "tokenizer", cache_dir=work / "tokens")
    else:
        (corpus / "stdlib.txt").write_text(docstrings(STDLIB_MODULES[:6] if args.tiny else STDLIB_MODULES),
                                           encoding="utf-8")
        tokenizer = train_tokenizer(corpus / "stdlib.txt", work / "tokenizer")
        weights, tokens = train_model(corpus, tokenizer, work / "model", steps, shape)
    w = ["--weights", str(weights), "--dpi", dpi]
    vocab = ["--vocab-from", str(tokens), "--min-count", str(MIN_COUNT)]  # the training ids, counted
    run("trajectory", PROMPT, *w, "--word", WORD, "-o", str(pictures / "trajectory"))
    run("lens", PROMPT, *w, "-o", str(pictures / "lens"))
    run("drift", str(corpus), *w, "--context", str(shape["n_ctx"]), "--max-windows", "2" if args.tiny else "64", "-o", str(pictures / "drift"))
    run("svd", *w, "--layer", "0", str(shape["n_layer"] - 1), "--circuits", "QK", "-o", str(pictures / "svd"), *vocab)
    run("embeddings", *w, "-o", str(pictures / "embeddings"), *vocab)
    run("probe", *PROBE_WORDS, *w, "--layer", "0", str(shape["n_layer"] - 1), "--leading-space", "-o",
        str(pictures / "probe"), *vocab)
    run("qk", *w, "--layer", "0", "--head", "0", "-o", str(pictures / "qk"), *vocab)
    run("patch", PROMPT, corrupted_prompt(weights), *w, "-o", str(pictures / "patch"))
    run("attribute", PROMPT, *w, "-o", str(pictures / "attribute"))
    python_figures(weights, pictures, int(dpi))
    run("report", PROMPT, *w, "--word", WORD, "-o", str(work / "report.html"))
    made = screenshot(work / "report.html", pictures / "report.png")
    for leftover in pictures.rglob("*"):  # the tables and CSVs are the commands' business, not the gallery's
        if leftover.is_file() and leftover.suffix != ".png":
            leftover.unlink()
    cost = f"{(time.process_time() - began) / 60:.1f} CPU minutes" + (
        " to draw, from the checkpoint of an earlier run" if args.reuse else " in all")
    page = write_markdown(args.out, pictures, cost, steps, made)
    if args.work is None:
        shutil.rmtree(work)
    print(f"wrote {page} and {sum(1 for _ in pictures.rglob('*.png'))} pictures under {pictures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
