"""The ``zoo`` command: one parser, one subcommand per module.

Each subcommand lives in its own ``zoo/commands/<name>.py`` with ``register(subparsers)`` that adds
its parser and sets ``func``; a subcommand returns its exit code. User errors (``ZooError``)
print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from zoo.errors import ZooError

# Subcommand modules under zoo/commands/, in the order --help lists them.
COMMANDS = ("models", "recipes", "recipe", "train", "predict", "export", "plot", "slurm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="zoo-launch: a model zoo and one Accelerate fit loop, driven by YAML recipes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"zoo.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
