"""One self-contained HTML page about a text: a research page on its words' geometry, offline in one file.

`build_report(model, tokenizer, text) -> str`. In the page one chooses a word, a layer and a head:
  - the text, each token coloured by its loss −log p(w_t | w_<t) (click a token to choose it);
  - the words' trajectories in 3-D (PCA, each axis named with its share of the variance), the chosen word's
    path in red with the logit lens's top word at each layer, its predicted word a star; beside it the
    cosine of the chosen word's state to its prediction's unembedding row, per layer;
  - the chosen word's logit lens, one row a layer;
  - every head's attention pattern as a small-multiple grid (layer × head), one enlarged on click;
  - the lens grid of every position, the norms and radii across layers, the drift (figures as inline PNGs);
  - activation patching into a corrupted copy of the text (the chosen word swapped, or one given), and the
    direct logit attribution of the last word's prediction (patching.py, attribution.py).

Nothing is fetched: figures are PNGs as base64 data URIs, the data is inline JSON, and the interactive views
are drawn by a small hand-written canvas renderer (report_template.html). A plotting library's offline
bundle (plotly.js, several MB minified) would be larger than the whole page and its data for a 124M model,
for views that need only points, lines, labels and hover.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..model.gpt2 import GPT2
from ..model.variants import geometry_summary
from . import plots
from .attribution import text_attribution
from .circuits import check_head, check_layer
from .drift import text_drift
from .lens import LensResult, logit_lens
from .patching import ids_patching, nearest_word
from .tables import significant
from .text import encode_text, token_words, trace_text
from .trajectory import Trajectory, choose_highlight, word_trajectory

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from tqdm import tqdm

    from ..text.tokenizer import Tokenizer

TEMPLATE = "report_template.html"
REPORT_STEPS = 5  # forward pass; lens and trajectory; figures; drift; patching and attribution
PATCHED_POSITIONS = 32  # up to this many tokens the page patches x_l at every position; beyond, each head's output
GRID_TOKENS = 128  # attention patterns in the page cover the first 128 positions: L·H·128² bytes at most
DATA_DIGITS = 6  # significant digits of the numbers in the page's JSON; the page shows 4 (sig in the template)
TITLE_CHARACTERS = 70  # a default title is the text's start, cut at a word boundary near this length


def model_summary(model: GPT2) -> str:
    """The report's first line: the model's shape and its norms, with √d where one of them is a sphere of that
    radius (DyT's box and an LN-free model have none)."""
    config = model.config
    geometry = geometry_summary({name: site.variant for name, site in model.norm_sites().items()})
    spheres = any(site.variant.geometry.radius.startswith("√d") for site in model.norm_sites().values())
    radius = f" (√d = {math.sqrt(config.n_embd):.4g})" if spheres else ""
    return (f"Model: {config.n_layer} layers, {config.n_head} heads, d = {config.n_embd}, context {config.n_ctx}, "
            f"vocabulary {config.vocab_size}; norms: {geometry}{radius}")


def fill_template(template: str, **values: str) -> str:
    """Replace each {{name}} by its value; every placeholder must be given."""
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)


