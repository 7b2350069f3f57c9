"""Recipe text written for people: a model's ``model:`` section and a whole starter recipe.

``zoo models show`` prints the snippet; ``zoo recipe new`` writes the starter recipe.
"""

from __future__ import annotations

from typing import Any

import yaml

from zoo.recipe import Recipe


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
    """The ``model:`` section of a recipe for ``name`` with every hyperparameter at its default.

    ``comments`` adds each hyperparameter's help (from the model's docstring) as a comment.
    """
    from zoo.registry import get_entry

    lines = ["model:", f"  name: {_flow(name)}"]
    for h in get_entry(name).hyperparameters.values():
        line = f"  {h.name}: {_flow(h.default)}"
        if comments and h.help:
            line = f"{line}  # {h.help}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def starter_recipe(name: str, model: str, path: str) -> str:
    """The text of a starter recipe named ``name`` for ``model``, to be saved at ``path``.

    Every hyperparameter at its default with its help as a comment, headed by the command that
    runs it and one example override.
    """
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
