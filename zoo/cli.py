"""The ``zoo`` command: one parser, one subcommand per module.

Each subcommand lives in its own ``zoo/commands/<name>.py`` with ``register(subparsers)`` that adds
its parser and sets ``func``; a subcommand returns its exit code. User errors (``ZooError``)
print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
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


def _with_default_action(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Insert a command's ``default_action`` when its first word is not one of its actions.

    ``zoo models '*mlp'`` is ``zoo models list '*mlp'``: a command that sets ``default_action``
    (``parser.set_defaults``) runs it when given no action, or a first word that is no action.
    """
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if not argv or argv[0] not in commands.choices:
        return argv
    command = commands.choices[argv[0]]
    default = command.get_default("default_action")
    nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
    if default is None or not nested:
        return argv
    rest = argv[1:]
    if rest and (rest[0] in nested[0].choices or rest[0].startswith("-")):
        return argv
    return [argv[0], default, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_with_default_action(parser, list(sys.argv[1:] if argv is None else argv)))
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that is gone shows up below
        return code
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped early (`zoo models | head`): end quietly, as cat does, with SIGPIPE's
        # shell code. Python would print a second traceback flushing stdout at exit, so point it
        # at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
