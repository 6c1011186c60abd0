"""Subcommands of `minigpt-geom`, one module each, and what they share: the argument vocabulary (arguments.py),
what a command loads (loading.py) and what it writes (outputs.py).

Every command follows one order, so that a mistake costs as little as possible and leaves nothing behind:
check the arguments (argparse, sizes against the memory they need: memory.py), the output folder (not
created yet) and matplotlib when it draws; load the model and tokenizer (validating --device and --dtype); run
the analysis; only then write: every output into a temporary folder, moved into the output folder together at
the end. Nothing here imports torch at import time.
"""
