"""Words for what a norm site makes of x, per variant: the labels and captions of figures and the report.

A figure of "LN_f(x_l)" is wrong for a model whose ln_f is no norm at all, and "the sphere of radius √d" is
wrong for DyT's box. These functions take the variant's name (`model.ln_f.variant.name`) and say what the
points are and where they lie; a variant registered by a user, unknown here, is named as it is.
"""

from __future__ import annotations

import math

# variant -> (mathtext of the site's output at @, the same in plain text, in words: where it puts x)
GEOMETRY = {
    "layernorm": (r"\mathrm{LN}_f(@)", "LN_f(@)",
                  "layer norm puts it on the sphere of radius √d in the hyperplane H ⟂ 1, then γ, β make that "
                  "sphere an ellipsoid"),
    "rmsnorm": (r"\mathrm{RMS}_f(@)", "RMS_f(@)",
                "RMSNorm puts it on the sphere of radius √d (not centred), then γ, β make that sphere an ellipsoid"),
    "sphere": (r"\sqrt{d}\,\widehat{@-\mu}", "√d·(@ − μ)/‖@ − μ‖",
               "the bare projection puts it on the sphere of radius √d in the hyperplane H ⟂ 1 (no γ, β)"),
    "dyt": (r"\gamma\odot\tanh(\alpha @)+\beta", "γ⊙tanh(α@) + β",
            "DyT squashes each coordinate into (−1, 1): a box, not a sphere; the length of x is read too"),
    "fixed_sigma": (r"\gamma\odot(@-\mu)/\sigma_f+\beta", "γ⊙(@ − μ)/σ_f + β",
                    "a fixed σ makes the site linear: centred but not normalised, so the length of x is kept"),
    "none": (r"@", "@", "no normalisation: the raw residual stream, its length kept"),
}


def describe(variant: str) -> tuple[str, str, str]:
    """GEOMETRY's entry for `variant`; a variant registered elsewhere is named as it is."""
    fallback = (r"\mathrm{" + variant.replace("_", r"\_") + r"}_f(@)", f"{variant}_f(@)",
                f"the norm variant {variant!r} (its geometry is not described here)")
    return GEOMETRY.get(variant, fallback)


def site_output(variant: str, x: str = "x_l") -> str:
    """Mathtext (with $…$) of what a final norm site of `variant` outputs at the state `x`."""
    return "$" + describe(variant)[0].replace("@", x) + "$"  # @ stands for the state


def site_output_text(variant: str, x: str = "x_l") -> str:
    """The same in plain text, for HTML."""
    return describe(variant)[1].replace("@", x)


def geometry_sentence(variant: str, d: int | None = None) -> str:
    """One plain-text sentence: where the variant's norm puts a block's input (√d written out when d is known)."""
    words = describe(variant)[2]
    if d is not None:
        words = words.replace("√d", f"√d = {math.sqrt(d):.2f}")
    return words[0].upper() + words[1:] + "."

