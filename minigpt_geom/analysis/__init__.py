"""Analyses of a GPT-2 after Traveling Words (arXiv 2309.07315), apart from the model itself.

Weight space (no forward pass, one head at a time):
    circuits     a head's matrices W_QK = W_Q W_Kᵀ/√d_head, W_VO = W_V W_O, its bias terms, the score decomposition
    embeddings   experiment 1: the vocabulary E against layer norm, and which words ln_f lets the output reach
    probe        experiment 2: query-key and key-value probes of single-token words
    svd          experiment 3: singular vectors of W_QK and W_VO read as words, key-bias probes
    qk           a head's strongest query-key word pairs over the whole vocabulary

A forward pass over text:
    lens         the logit lens: every residual state decoded as if it were the last
    trajectory   experiment 4: each word's path LN_f(x_0), …, LN_f(x_L) on the sphere, in 3-D
    drift        experiment 5: does each layer move a word towards the next word?
    norms        what each layer-norm variant does to the predictions
    plots        figures of the trajectory analyses
    report       one self-contained HTML page about a text

Import the module you need (`from minigpt_geom.analysis import svd`); nothing heavy is loaded here. This file
holds the few helpers the analyses share: loading, naming tokens, and writing tables.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from ..model import GPT2
    from ..tokenizer import Tokenizer

TABLE_STYLES = ("text", "markdown", "latex")


def load_model_and_tokenizer(weights: str | os.PathLike, tokenizer: str | os.PathLike | None = None
                             ) -> tuple["GPT2", "Tokenizer"]:
    """The model from `weights` and the tokenizer from `tokenizer` (default: beside the weights)."""
    from ..model import GPT2
    from ..tokenizer import Tokenizer

    if tokenizer is None:  # a single .safetensors file: look for vocab.json/merges.txt in its folder
        tokenizer = Path(weights).parent if Path(weights).is_file() else weights
    return GPT2.from_pretrained(weights), Tokenizer.from_pretrained(tokenizer)


def token_label(tokenizer: "Tokenizer", token: int) -> str:
    """A token's text as a quoted literal, so that leading spaces and control bytes show: ' stone', '\\n'."""
    return repr(tokenizer.decode([int(token)]))


# LaTeX for the symbols the tables' own headers and captions use; other non-ASCII text is spelled \u<code point>.
LATEX_SYMBOLS = {"σ": r"$\sigma$", "γ": r"$\gamma$", "β": r"$\beta$", "‖": r"$\|$", "⊙": r"$\odot$",
                 "√": r"$\surd$", "·": r"$\cdot$", "ᵀ": r"$^\top$", "−": r"$-$", "Ẽ": r"$\tilde{E}$"}
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "&": r"\&"}


def latex_escape(text: str, symbols: bool = False) -> str:
    """Text safe inside a LaTeX table cell (plain pdflatex); with `symbols`, σ, γ, β, ‖ … become math."""
    def one(c: str) -> str:
        if c in LATEX_SPECIAL:
            return LATEX_SPECIAL[c]
        if symbols and c in LATEX_SYMBOLS:
            return LATEX_SYMBOLS[c]
        return c if 32 <= ord(c) < 127 else rf"\textbackslash{{}}u{ord(c):04x}"

    return "".join(one(c) for c in text)


def _cell(value: Any) -> str:
    """One table cell as text: floats with 4 decimals, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], style: str = "text",
                 caption: str | None = None) -> str:
    """Rows as an aligned text table, a Markdown table or a LaTeX (booktabs) tabular."""
    cells = [[_cell(v) for v in row] for row in rows]
    if style == "text":
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
        line = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
        lines = [caption] if caption else []
        return "\n".join([*lines, line(header), line(["-" * w for w in widths]), *map(line, cells)]) + "\n"
    if style == "markdown":
        escape = lambda c: c.replace("|", r"\|")  # noqa: E731
        lines = [f"**{caption}**", ""] if caption else []
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    if style == "latex":
        lines = [r"\begin{table}", r"\centering"]
        if caption:
            lines.append(rf"\caption{{{latex_escape(caption, symbols=True)}}}")
        lines += [rf"\begin{{tabular}}{{{'l' * len(header)}}}", r"\toprule",
                  " & ".join(rf"\textbf{{{latex_escape(h, symbols=True)}}}" for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in cells]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"table style must be one of {', '.join(TABLE_STYLES)}, got {style!r}")


def format_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as CSV text (RFC 4180: CRLF line ends, so a token that is a lone \\r is quoted; floats in full)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def write_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8, line ends untranslated) to `path`, creating its folder; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path
