"""The ``zoo`` command: one parser, one subcommand per module.

Each subcommand lives in its own ``zoo/commands/<name>.py`` with ``register(subparsers)`` that adds
its parser and sets ``func``; a subcommand returns its exit code. User errors (``ZooError``)
print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence

from zoo.errors import ZooError

# Subcommand modules under zoo/commands/, in the order --help lists them.
COMMANDS = ("models", "recipes", "recipe", "train", "predict", "export", "plot", "sweep", "slurm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="zoo-launch: a model zoo and one Accelerate fit loop, driven by YAML recipes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"zoo.commands.{name}").register(subparsers)
    examples = [line for line in map(_first_example, subparsers.choices.values()) if line]
    parser.epilog = "examples (`zoo COMMAND --help` shows more):\n" + "\n".join(f"  {line}" for line in examples)
    return parser


def _first_example(parser: argparse.ArgumentParser) -> str | None:
    """The first ``zoo ...`` command in a subcommand's epilog, or in its own subcommands'."""
    for line in (parser.epilog or "").splitlines():
        found = re.search(r"\bzoo \S.*", line)
        if found:
            return re.split(r"\s{2,}", found.group(0))[0]  # without the explanation beside it
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return next((e for a in nested for e in map(_first_example, a.choices.values()) if e), None)


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
