"""A trained model on disk: ``model.safetensors`` and ``model.json``, written and read here only.

With ``trainer.ema``, ``model-raw.safetensors`` keeps the weights as trained beside the average.
``model.json`` holds what rebuilds the model (registry name, hyperparameters, ``data_config``) and
the training split's per-channel ``normalization`` on the 0-255 scale; ``model.safetensors`` holds
the weights. :func:`save_model` writes the pair at the end of a run, :func:`read_model` rebuilds
the model from it (``zoo.inference.load_run`` wraps that for prediction and export).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import ZooError

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
RAW_WEIGHTS_FILE = "model-raw.safetensors"  # with trainer.ema: the weights as trained


def save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict as safetensors (detached, contiguous CPU copies)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(path))


def save_model(
    weights: dict[str, torch.Tensor], output_dir: Path, name: str, hparams: dict[str, Any],
    data_config: dict[str, Any], normalization: dict[str, Sequence[float]],
    raw_weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """``model.safetensors`` plus ``model.json``: the name, hyperparameters and data it was built for;
    ``model-raw.safetensors`` too when ``raw_weights`` (the trained weights beside their EMA) are given."""
    output_dir = Path(output_dir)
    save_weights(weights, output_dir / WEIGHTS_FILE)
    if raw_weights is not None:
        save_weights(raw_weights, output_dir / RAW_WEIGHTS_FILE)
    spec = {
        "name": name,
        "hparams": hparams,
        "data_config": {**data_config, "input_dims": list(data_config["input_dims"])},
        "normalization": normalization,
    }
    (output_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def model_files(run_dir: Path) -> list[Path]:
    """The files :func:`save_model` writes into ``run_dir``."""
    return [Path(run_dir) / WEIGHTS_FILE, Path(run_dir) / SPEC_FILE]


def read_model(run_dir: str | Path) -> tuple[dict[str, Any], nn.Module]:
    """The spec of ``model.json`` and the model it describes, with ``model.safetensors`` loaded.

    The model's name is looked up in the registry, so a run trained with a plugin model needs
    that plugin installed; every problem is a one-line ZooError that names the file.
    """
    from safetensors.torch import load_file

    from zoo.registry import create_model

    path = Path(run_dir)
    if not path.is_dir():
        raise ZooError(f"run folder '{path}' does not exist; pass the output_dir of a finished training run")
    spec_path, weights_path = path / SPEC_FILE, path / WEIGHTS_FILE
    for needed in (spec_path, weights_path):
        if not needed.is_file():
            raise ZooError(f"'{path}' has no {needed.name}, so it holds no finished run; "
                           "pass the output_dir of a run that trained to the end")
    try:
        spec = json.loads(spec_path.read_text())
        name, hparams, data_config = spec["name"], spec.get("hparams", {}), spec["data_config"]
        missing = [key for key in ("mean", "std") if key not in spec["normalization"]]
        if missing:  # every user of the model needs both: a damaged file is named before it is built
            raise KeyError(f"normalization.{missing[0]}")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ZooError(f"{spec_path} is damaged ({type(exc).__name__}: {exc}); retrain or restore the file") from exc
    try:
        model = create_model(name, data_config, **hparams)
    except ZooError as exc:  # most often: trained with a plugin that is not installed here
        raise ZooError(f"{spec_path} cannot be rebuilt: {exc}") from exc
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except Exception as exc:  # a truncated file or weights from another model
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZooError(f"{weights_path} does not load into model '{name}': {message}") from exc
    return spec, model

