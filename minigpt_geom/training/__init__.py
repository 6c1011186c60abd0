"""Training any norm variant: the settings, the loop, the run folder and its checkpoints, the optimiser state,
several processes (torchrun), the memory a run needs, and removing layer norm by fine-tuning.

May import: the base, `io`, `model` and `text`. Never analyses or commands.
"""
