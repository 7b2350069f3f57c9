"""Recipes: a strict schema, YAML files and ``section.key=value`` overrides.

Everything a run does is in its recipe. Validation is strict and finishes before any work starts:
an unknown key gets a did-you-mean, a wrong type names the expected one, and every message names
the file or the override it came from. Only YAML's SafeLoader reads recipe text, and it refuses a key given twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from zoo.errors import ZooError, did_you_mean
from zoo.recipe_file import read_recipe_file

# The shipped recipes are package data, so an installed wheel has them as a checkout does
# (the checkout's top-level recipes/*.yaml are symlinks to these files).
SHIPPED_RECIPES = Path(__file__).resolve().parent / "recipes"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Model keys that are not hyperparameters: what the model starts from (zoo/finetune.py).
FINETUNE_KEYS = ("pretrained", "freeze")


class FinetuneKeys(Section):
    pretrained: StrictBool | str = False  # true: the provider's default weights; or a .safetensors file / run folder
    freeze: str | list[str] = Field(default_factory=list)  # "backbone", or fnmatch patterns over parameter names


class ModelSection(BaseModel):
    """``name`` picks the model; ``pretrained`` and ``freeze`` say what it starts from; every other
    key is one of its hyperparameters."""

    model_config = ConfigDict(extra="allow")
    name: str = "mlp"

    @property
    def hparams(self) -> dict[str, Any]:
        return {k: v for k, v in (self.model_extra or {}).items() if k not in FINETUNE_KEYS}

    @property
    def finetune(self) -> FinetuneKeys:
        extra = self.model_extra or {}
        return FinetuneKeys(**{k: extra[k] for k in FINETUNE_KEYS if k in extra})


class AugmentSection(Section):
    crop_padding: int = Field(0, ge=0)  # shift each image by up to this many pixels (pad, random crop); 0: off
    flip: bool = False  # mirror half the images left to right (not for digits or text)


class DataSection(Section):
    path: str = "ylecun/mnist"  # a Hub id or a local folder, as datasets.load_dataset takes it
    name: str | None = None  # the data set's config name
    batch_size: int = Field(128, gt=0)  # the global batch, split across processes
    eval_batch_size: int = Field(1024, gt=0)
    val_fraction: float = Field(0.1, gt=0, lt=1)  # used when the set has no validation split
    image_column: str | None = None  # found from the features when unset
    label_column: str | None = None
    placement: Literal["auto", "device", "stream"] = "auto"  # resident on the device, or a DataLoader
    num_workers: int = Field(2, ge=0)  # DataLoader workers on the streaming path
    cache_dir: str | None = None  # where decoded arrays are kept; beside the datasets cache by default
    augment: AugmentSection = Field(default_factory=AugmentSection)  # training batches only, on the device
    # Every image resized once, as it is decoded into the cache (zoo/resize.py); null: the set's own size.
    image_size: tuple[int, int] | None = None

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> tuple[int, int] | None:
        """``N`` is N x N pixels, ``[H, W]`` height by width, null the set's own size; nothing else
        (not ``true``, ``32.5`` or ``"32x32"``, which lax parsing would take or guess at)."""
        sizes = [value, value] if type(value) is int else value
        if value is None or (isinstance(sizes, list | tuple) and len(sizes) == 2
                             and all(type(s) is int and s > 0 for s in sizes)):
            return None if value is None else (sizes[0], sizes[1])
        raise PydanticCustomError("image_size", "expected N (for N x N pixels) or [H, W], whole numbers above 0 "
                                  "such as 32 or [32, 48]")


class EarlyStoppingSection(Section):
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    metric: Literal["val_loss", "val_acc", "train_loss"] = "val_loss"
    mode: Literal["min", "max"] = "min"  # min: lower is better (losses); max: higher (accuracy)
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)


class ProfileSection(Section):
    """A torch.profiler trace of ``steps`` optimizer steps, after ``wait`` unprofiled ones."""

    steps: int = Field(20, gt=0)
    wait: int = Field(5, ge=0)


def _switch(value: Any) -> Any:
    """``true`` turns a section on with its defaults, ``false`` turns it off."""
    return {} if value is True else None if value is False else value


class TrainerSection(Section):
    epochs: int = Field(10, ge=1)  # 0 would write a summary of an untrained model
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(3.0e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)  # sgd only
    schedule: Literal["none", "cosine", "onecycle"] = "none"
    grad_clip: float | None = Field(None, gt=0)  # max gradient norm; unset turns clipping off
    backbone_lr_scale: float = Field(1.0, gt=0)  # lr multiplier for every parameter but the classifier
    grad_accum: int = Field(1, ge=1)  # micro-batches per global batch
    max_device_batch: int | None = Field(None, gt=0)  # cap per process; accumulation grows to honour it
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # auto: the step captured as one CUDA graph where it can run (zoo.step), else the plain step
    compile: Literal["auto", "none", "graph", "torch"] = "auto"
    cpu_threads: int | None = Field(None, ge=1)  # torch threads per process; unset: the cores / processes
    resume: str = "auto"  # auto, never, or a checkpoint folder
    ema: float | None = Field(None, gt=0, lt=1)  # EMA decay of the weights (e.g. 0.999); null: off
    early_stopping: EarlyStoppingSection | None = None  # null: off; true: on with the defaults
    val_every_steps: int = Field(0, ge=0)  # also validate every N optimizer steps; 0: per epoch only
    profile: ProfileSection | None = None  # null: off; true: on with the defaults
    # ddp: every process holds the whole model; fsdp: parameters, gradients and optimizer state
    # sharded over the processes (zoo.sharding)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    fsdp_cpu_offload: bool = False  # fsdp on GPUs: shards and optimizer state live in host memory
    fsdp_min_block_params: int = Field(1_000_000, ge=1)  # a model without fsdp_blocks: shard by size

    @field_validator("early_stopping", "profile", mode="before")
    @classmethod
    def _section_switch(cls, value: Any) -> Any:
        return _switch(value)

    @field_validator("ema", mode="before")
    @classmethod
    def _ema_off(cls, value: Any) -> Any:
        return None if value is False else value


class CheckpointSection(Section):
    every_steps: int = Field(0, ge=0)  # 0: only at the end of each epoch
    keep: int = Field(2, ge=1)


class TrackingSection(Section):
    backends: list[Literal["wandb", "tensorboard", "mlflow", "csv"]] = Field(default_factory=lambda: ["wandb"])
    # The older switch, mapped onto backends: true adds wandb to them, false removes it. Once
    # resolved it always says whether wandb is among the backends.
    wandb: bool | None = None
    mlflow_uri: str | None = None  # an MLflow tracking URI; unset: a store in <output_dir>/mlruns
    project: str = "zoo-launch"
    entity: str | None = None
    name: str | None = None
    group: str | None = None  # W&B run group: a sweep puts all its points in one
    tags: list[str] = Field(default_factory=list)
    log_every: int = Field(50, gt=0)  # steps between train-loss records
    artifacts: Literal["model", "all", "none"] = "model"  # W&B artifacts: the final model, + checkpoints, or none

    @model_validator(mode="before")
    @classmethod
    def _map_wandb_switch(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        backends = data.get("backends", ["wandb"])
        if not isinstance(backends, list):
            return data  # the field's own check names the problem
        backends = list(dict.fromkeys(backends))  # each once, in the order given
        if data.get("wandb") is True and "wandb" not in backends:
            backends.append("wandb")
        elif data.get("wandb") is False:
            backends = [b for b in backends if b != "wandb"]
        if data.get("wandb") in (True, False, None):
            data["wandb"] = "wandb" in backends
        data["backends"] = backends
        return data


class Recipe(Section):
    seed: int = 0
    output_dir: str = "runs/default"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _section_fields(loc: Sequence[str | int]) -> list[str]:
    """Field names valid at the parent of ``loc`` (for did-you-mean)."""
    schema: type[BaseModel] | None = Recipe
    for part in loc[:-1]:
        field = schema.model_fields.get(str(part)) if schema else None
        annotation = field.annotation if field else None
        schema = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(schema.model_fields) if schema else []


def _describe(error: dict[str, Any]) -> str:
    loc = error["loc"]
    key = ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        # Suggest the full dotted key, as it would be written in an override (trainer.epochs).
        parent = "".join(f"{p}." for p in loc[:-1])
        if len(loc) == 1:  # `epochs=3` for `trainer.epochs=3`: the section is what is missing
            owners = [f"{name}.{key}" for name in _section_fields(loc) if key in _section_fields((name, key))]
            if owners:
                return f"unknown key '{key}' (did you mean {' or '.join(repr(o) for o in owners)}?)"
        return f"unknown key '{key}'{did_you_mean(key, [parent + f for f in _section_fields(loc)])}"
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"key '{key}': {message}, got {error['input']!r}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and its value parsed as a YAML scalar."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.isidentifier() for p in parts):
        raise ZooError(f"malformed override '{text}': write section.key=value, e.g. trainer.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ZooError(f"malformed override '{text}': the value is not valid YAML") from exc
    if isinstance(value, str) and value.strip().lower() not in {"nan", "inf", "infinity"}:
        with contextlib.suppress(ValueError):  # YAML 1.1 reads 3e-4 as a string; a number is meant
            value = float(value)
    return parts, value


def _apply(data: dict[str, Any], parts: list[str], value: Any, override: str) -> None:
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ZooError(f"override '{override}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _validate(data: dict[str, Any], where: str) -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
        extra = recipe.model.model_extra or {}
        finetune = FinetuneKeys(**{k: extra[k] for k in FINETUNE_KEYS if k in extra})
    except ValidationError as exc:
        errors = exc.errors()
        if errors[0]["loc"] and errors[0]["loc"][0] in FINETUNE_KEYS:
            errors[0]["loc"] = ("model", *errors[0]["loc"][:1])  # pretrained: StrictBool | str lists both
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ZooError(f"{where}: {_describe(errors[0])}{more}") from None
    from zoo.registry import validate_hyperparameters

    try:
        hparams = validate_hyperparameters(recipe.model.name, recipe.model.hparams)
    except ZooError as exc:
        raise ZooError(f"{where}: {exc}") from None
    # Hyperparameters are kept coerced to the model's types ("512" -> 512, a list -> the declared
    # tuple), so the saved recipe.yaml and model.json hold what the model was really built with.
    kept = finetune.model_dump(include={k for k in FINETUNE_KEYS if k in extra})
    return recipe.model_copy(update={"model": ModelSection(name=recipe.model.name, **kept, **hparams)})


def shipped_recipes() -> dict[str, Path]:
    """The recipes that ship inside the package, by name: ``{"mlp": .../zoo/recipes/mlp.yaml, ...}``."""
    return {path.stem: path for path in sorted(SHIPPED_RECIPES.glob("*.yaml"))}


def find_recipe(recipe: str | Path) -> Path:
    """The file a RECIPE argument means: a path to a file, or the name of a shipped recipe (``mlp``).

    A file wins over a shipped recipe of the same name. A bare word that is neither is one error
    listing the shipped names; a missing ``recipes/mlp.yaml`` (run outside a checkout) is one error
    pointing at the name; anything else is returned as a path for the reader to report.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if str(recipe) != path.name or path.suffix:
        if path.suffix == ".yaml" and path.stem in shipped:
            # recipes/mlp.yaml from outside a checkout: the shipped copy runs from anywhere by name.
            raise ZooError(f"recipe file '{recipe}' not found; the shipped recipe '{path.stem}' runs from any "
                           f"folder by its name: give {path.stem} instead of {recipe}")
        return path
    if path.name in shipped:
        return shipped[path.name]
    raise ZooError(f"recipe '{recipe}' is neither a file nor a shipped recipe{did_you_mean(path.name, shipped)}; "
                   f"shipped: {', '.join(shipped)} (`zoo recipes` lists them), or give a path to a YAML file")


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe; a ZooError names the file or override at fault.

    ``path`` is a file or a shipped recipe's name. Example:
    ``load_recipe("recipes/mlp.yaml", ["trainer.epochs=3", "model.fc1=512"])``, or ``load_recipe("mlp")``.
    """
    path = find_recipe(path)
    data = read_recipe_file(path)
    _validate(data, str(path))  # the file on its own first, so its mistakes are named as its own
    for override in overrides:
        parts, value = parse_override(override)
        _apply(data, parts, value, override)
        _validate(data, f"override '{override}'")
    return _validate(data, str(path))
