"""Words as labels: tokens quoted as Python shows them, characters the font lacks escaped, and the font
metrics that size a cell and its text so a long token never spills into its neighbours.
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Iterable
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CELL_FONT = 7.0  # points, for words written in cells
SMALLEST_FONT = 3.0  # a long token is shrunk to fit its cell, down to this size


@functools.cache
def font_face(weight: str = "normal"):
    """matplotlib's FT2Font of the default font at `weight`, set to 72 pt (1 em = 72 units)."""
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    face = FT2Font(findfont(FontProperties(weight=weight)))
    face.set_size(72, 72)
    return face


@functools.cache
def drawable() -> frozenset[int]:
    """Code points that both the regular and the bold default font have a glyph for."""
    return frozenset(font_face("normal").get_charmap()) & frozenset(font_face("bold").get_charmap())


def word_label(word: str) -> str:
    """A token quoted as Python shows it (' one', '\\n') and safe to draw: characters the font lacks
    written as Python escapes ('世' -> '\\u4e16'), `$` escaped so that it is not read as mathtext."""
    known = drawable()
    text = "".join(c if ord(c) in known else ascii(c)[1:-1] for c in repr(word))
    return text.replace("$", r"\$")


def mathtext_problem(label: str) -> str | None:
    """Why matplotlib cannot draw the user's `label` ('$$': "Expected end of text"), or None: text with an even
    number of unescaped `$` is parsed as mathtext, and a parse error would end the figure half-way."""
    from matplotlib import cbook
    from matplotlib.mathtext import MathTextParser

    if not cbook.is_math_text(label):
        return None
    try:
        MathTextParser("path").parse(label)
    except ValueError as error:  # the parser's message ends with its own one-line reason
        return (str(error).strip().splitlines() or ["not mathtext"])[-1].removeprefix("ParseException: ")
    return None


def short_label(word: str, most: int = 14) -> str:
    """word_label cut to at most `most` characters of the word, the cut marked with "…" and the full length
    ("'==========…' (64 chars)"), so that one long token cannot spill across the cells beside it."""
    if len(word) <= most:
        return word_label(word)
    quoted = word_label(word[:most])
    return f"{quoted[:-1]}…{quoted[-1]} ({len(word)} chars)"


@functools.cache
def advance(character: str) -> float:
    """Width of one character of the regular default font, in ems."""
    face = font_face("normal")
    return face.load_char(ord(character)).linearHoriAdvance / 65536 / 72  # 16.16 fixed point, 72 units an em


def text_width(label: str, fontsize: float = CELL_FONT) -> float:
    """Width in inches of a drawable label at `fontsize` points (the characters' advances; kerning ignored)."""
    known = drawable()
    return sum(advance(c) for c in label if ord(c) in known) * fontsize / 72


def cell_width(labels: Iterable[str], widest: float = 1.0) -> float:
    """Width in inches of a cell that holds the widest label at CELL_FONT, between 0.45 and `widest`."""
    return min(max(0.45, 0.12 + max((text_width(s) for s in labels), default=0.0)), widest)


def cell_font(label: str, width: float) -> float:
    """The font size that fits `label` into a cell `width` inches wide: CELL_FONT, or smaller for a long token."""
    needed = text_width(label) + 0.08
    return CELL_FONT if needed <= width else max(SMALLEST_FONT, CELL_FONT * width / needed)


def write_cells(ax: "Axes", labels: Sequence[Sequence[str]], width: float, white: np.ndarray,
                bold: np.ndarray | None = None) -> None:
    """Write labels[r][c] at the centre of each cell (row r, column c) of an image drawn with imshow, in white
    where white [R, C] is true (dark cells), in bold where bold [R, C] is."""
    for r, row in enumerate(labels):
        for c, label in enumerate(row):
            ax.text(c, r, label, ha="center", va="center", fontsize=cell_font(label, width),
                    color="white" if white[r, c] else "black",
                    fontweight="bold" if bold is not None and bold[r, c] else "normal")


def math_text(label: str) -> str:
    """A plain-text formula of the geometry strings (ℝ^d, (−1, 1)^d) with its powers as mathtext superscripts:
    ℝ$^{d}$, drawn raised, not as a caret."""
    return re.sub(r"\^(\w+)", r"$^{\1}$", label)


def wrapped(label: str, width: int) -> str:
    """`label` broken into lines of at most `width` characters, at spaces (a legend that fits its place)."""
    return "\n".join(textwrap.wrap(label, width)) or label
