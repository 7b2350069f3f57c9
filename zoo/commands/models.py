"""``zoo models [PATTERN]``: list the registered models."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models", help="list the models in the zoo",
        description="List the registered models (built-ins and plugins).",
        epilog="example: zoo models '*mlp'", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, default '*'")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zoo.registry import get_entry, list_models

    for name in list_models(args.pattern):
        entry = get_entry(name)
        print(f"{name:<16} {entry.source:<24} {entry.summary}")
    return 0
