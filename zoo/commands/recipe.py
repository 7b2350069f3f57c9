"""``zoo recipe new NAME --model M``: write a starter recipe for a model.

The recipe lists every hyperparameter of the model at its default, each with its help as a
comment, and opens with the command that runs it, so the file documents itself. An existing
file is never overwritten.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

EXAMPLE = """\
examples:
  zoo recipe new my-cnn --model cnn                 writes recipes/my-cnn.yaml
  zoo recipe new wide --model mlp -o /tmp/wide.yaml"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recipe", help="write a starter recipe for a model",
        description="Recipe tools. `zoo recipe new` writes a starter recipe for a model.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new", help="write a starter recipe with every hyperparameter of a model at its default",
        description="Write a starter recipe: every hyperparameter of the model at its default, headed by "
        "the command that runs it. An existing file is never overwritten.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    new.add_argument("name", help="recipe name; also names the run's output_dir (runs/NAME)")
    new.add_argument("--model", "-m", required=True, help="a model from `zoo models`")
    new.add_argument("-o", "--output", help="where to write it (default recipes/NAME.yaml)")
    new.set_defaults(func=run_new)


def run_new(args: argparse.Namespace) -> int:
    if not _NAME.match(args.name):
        raise ZooError(f"recipe name '{args.name}' must be letters, digits, '.', '_' or '-' (it names files)")
    name = args.name.removesuffix(".yaml")
    path = Path(args.output) if args.output else Path("recipes") / f"{name}.yaml"
    from zoo.recipe_text import starter_recipe

    text = starter_recipe(name, args.model, str(path))
    if path.exists():
        raise ZooError(f"'{path}' already exists and is never overwritten; pick another name or -o PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x") as handle:  # "x": fails rather than overwrite, even in a race
            handle.write(text)
    except FileExistsError as exc:
        raise ZooError(f"'{path}' already exists and is never overwritten; pick another name or -o PATH") from exc
    except OSError as exc:
        raise ZooError(f"cannot write '{path}': {exc.strerror}") from exc
    print(f"wrote {path}; run it with: accelerate launch -m zoo.train {path}")
    return 0

