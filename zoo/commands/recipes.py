"""``zoo recipes``: list the shipped recipes with their model and purpose."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO / "recipes"
# Example plugins ship their own recipes beside their package (examples/zoo-cnn/recipes/).
EXAMPLE_RECIPES = "examples/*/recipes/*.yaml"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recipes", help="list the shipped recipes",
        description="List the recipes in recipes/ and examples/*/recipes/: path, model and purpose "
        "(the recipe's first comment line).",
        epilog="example: zoo recipes\nstart your own: zoo recipe new NAME --model MODEL",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)


def shipped_recipes() -> list[tuple[str, str, str]]:
    """(path relative to the repository, model name, purpose) of every shipped recipe."""
    import yaml

    found = []
    for path in [*sorted(RECIPES_DIR.glob("*.yaml")), *sorted(REPO.glob(EXAMPLE_RECIPES))]:
        text = path.read_text()
        purpose = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        try:
            model = ((yaml.safe_load(text) or {}).get("model") or {}).get("name", "?")
        except (yaml.YAMLError, AttributeError):
            model = "(unreadable)"
        found.append((str(path.relative_to(REPO)), str(model), purpose))
    return found


def run(args: argparse.Namespace) -> int:
    recipes = shipped_recipes()
    if not recipes:
        print(f"no recipes found under {RECIPES_DIR}")
        return 0
    width = max(len(label) for label, _, _ in recipes)
    model_width = max(len(model) for _, model, _ in recipes)
    for label, model, purpose in recipes:
        print(f"{label:<{width}}  {model:<{model_width}}  {purpose}")
    return 0
