"""One self-contained HTML page about a text: its words' trajectories, logit lens, norms, attention, drift.

`build_report(model, tokenizer, text) -> str`. The page needs no network: figures are PNGs inlined as
base64 data URIs, and the rotatable 3-D view is a small canvas renderer written into the page
(report_template.html) with the trajectory data as inline JSON.
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

from ..model import GPT2
from ..sphere import geometry_summary
from . import plots
from .circuits import check_head, check_layer, head_pattern, head_weights
from .drift import text_drift
from .lens import LensResult, logit_lens
from .text import token_words, trace_text
from .trajectory import Trajectory, choose_highlight, word_trajectory

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from tqdm import tqdm

    from ..tokenizer import Tokenizer

TEMPLATE = "report_template.html"
REPORT_STEPS = 4  # forward pass; lens and trajectory; figures; drift


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


def trajectory_data(trajectory: Trajectory, lens: LensResult, decode: Callable[[int], str]) -> dict:
    """What the page's 3-D view draws: coordinates [L+1][T][3] and, per point, the lens's words."""
    top = lens.top_ids[:, 0, :, 0].tolist()  # [L+1][T]
    return {
        "words": trajectory.words,
        "coords": np.round(trajectory.coords, 5).tolist(),
        "highlight": trajectory.highlight,
        "prediction": {"word": trajectory.prediction_word, "coord": np.round(trajectory.prediction_coord, 5).tolist()},
        "top": [[decode(i) for i in row] for row in top],
        "topProb": np.round(lens.top_probs[:, 0, :, 0].float().cpu().numpy(), 4).tolist(),
        "finalWords": [decode(int(i)) for i in lens.prediction[0]],
        "finalProb": np.round(lens.prediction_prob[:, 0].float().cpu().numpy(), 4).tolist(),
    }


def lens_table_html(lens: LensResult, position: int, decode: Callable[[int], str]) -> str:
    """The highlighted word's logit lens, one row a layer, as an HTML table."""
    rows = []
    for layer in range(lens.n_states):
        words = "  ".join(
            f"{decode(int(i))!r} {float(p):.2f}" for i, p in zip(lens.top_ids[layer, 0, position], lens.top_probs[layer, 0, position])
        )
        cells = [
            str(layer), html.escape(words), f"{float(lens.prediction_prob[layer, 0, position]):.4f}",
            str(int(lens.prediction_rank[layer, 0, position])), f"{float(lens.kl_to_final[layer, 0, position]):.3f}",
            f"{float(lens.entropy[layer, 0, position]):.3f}", f"{float(lens.angular_step[layer, 0, position]):.3f}",
            f"{float(lens.angular_path[layer, 0, position]):.3f}",
        ]
        rows.append("<tr>" + "".join(f'<td{" class=words" if j == 1 else ""}>{c}</td>' for j, c in enumerate(cells)) + "</tr>")
    head = ("<tr><th>layer</th><th>top words (probability)</th><th>p(prediction)</th><th>rank</th>"
            "<th>KL(final ‖ layer)</th><th>entropy</th><th>step (rad)</th><th>path (rad)</th></tr>")
    return f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'


