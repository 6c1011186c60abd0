"""Figures of the analyses, drawn from results computed elsewhere (matplotlib; PNG, SVG or PDF).

Each `*_figure` function takes computed data and returns a `matplotlib.figure.Figure`; `save_figure`
writes it atomically at a chosen dpi and format, and `figure_png` gives its PNG bytes. Figures are built
without pyplot (no global state, no GUI backend), and matplotlib is imported only when a figure is drawn.

What every figure keeps to:
  - labelled axes, a title, and a colour bar or legend wherever colour carries meaning;
  - a size that stops growing with the text: cells and fonts are sized for reading, figures are capped
    at about a page, tick labels thinned to at most MAX_TICKS per axis, and the logit-lens grid shows
    every k-th position past LENS_ROWS positions (draw pages with its `positions` argument);
  - tokens whole, quoted as Python shows them (' one', '\\n'), except in the probe, query-key and reach
    figures and along the trajectory, where a token longer than 14 characters is cut and marked with its
    length (short_label); characters the font
    cannot draw (CJK, emoji with matplotlib's bundled DejaVu Sans) are written as escapes ('\\u4e16'), so
    that drawing never warns about missing glyphs and the picture is the same on every machine;
  - maths in mathtext ($\\mathrm{LN}_f(x_l)$), labels that say what the points are for the model's own norm
    variant (variants.map_label, NormVariant.geometry), one colour scale wherever values are compared, and nothing drawn at a value
    that was not measured.

One module per family of figures (trajectory, lens, attention, sphere, drift, weights, compare, causal), on
the shared style (style.py) and words-as-labels font metrics (labels.py); every figure is also a name here:
`from minigpt_geom.analysis import plots; plots.save_figure(plots.drift_figure(result), "drift.png")`.
"""

from __future__ import annotations

# every figure and the style's public names, so that `plots.<name>` reaches them
from .style import DEFAULT_DPI, FORMATS, figure_format, figure_png, new_figure, save_figure  # noqa: F401
from .labels import mathtext_problem, short_label, word_label  # noqa: F401
from .trajectory import path_labels, trajectory_figure  # noqa: F401
from .lens import PROBABILITY_FLOOR, lens_grid_figure  # noqa: F401
from .attention import attention_figure  # noqa: F401
from .sphere import norm_profile_figure  # noqa: F401
from .drift import drift_figure, drift_position_figure  # noqa: F401
from .weights import (MEASURE_MATH, QK_SCORE, probe_figure, qk_pairs_figure, reach_figure,  # noqa: F401
                      singular_values_figure)
from .compare import compare_figure  # noqa: F401
from .causal import (ablation_figure, attribution_figure, patching_figure, rotation_figure,  # noqa: F401
                     steering_figure)
