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

import yaml

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


def yaml_value(value: Any) -> Any:
    """A default as YAML can hold it: tuples become lists (``yaml.safe_dump`` rejects tuples)."""
    if isinstance(value, tuple | list):
        return [yaml_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): yaml_value(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _flow(value: Any) -> str:
    """One YAML scalar or flow sequence on one line, e.g. ``[512, 256]`` or ``0.5``."""
    return yaml.safe_dump(yaml_value(value), default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def model_snippet(name: str, comments: bool = False) -> str:
    """The ``model:`` section of a recipe for ``name`` with every hyperparameter at its default."""
    from zoo.commands.models import hyperparameter_help
    from zoo.registry import get_entry

    entry = get_entry(name)
    helps = hyperparameter_help(entry.builder) if comments else {}
    lines = ["model:", f"  name: {_flow(name)}"]
    for h in entry.hyperparameters.values():
        line = f"  {h.name}: {_flow(h.default)}"
        if helps.get(h.name):
            line = f"{line}  # {helps[h.name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def starter_recipe(name: str, model: str, path: str) -> str:
    """The text of a starter recipe named ``name`` for ``model``, to be saved at ``path``."""
    from zoo.recipe import Recipe
    from zoo.registry import get_entry

    entry = get_entry(model)
    defaults = Recipe()
    first = next(iter(entry.hyperparameters.values()), None)
    override = f" model.{first.name}={_flow(first.default).replace(' ', '')}" if first else ""
    data, trainer, tracking = defaults.data, defaults.trainer, defaults.tracking
    return (
        f"# {name}: model '{model}' ({entry.source}) with every hyperparameter at its default.\n"
        f"#   accelerate launch -m zoo.train {path}\n"
        f"#   accelerate launch -m zoo.train {path} trainer.epochs=3{override}\n"
        f"seed: {defaults.seed}\n"
        f"output_dir: runs/{name}\n"
        f"{model_snippet(model, comments=True)}"
        f"data: {{path: {data.path}, batch_size: {data.batch_size}, val_fraction: {data.val_fraction}}}\n"
        f"trainer: {{epochs: {trainer.epochs}, optimizer: {trainer.optimizer}, lr: {trainer.lr}}}\n"
        f"tracking: {{backends: {_flow(tracking.backends)}, project: {tracking.project}}}\n"
    )


def run_new(args: argparse.Namespace) -> int:
    if not _NAME.match(args.name):
        raise ZooError(f"recipe name '{args.name}' must be letters, digits, '.', '_' or '-' (it names files)")
    name = args.name.removesuffix(".yaml")
    path = Path(args.output) if args.output else Path("recipes") / f"{name}.yaml"
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


def recipes_using(model: str) -> list[str]:
    """Shipped recipes whose ``model.name`` is ``model``."""
    from zoo.commands.recipes import shipped_recipes

    return [label for label, name, _ in shipped_recipes() if name == model]
