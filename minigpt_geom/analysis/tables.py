"""Tables, the one form every analysis hands to the command line: text, Markdown, LaTeX and CSV.

A `Table` is a caption, a header and rows of plain values; `format` prints it in a style, `csv` gives its
CSV text, and `write_csv` / `write_table` put it in files through files.py (atomically).
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import import_optional
from ..io.files import write_text

if TYPE_CHECKING:
    import pandas

    from ..text.tokenizer import Tokenizer

TABLE_STYLES = ("text", "markdown", "latex")
SUFFIXES = {"text": "txt", "markdown": "md", "latex": "tex"}

# LaTeX for the symbols the tables' own headers and captions use. Other non-ASCII text (the words of the
# vocabulary) is left as UTF-8, which LaTeX reads by default: LuaLaTeX and XeLaTeX set any script, pdflatex
# the Latin, Greek and Cyrillic ones its fonts have.
LATEX_SYMBOLS = {"σ": r"$\sigma$", "γ": r"$\gamma$", "β": r"$\beta$", "‖": r"$\|$", "⊙": r"$\odot$",
                 "√": r"$\surd$", "·": r"$\cdot$", "ᵀ": r"$^\top$", "−": r"$-$", "Ẽ": r"$\tilde{E}$"}
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "&": r"\&"}


def latex_escape(text: str, symbols: bool = False) -> str:
    """Text safe inside a LaTeX table cell; with `symbols`, σ, γ, β, ‖ … become math.

    Control characters, which no font draws, are spelled as Python does (\\x0a); other characters pass as UTF-8."""
    def one(c: str) -> str:
        if c in LATEX_SPECIAL:
            return LATEX_SPECIAL[c]
        if symbols and c in LATEX_SYMBOLS:
            return LATEX_SYMBOLS[c]
        return rf"\textbackslash{{}}x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c

    return "".join(one(c) for c in text)


def token_label(tokenizer: Tokenizer, token: int) -> str:
    """A token's text as a quoted literal, so that leading spaces and control bytes show: ' stone', '\\n'."""
    return repr(tokenizer.decode([int(token)]))


def cell(value: Any) -> str:
    """One table cell as text: floats to 4 significant digits, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return significant(value)
    return str(value)


def significant(value: float, digits: int = 4) -> str:
    """`value` to `digits` significant digits, which is what a printed measurement means: 0.9876, 35.12, 12346,
    0.0001235; beyond 10⁶ or below 10⁻⁴ in scientific notation (1.235e+180), never a row of noise digits."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if 1e-4 <= abs(value) < 1e6:
        return f"{value:.{max(0, digits - 1 - math.floor(math.log10(abs(value))))}f}"
    return f"{value:.{digits - 1}e}"


@dataclass(frozen=True)
class Table:
    """Rows of plain values under a header, with a caption."""

    header: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""

    @classmethod
    def from_records(cls, records: Sequence[dict], caption: str = "") -> Table:
        """Records that share their keys (the first record's keys are the header)."""
        header = list(records[0]) if records else []
        return cls(header, [[record[key] for key in header] for record in records], caption)

    def format(self, style: str = "text") -> str:
        """The table as aligned text, a Markdown table or a LaTeX (booktabs) table."""
        return format_table(self.header, self.rows, style, self.caption or None)

    def csv(self) -> str:
        """The table as CSV text (floats in full)."""
        return format_csv(self.header, self.rows)

    def to_dataframe(self) -> pandas.DataFrame:
        """The table as a pandas DataFrame, every value in full, the caption in `.attrs["caption"]` (pandas is
        not a dependency: pip install pandas)."""
        frame = import_optional("pandas", "Table.to_dataframe()").DataFrame(
            [list(row) for row in self.rows], columns=list(self.header))
        frame.attrs["caption"] = self.caption
        return frame


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], style: str = "text",
                 caption: str | None = None) -> str:
    """Rows as an aligned text table, a Markdown table or a LaTeX (booktabs) tabular."""
    cells = [[cell(v) for v in row] for row in rows]
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
        lines = [r"% needs \usepackage{booktabs} (\toprule, \midrule, \bottomrule)", r"\begin{table}", r"\centering"]
        if caption:
            lines.append(rf"\caption{{{latex_escape(caption, symbols=True)}}}")
        lines += [rf"\begin{{tabular}}{{{'l' * len(header)}}}", r"\toprule",
                  " & ".join(rf"\textbf{{{latex_escape(h, symbols=True)}}}" for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in cells]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"table style must be one of {', '.join(TABLE_STYLES)}, got {style!r}")


def csv_cell(value: Any) -> Any:
    """One CSV cell: None empty, a real number that is no integer as repr(float(value)), every digit: the
    float64 it reads back as is the value itself (a NumPy float32's own str would be its shortest float32
    spelling, 0.1 for 0.100000001490116…)."""
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return repr(float(value))
    return value


def format_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as CSV text (RFC 4180: CRLF line ends, so a token that is a lone \\r is quoted; floats in full)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([[csv_cell(v) for v in row] for row in rows])
    return out.getvalue()


def write_csv(path: str | os.PathLike, table: Table) -> Path:
    """Write the table as a CSV file, atomically."""
    return write_text(path, table.csv())


def write_table(stem: str | os.PathLike, tables: Sequence[Table], styles: Sequence[str] = TABLE_STYLES) -> list[Path]:
    """Write tables one after another in each style, as stem.txt, stem.md, stem.tex; the paths written."""
    stem = Path(stem)
    return [write_text(stem.parent / f"{stem.name}.{SUFFIXES[style]}", "\n".join(t.format(style) for t in tables))
            for style in styles]