def png_img(png: bytes, alt: str) -> str:
    """An <img> whose source is the PNG itself (a base64 data URI)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def figure_img(fig: Figure, alt: str, dpi: int = 100) -> str:
    """An inline <img> of a matplotlib figure."""
    return png_img(plots.figure_png(fig, dpi=dpi), alt)


# "</script>", "<!--" or "<script" inside a <script> element would change how the page parses; written as
# JSON \u escapes, <, > and & read the same to JSON.parse and can form none of them.
SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element: every <, > and & written as a \\u escape."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(SCRIPT_ESCAPES)


def short_title(text: str, most: int = TITLE_CHARACTERS) -> str:
    """The text's start as a title: whole if short, else cut at the last space before `most` characters, "…"."""
    text = " ".join(text.split())
    if len(text) <= most:
        return text
    cut = text.rfind(" ", 0, most)
    return text[:cut if cut > most // 2 else most].rstrip() + " …"


def rounded(values: torch.Tensor | np.ndarray, digits: int = DATA_DIGITS) -> list:
    """A tensor or array as nested lists of floats to `digits` significant digits (JSON of a sensible size
    that keeps 1.5e-23 as it is, where rounding to decimals would make it 0)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    return np.array([float(f"{v:.{digits}g}") for v in array.ravel()]).reshape(array.shape).tolist()


def token_losses(logits: torch.Tensor, ids: Sequence[int]) -> list[float | None]:
    """−log p(w_t | w_<t) in nats for every token of one text (logits [T, V]); None for the first, unpredicted."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [T, V]
    following = torch.as_tensor(list(ids)[1:], device=logits.device)
    losses = -logp[:-1].gather(-1, following[:, None])[:, 0]  # position t−1 predicts token t
    return [None] + rounded(losses)


def attention_data(patterns: torch.Tensor, limit: int = GRID_TOKENS) -> dict:
    """Every head's pattern a_ij of the first `limit` positions, [L, H, n, n] as one base64 string of bytes
    round(255 · a_ij) in layer, head, query, key order (the page's grid reads them back)."""
    L, H, T, _ = patterns.shape
    n = min(T, limit)
    quantised = (patterns[:, :, :n, :n].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return {"layers": L, "heads": H, "tokens": n, "total": T,
            "bytes": base64.b64encode(quantised.tobytes()).decode("ascii")}


def lens_data(lens: LensResult, decode: Callable[[int], str]) -> dict:
    """The logit lens as the page's tables read it: per layer l and position t, fields [L+1][T] (top [L+1][T][k])."""
    ids = lens.top_ids[:, 0].tolist()  # [L+1][T][k]
    return {
        "top": [[[decode(i) for i in cell] for cell in row] for row in ids],
        "topProb": rounded(lens.top_probs[:, 0]),
        "predProb": rounded(lens.prediction_prob[:, 0]),
        "rank": lens.prediction_rank[:, 0].tolist(),
        "kl": rounded(lens.kl_to_final[:, 0]),
        "entropy": rounded(lens.entropy[:, 0]),
        "step": rounded(lens.angular_step[:, 0]),
        "path": rounded(lens.angular_path[:, 0]),
    }


def page_data(trajectory: Trajectory, lens: LensResult, losses: Sequence[float | None], patterns: torch.Tensor,
              decode: Callable[[int], str], layer: int, head: int, vocab_size: int) -> dict:
    """Everything the page's scripts draw, as one JSON object."""
    return {
        "words": trajectory.words,
        "highlight": trajectory.highlight,
        "layer": layer,
        "head": head,
        "coords": rounded(trajectory.coords),  # [L+1][T][3]
        "axes": axis_names(trajectory),
        "predictions": [decode(int(i)) for i in lens.prediction[0]],
        "predictionCoords": rounded(trajectory.prediction_coords),  # [T][3]
        "cosines": rounded(trajectory.target_cosines),  # [L+1][T]
        "losses": losses,
        "maxLoss": float(np.log(vocab_size)),  # the loss of a uniform guess: the colour scale's top
        "lens": lens_data(lens, decode),
        "attention": attention_data(patterns),
        "pointLabel": "ln_f(x_l)",
    }


def axis_names(trajectory: Trajectory) -> list[str]:
    """The 3-D view's axis names: 'PC1 (37 % of variance)' for PCA, 'UMAP 1' otherwise."""
    if trajectory.explained_variance is None:
        return [f"UMAP {i + 1}" for i in range(3)]
    return [f"PC{i + 1} ({100 * float(v):.0f} % of variance)" for i, v in enumerate(trajectory.explained_variance)]


LENS_FLOOR = 1e-3  # the lens grid's shading: log p from 10⁻³ (white) to 1 (full), as plots.lens_grid_figure


def shade(probability: float) -> float:
    """Opacity of a lens cell: log10(p) mapped from [log10(LENS_FLOOR), 0] to [0, 1]."""
    return float(np.clip(1 - np.log10(max(probability, LENS_FLOOR)) / np.log10(LENS_FLOOR), 0, 1))


def lens_grid_html(lens: LensResult, words: Sequence[str], decode: Callable[[int], str]) -> str:
    """Positions × layers: each cell the lens's top word, shaded by log p, the top-k on hover."""
    head = "<tr><th>position</th>" + "".join(f"<th>{layer}</th>" for layer in range(lens.n_states)) + "</tr>"
    rows = []
    for t, word in enumerate(words):
        final = int(lens.prediction[0, t])
        cells = []
        for layer in range(lens.n_states):
            ids, probs = lens.top_ids[layer, 0, t].tolist(), lens.top_probs[layer, 0, t].tolist()
            hover = "\n".join(f"{decode(i)!r} {significant(p)}" for i, p in zip(ids, probs))
            hover += f"\nprediction {decode(final)!r}: p = {significant(float(lens.prediction_prob[layer, 0, t]))}, " \
                     f"rank {int(lens.prediction_rank[layer, 0, t])}"
            alpha = shade(probs[0])
            style = f"background: rgba(33, 102, 172, {alpha:.3f});" + (" color: white;" if alpha > 0.6 else "")
            weight = " class=final" if ids[0] == final else ""
            label = html.escape(plots.short_label(decode(ids[0]), 12))
            cells.append(f'<td{weight} style="{style}" title="{html.escape(hover)}">{label}</td>')
        rows.append(f'<tr data-position="{t}"><th class=words>{t}: {html.escape(repr(word))}</th>{"".join(cells)}</tr>')
    return f'<div class="scroll tall"><table class="lens-grid">{head}{"".join(rows)}</table></div>'


def section(title: str, body: str, caption: str = "", anchor: str = "") -> str:
    """An <h2> section with an optional caption."""
    note = f'<p class="caption">{caption}</p>' if caption else ""
    ident = f' id="{anchor}"' if anchor else ""
    return f"<section{ident}><h2>{html.escape(title)}</h2>\n{body}\n{note}</section>\n"


def causal_sections(model: GPT2, tokenizer: Tokenizer, text: str, ids: Sequence[int], highlight: int,
                    corrupted: str | None, img: Callable[[Figure, str], str]) -> list[str]:
    """The activation patching map (x_l per position up to PATCHED_POSITIONS tokens, each head's output beyond)
    and the direct logit attribution of the last position; a section that cannot be drawn says why instead."""
    sections = []
    site = "resid_pre" if len(ids) <= PATCHED_POSITIONS else "head_out"
    try:
        if corrupted is None:
            swapped = list(ids)
            swapped[highlight] = nearest_word(model, ids[highlight], tokenizer.n_vocab)
            how = (f"the text with {tokenizer.decode([ids[highlight]])!r} swapped for its nearest word "
                   f"{tokenizer.decode([swapped[highlight]])!r} (cosine of the unembedding rows)")
        else:
            swapped, how = encode_text(tokenizer, corrupted, model.config.n_ctx), "the corrupted text given"
        patched = ids_patching(model, tokenizer, ids, swapped, site=site)
        sections.append(section(
            "Activation patching: where the answer is carried", img(plots.patching_figure(patched), "patching map"),
            f"Clean: this text; corrupted: {html.escape(how)}. Each cell patches one "
            f"{'layer and position of the residual stream' if site == 'resid_pre' else 'head output (every position)'}"
            " from the clean run into the corrupted one; 1 restores the clean logit difference, 0 leaves the "
            "corrupted one (`minigpt-geom patch`).", "patching"))
    except InputError as error:
        sections.append(section("Activation patching", "", f"Not drawn: {html.escape(str(error))}", "patching"))
    try:
        attribution = text_attribution(model, tokenizer, text)
        sections.append(section(
            "Direct logit attribution of the last word's prediction",
            img(plots.attribution_figure(attribution), "attribution bars"),
            f"Each block's attention and MLP update read {attribution.reading}, along e_answer − "
            "e_wrong (the model's two most likely next words); the parts sum to the logit difference "
            "(`minigpt-geom attribute`).", "attribution"))
    except InputError as error:
        sections.append(section("Direct logit attribution", "", f"Not drawn: {html.escape(str(error))}",
                                "attribution"))
    return sections


@torch.inference_mode()
def build_report(
    model: GPT2,
    tokenizer: Tokenizer,
    text: str,
    *,
    word: str | None = None,
    position: int | None = None,
    layer: int = 0,
    head: int = 0,
    top_k: int = 5,
    title: str | None = None,
    dpi: int = 100,
    corrupted: str | None = None,
    progress: tqdm | None = None,
) -> str:
    """The HTML report of `text` (see the module doc); `word`/`position` choose the word first highlighted,
    `layer`/`head` the attention pattern first enlarged (the page can choose others); `corrupted`, a text of
    the same length, is patched into (default: the text with the chosen word swapped for its nearest word)."""
    config = model.config
    check_layer(model, layer)
    check_head(model, head)
    step = progress.update if progress is not None else lambda: None
    ids, logits, trace = trace_text(model, tokenizer, text, keep_attention=True)
    step()
    decode = lambda i: tokenizer.decode([int(i)])  # noqa: E731
    words = token_words(tokenizer, ids)
    highlight = choose_highlight(words, word, position)
    lens = logit_lens(model, trace, k=top_k)
    trajectory = word_trajectory(model, trace.states, words, lens.prediction[0].tolist(), decode, highlight=highlight)
    step()
    title = title or f"Traveling words: {short_title(text)}"
    geometry = geometry_summary({name: site.variant for name, site in model.norm_sites().items()})
    ln_f = model.ln_f.variant
    points = f"ln_f(x_l) (ln_f is {ln_f.name}: {ln_f.geometry.output_set})"
    intro = (
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p class=caption>{html.escape(model_summary(model))}. Layer l = 0 is the embedding x_0; every state is "
        f"decoded as the output head decodes x_L, through ln_f and the unembedding (the logit lens).</p>"
    )
    img = lambda fig, alt: figure_img(fig, alt, dpi)  # noqa: E731
    path_words = [decode(int(i)) for i in lens.top_ids[:, 0, highlight, 0]]
    sections = [
        section("Logit lens of every position", lens_grid_html(lens, words, decode),
                "Each cell: the top word of the lens at that position (row) and layer (column), shaded by its "
                "probability on a log scale from 10⁻³ (white) to 1, bold where it is the final prediction; hover "
                "for the top words. The chosen word's row is outlined.", "lens-grid"),
        section("Norms and radii across layers", img(plots.norm_profile_figure(trace, variant=model.h[0].ln_1.variant),
                                                     "norm profile"),
                f"Where the sites put each block's input: {html.escape(geometry)}; the radius is ‖x̂‖, the point "
                "before γ and β.", "norms"),
    ]
    step()
    if len(ids) >= 2:
        drift = text_drift(model, ids, trace.states)
        sections.append(section("Drift towards the next word along this text", img(plots.drift_figure(drift), "drift"),
                                "Per layer, the mean over positions of ln_f(x_l[t]) · (e_{t+1} − e_t) "
                                "= log p_l(next word) − log p_l(current word).", "drift"))
    sections += causal_sections(model, tokenizer, text, ids, highlight, corrupted, img)
    step()
    sections.append(section(
        f"Static figure of {words[highlight]!r}, for print",
        img(plots.trajectory_figure(trajectory, path_words=path_words), "trajectory figure"),
        "The 3-D view above as a figure, for the word given on the command line.", "static"))
    step()
    patterns = trace.attention.pattern[:, 0]  # [L, H, T, T]
    losses = token_losses(logits[0], ids)
    data = page_data(trajectory, lens, losses, patterns, decode, layer, head, config.vocab_size)
    cut = "" if len(ids) <= GRID_TOKENS else f" (the first {GRID_TOKENS} of {len(ids)} positions)"
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    return fill_template(
        template, title=html.escape(title), intro=intro, points=html.escape(points), method=trajectory.method.upper(),
        attention_cut=cut, data=script_json(data), sections="\n".join(sections),
    )