def lens_grid_html(lens: LensResult, words: Sequence[str], decode: Callable[[int], str]) -> str:
    """Positions × layers: each cell the lens's top word, shaded by its probability, top-k on hover."""
    head = "<tr><th>position</th>" + "".join(f"<th>{layer}</th>" for layer in range(lens.n_states)) + "</tr>"
    rows = []
    for t, word in enumerate(words):
        final = int(lens.prediction[0, t])
        cells = []
        for layer in range(lens.n_states):
            ids, probs = lens.top_ids[layer, 0, t].tolist(), lens.top_probs[layer, 0, t].tolist()
            hover = "\n".join(f"{decode(i)!r} {p:.3f}" for i, p in zip(ids, probs))
            hover += f"\nprediction {decode(final)!r}: p = {float(lens.prediction_prob[layer, 0, t]):.3f}, " \
                     f"rank {int(lens.prediction_rank[layer, 0, t])}"
            style = f"background: rgba(33, 102, 172, {probs[0]:.3f});" + (" color: white;" if probs[0] > 0.6 else "")
            weight = " class=final" if ids[0] == final else ""
            cells.append(f'<td{weight} style="{style}" title="{html.escape(hover)}">{html.escape(repr(decode(ids[0]))[:14])}</td>')
        rows.append(f"<tr><th class=words>{t}: {html.escape(repr(word))}</th>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table class="lens-grid">{head}{"".join(rows)}</table></div>'


def tokens_html(words: Sequence[str], highlight: int) -> str:
    """The text as its tokens, the highlighted one marked."""
    return "".join(
        f'<span class="token{" highlight" if t == highlight else ""}" title="position {t}">{html.escape(w)}</span>'
        for t, w in enumerate(words)
    )


def section(title: str, body: str, caption: str = "") -> str:
    """An <h2> section with an optional caption."""
    note = f'<p class="caption">{caption}</p>' if caption else ""
    return f"<h2>{html.escape(title)}</h2>\n{body}\n{note}\n"


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
    progress: tqdm | None = None,
) -> str:
    """The HTML report of `text` (see the module doc); `word`/`position` choose the highlighted token.

    `progress` advances by one for each of REPORT_STEPS steps."""
    config = model.config
    check_layer(model, layer)
    check_head(model, head)
    step = progress.update if progress is not None else lambda: None
    ids, _, trace = trace_text(model, tokenizer, text)
    step()
    decode = lambda i: tokenizer.decode([int(i)])  # noqa: E731
    words = token_words(tokenizer, ids)
    highlight = choose_highlight(words, word, position)
    lens = logit_lens(model, trace, k=top_k)
    trajectory = word_trajectory(model, trace.states, words, lens.prediction[0].tolist(), decode, highlight=highlight)
    x_hat = model.h[layer].ln_1(trace.states[layer, 0])[0]  # [T, d]: what block `layer` reads
    pattern = head_pattern(head_weights(model, layer, head), x_hat)  # [T, T], this head only
    step()
    title = title or f"Traveling words: {text[:60]}"
    geometry = geometry_summary({name: site.variant for name, site in model.norm_sites().items()})
    shown = words[highlight]

    intro = (
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>{len(ids)} tokens (highlighted: position {highlight}, {html.escape(repr(shown))}, which the model "
        f"expects to be followed by {html.escape(repr(trajectory.prediction_word))}):</p>\n"
        f"<p>{tokens_html(words, highlight)}</p>\n"
        f"<p class=caption>Model: {config.n_layer} layers, {config.n_head} heads, d = {config.n_embd}, "
        f"context {config.n_ctx}, vocabulary {config.vocab_size}; norms: {html.escape(geometry)}. "
        f"Layer l = 0 is the embedding x_0; every state is decoded as the output head decodes x_L, through ln_f "
        f"and the unembedding (the logit lens).</p>"
    )
    img = lambda fig, alt: figure_img(fig, alt, dpi)  # noqa: E731
    sections = [
        section("Trajectories (static view)", img(plots.trajectory_figure(trajectory), "3-D trajectories")),
        section(f"Logit lens of {shown!r}", lens_table_html(lens, highlight, decode),
                "rank 1 = the final prediction is the layer's top word; KL(final ‖ layer) = "
                "Σ_v p_L(v) log(p_L(v)/p_l(v)) in nats; step and path: angle travelled, in radians, in the "
                "model's own geometry."),
        section("Logit lens of every position", lens_grid_html(lens, words, decode),
                "Each cell: the top word of LN_f(x_l) Eᵀ at that position (row) and layer (column), shaded by its "
                "probability, bold where it is the final prediction; hover for the top words."),
        section("Norms and radii across layers", img(plots.norm_profile_figure(trace), "norm profile"),
                f"Where the sites put each block's input: {html.escape(geometry)} (√d = "
                f"{math.sqrt(config.n_embd):.2f}); the radius is ‖x̂‖, the point before γ and β."),
        section(f"Attention pattern, layer {layer} head {head}",
                img(plots.attention_figure(pattern, words, layer, head), "attention")),
    ]
    step()
    if len(ids) >= 2:
        drift = text_drift(model, ids, trace.states)
        sections.append(section("Drift towards the next word along this text", img(plots.drift_figure(drift), "drift"),
                                "Per layer, the mean over positions of LN_f(x_l[t]) · (e_{t+1} − e_t) "
                                "= log p_l(next word) − log p_l(current word)."))
    caption = (f"ln_f(x_l) of every token at every layer (ln_f is {model.ln_f.variant.name}: "
               f"{html.escape(model.ln_f.variant.geometry.output_set)}), projected to 3-D by {trajectory.method.upper()}; "
               f"colour = layer; the red path is {html.escape(repr(shown))}, the star the embedding of its "
               f"predicted word {html.escape(repr(trajectory.prediction_word))}.")
    step()
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    return fill_template(
        template, title=html.escape(title), intro=intro, trajectory_caption=caption,
        trajectory_data=script_json(trajectory_data(trajectory, lens, decode)), sections="\n".join(sections),
    )
