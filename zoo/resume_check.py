"""What a resumed run may change in its recipe, and what it may not.

Each checkpoint records the recipe it was trained with; a resume compares it with the recipe given now.
"""

from __future__ import annotations

import json
from typing import Any

from zoo.errors import ZooError
from zoo.recipe import Recipe

# What may change when a run is resumed: none of it alters what the optimizer sees, in what order.
# Everything else (model, data, batch size, seed, optimizer, lr, schedule, precision, accumulation)
# would make the resumed run neither the run it was nor the one the new recipe describes.
RESUME_SAFE = ("output_dir", "tracking.", "checkpoint.", "trainer.resume", "trainer.compile", "data.placement",
               "data.num_workers", "data.cache_dir", "data.eval_batch_size")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _with_model_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with every hyperparameter the recipe left out at its default, so that ``fc1: 1024`` given
    and ``fc1`` left at its default 1024 are the same model."""
    from zoo.registry import model_info

    try:
        declared = model_info(flat["model.name"])["hyperparameters"]
    except (KeyError, ZooError):  # a model no longer installed: compare what was written
        return flat
    # Through JSON, as the recorded recipe went: a tuple default reads back as a list.
    defaults = {f"model.{key}": json.loads(json.dumps(info["default"])) for key, info in declared.items()}
    return {**defaults, **flat}


def resume_changes(recorded: dict[str, Any], recipe: Recipe) -> tuple[list[str], list[str]]:
    """``(refused, allowed)``: each a ``key old -> new`` for every difference from the recorded recipe.

    More (or fewer) epochs are allowed only without a schedule: a schedule spans all the epochs.
    """
    old = _with_model_defaults(_flatten(recorded))
    new = _with_model_defaults(_flatten(recipe.model_dump(mode="json")))
    refused, allowed = [], []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        change = f"{key} {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}"
        safe = key.startswith(RESUME_SAFE) or (key == "trainer.epochs" and recipe.trainer.schedule == "none")
        (allowed if safe else refused).append(change)
    return refused, allowed
