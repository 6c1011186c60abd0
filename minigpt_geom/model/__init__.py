"""The model and its math: the shape (config), the norm sites and their geometry (sphere), attention, the block's
residual update, GPT-2 itself, the KV cache, the trace of diagnostics, and the fused kernels beside the reference.

May import: the package's base (`errors`, `config`) and `io` (to load and save its weights). Nothing above it:
text, training, analyses and commands build on the model, never the other way.
"""
