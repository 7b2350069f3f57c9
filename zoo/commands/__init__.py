"""Subcommands of the ``zoo`` command, one module each (see zoo/cli.py)."""
