"""What a resumed run may change in its recipe, and what it may not.

Each checkpoint records the recipe it was trained with; a resume compares it with the recipe given now.
"""

from __future__ import annotations

from typing import Any

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


def resume_changes(recorded: dict[str, Any], recipe: Recipe) -> tuple[list[str], list[str]]:
    """``(refused, allowed)``: each a ``key old -> new`` for every difference from the recorded recipe.

    More (or fewer) epochs are allowed only without a schedule: a schedule spans all the epochs.
    """
    old, new = _flatten(recorded), _flatten(recipe.model_dump(mode="json"))
    refused, allowed = [], []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        change = f"{key} {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}"
        safe = key.startswith(RESUME_SAFE) or (key == "trainer.epochs" and recipe.trainer.schedule == "none")
        (allowed if safe else refused).append(change)
    return refused, allowed
