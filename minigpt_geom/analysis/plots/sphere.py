"""The geometry of every norm site through the layers: ‖x‖, its offset from the hyperplane, the radius.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .style import fade, integer_x, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ...model.variants import NormVariant
    from ...model.trace import Trace


def norm_profile_figure(trace: "Trace", batch: int = 0, *, variant: "NormVariant | None" = None) -> "Figure":
    """Across layers: ‖x_l‖ and the updates' norms (left); what each norm site sees and makes (right).

    `variant` is the blocks' norm (default: GPT-2's layer norm): the line at √d, the radius of a sphere
    projection, is drawn only for a variant that reads direction alone (geometry.scale_free)."""
    from matplotlib.collections import LineCollection

    take = lambda t: t[:, batch].float().cpu().numpy()  # noqa: E731  [L, B, T] -> [L, T]
    residual = np.concatenate([take(trace.residual.residual_norm), trace.ln_f.input_norm[batch].float().cpu().numpy()[None]])
    L, T = residual.shape[0] - 1, residual.shape[1]
    d = trace.states.shape[-1] if trace.states is not None else None
    fig = new_figure(13, 5.5)
    panels = fig.subfigures(1, 2)
    left, right = (panel.subplots() for panel in panels)
    paths = np.stack([np.broadcast_to(np.arange(L + 1)[:, None], residual.shape), residual], axis=-1)  # [L+1, T, 2]
    left.add_collection(LineCollection(list(paths.transpose(1, 0, 2)), colors="0.6", linewidths=0.7, alpha=fade(T),
                                       label=rf"$\|x_l\|$ of each of the {T} tokens"))
    left.plot(np.arange(L + 1), residual.mean(axis=1), color="black", linewidth=2, label=r"$\|x_l\|$, mean over tokens")
    blocks = np.arange(L) + 0.5  # an update sits between x_l and x_l+1
    left.plot(blocks, take(trace.residual.attention_update_norm).mean(axis=1), "o-", label="‖attention update‖, mean")
    left.plot(blocks, take(trace.residual.mlp_update_norm).mean(axis=1), "s-", label="‖MLP update‖, mean")
    left.set_yscale("log")
    left.set_xlabel(r"layer $l$ (0 = embedding)")
    left.set_ylabel("norm (log scale)")
    integer_x(left)
    left.set_title("residual stream")
    panels[0].legend(loc="outside lower center", ncols=2, fontsize=9)
    layers = np.arange(L)
    for site, marker in (("ln_1", "o"), ("ln_2", "s")):
        record = getattr(trace, site)
        right.plot(layers, take(record.output_norm).mean(axis=1), marker + "-",
                   label=site + r": $\|\gamma\odot\hat{x}+\beta\|$ (output)")
        right.plot(layers, take(record.radius).mean(axis=1), marker + "--", label=site + r": $\|\hat{x}\|$ (radius)")
        right.plot(layers, np.abs(take(record.mean_component)).mean(axis=1), marker + ":",
                   label=site + r": $|x\cdot\mathbf{1}/\sqrt{d}|$ (distance from $H$)")
    right.plot([L], [trace.ln_f.output_norm[batch].float().mean().item()], "k*", markersize=12, label=r"ln_f: $\|\gamma\odot\hat{x}+\beta\|$")
    if d is not None and (variant is None or variant.geometry.scale_free):
        right.axhline(math.sqrt(d), color="grey", linewidth=0.8, label=rf"$\sqrt{{d}}$ = {math.sqrt(d):.1f}")
    right.set_yscale("log")
    right.set_xlabel(r"layer $l$ (block index; ln_f after the last)")
    right.set_ylabel("norm, mean over tokens (log scale)")
    integer_x(right)
    right.set_title("norm sites" + (f" ({variant.name})" if variant is not None else ""))
    panels[1].legend(loc="outside lower center", ncols=2, fontsize=9)
    return fig
