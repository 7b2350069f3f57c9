"""``zoo recipes``: list the shipped recipes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recipes", help="list the shipped recipes", description="List the recipes in recipes/.",
        epilog="example: zoo recipes",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        text = path.read_text()
        purpose = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        model = (yaml.safe_load(text) or {}).get("model", {}).get("name", "?")
        print(f"{path.relative_to(RECIPES_DIR.parent)!s:<28} {model:<12} {purpose}")
    return 0
