"""The model and its math: layer norm's sphere (sphere), where each variant puts a point (geometry), the norm
variants (variants) and the norm site that runs one (norm_site), attention, the block's residual update, GPT-2
itself, the KV cache, the trace of diagnostics, and the fused kernels beside the reference math (fused), one set
or the other chosen per model (kernels); folding a site into the map that reads it (fold), the fixed-σ map
and LN-free checkpoints (lnfree), and building from and writing to model files (pretrained).

May import: the package's base (`errors`, `config`) and `io` (to load and save its weights). Nothing above it:
text, training, analyses and commands build on the model, never the other way.
"""
