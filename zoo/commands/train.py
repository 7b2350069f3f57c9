"""``zoo train RECIPE [overrides]``: train in this process (use ``accelerate launch`` for several)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="train from a recipe in this process",
        description="Train from a recipe in this process. For several processes or GPUs use "
        "`accelerate launch -m zoo.train RECIPE`.",
        epilog="example: zoo train mlp trainer.epochs=3",
    )
    parser.add_argument("recipe", help="a YAML recipe file, or a shipped recipe's name (`zoo recipes`)")
    parser.add_argument("overrides", nargs="*", default=[], help="section.key=value, parsed as YAML scalars")
    parser.add_argument("--print-recipe", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zoo.run import main

    return main([args.recipe, *args.overrides, *(["--print-recipe"] if args.print_recipe else [])])
