"""Subcommands of `minigpt-geom`; cli.COMMANDS lists them."""
