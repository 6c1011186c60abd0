"""Analyses of a GPT-2 after Traveling Words (arXiv 2309.07315), apart from the model itself.

Weight space (no forward pass, one head at a time):
    circuits     a head's matrices W_QK = W_Q W_Kᵀ/√d_head, W_VO = W_V W_O, its bias terms, the score decomposition;
                 the one check of a layer or head index
    embeddings   experiment 1: the vocabulary E against layer norm, and which words ln_f lets the output reach
    probe        experiment 2: query-key and key-value probes of single-token words
    svd          experiment 3: singular vectors of W_QK and W_VO read as words, key-bias probes
    qk           a head's strongest query-key word pairs over the whole vocabulary

A forward pass over text:
    text         a text encoded within the context and run with tracing on
    lens         the logit lens: every residual state decoded as if it were the last
    trajectory   experiment 4: each word's path LN_f(x_0), …, LN_f(x_L) on the sphere, in 3-D
    corpus       a corpus read as a stream of token windows
    drift        experiment 5: does each layer move a word towards the next word?
    norms        what each layer-norm variant does to the predictions
    report       one self-contained HTML page about a text

Output:
    tables       every table: text, Markdown, LaTeX, CSV
    plots        every figure (matplotlib)

Import the module you need (`from minigpt_geom.analysis import svd`); nothing heavy is loaded here.
"""
