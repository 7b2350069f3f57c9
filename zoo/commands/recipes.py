"""``zoo recipes``: list the shipped recipes with their model and purpose."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zoo.commands.table import print_table

# In a checkout, the example plugins' recipes sit beside their packages (examples/zoo-cnn/recipes/);
# an installed wheel has no examples, and this finds none.
CHECKOUT = Path(__file__).resolve().parents[2]
EXAMPLE_RECIPES = "examples/*/recipes/*.yaml"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recipes", help="list the shipped recipes",
        description="List the recipes that ship with zoo-launch (run one by name: `accelerate launch -m zoo.train "
        "NAME`), and in a checkout those of examples/*/recipes/ by path: name or path, model and purpose "
        "(the recipe's first comment line).",
        epilog="example: zoo recipes\nstart your own: zoo recipe new NAME --model MODEL",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)


def _example_recipes() -> list[Path]:
    if not (CHECKOUT / "pyproject.toml").is_file():  # installed: site-packages is no checkout
        return []
    return sorted(CHECKOUT.glob(EXAMPLE_RECIPES))


def shipped_recipes() -> list[tuple[str, str, str]]:
    """(what to pass as RECIPE, model name, purpose) of every recipe: shipped ones by name, examples by path."""
    import yaml

    from zoo.recipe import shipped_recipes as shipped

    found = []
    entries = [*shipped().items(), *((str(p.relative_to(CHECKOUT)), p) for p in _example_recipes())]
    for label, path in entries:
        text = path.read_text()
        purpose = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        try:
            model = ((yaml.safe_load(text) or {}).get("model") or {}).get("name", "?")
        except (yaml.YAMLError, AttributeError):
            model = "(unreadable)"
        found.append((label, str(model), purpose))
    return found


def recipes_using(model: str) -> list[str]:
    """Shipped recipes whose ``model.name`` is ``model``."""
    return [label for label, name, _ in shipped_recipes() if name == model]


def run(args: argparse.Namespace) -> int:
    from zoo.recipe import SHIPPED_RECIPES

    recipes = shipped_recipes()
    if not recipes:
        print(f"no recipes found under {SHIPPED_RECIPES}")
        return 0
    print_table(recipes)
    return 0
