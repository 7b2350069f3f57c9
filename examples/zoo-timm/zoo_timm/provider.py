"""timm's architectures as zoo models: ``timm/resnet18``, ``timm/vit_tiny_patch16_224``, ...

The zoo finds :class:`TimmProvider` through the ``zoo.model_providers`` entry point of this
package and asks it for one architecture at a time. Each model is built by ``timm.create_model``
with what the data says: ``in_chans`` from ``input_dims``, ``num_classes`` from the class names,
and ``img_size`` for the architectures whose pretrained config has a fixed input size (vision
transformers: their position embeddings depend on it). The hyperparameters are timm's own
model arguments, checked by the zoo like any model's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import timm
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.models import DataConfig

HYPERPARAMETER_HELP = """\
Args:
    drop_rate: dropout before the classifier; None keeps the architecture's default (0 for most).
    drop_path_rate: stochastic depth rate; None keeps the default. Not every architecture has it.
    global_pool: the classifier's pooling ('avg', 'max', 'avgmax', ...); None keeps the default."""


def _chw(data_config: DataConfig) -> tuple[int, int, int]:
    dims = tuple(int(d) for d in data_config["input_dims"])
    return (1, *dims) if len(dims) == 2 else dims  # type: ignore[return-value]


def shape_arguments(name: str, data_config: DataConfig) -> dict[str, Any]:
    """``in_chans`` and ``num_classes`` from the data, plus ``img_size`` where the architecture fixes it."""
    channels, height, width = _chw(data_config)
    arguments: dict[str, Any] = {"in_chans": channels, "num_classes": len(data_config["mapping"])}
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size:
        arguments["img_size"] = (height, width)
    return arguments


def create(name: str, data_config: DataConfig, **hparams: Any) -> nn.Module:
    """``timm.create_model`` for the data's shapes; an argument the architecture lacks is one ZooError line."""
    hparams = {key: value for key, value in hparams.items() if value is not None}
    try:
        return timm.create_model(name, **shape_arguments(name, data_config), **hparams)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        wrong = str(exc).split("unexpected keyword argument")[-1].strip(" '\"")
        raise ZooError(f"model 'timm/{name}' does not take hyperparameter '{wrong}' (timm's "
                       f"{name} has no such argument); leave it unset for this architecture") from None


def _summary(name: str) -> str:
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not timm.models.is_model_pretrained(name):
        return f"timm's {name}; no pretrained weights"
    shape = "x".join(str(d) for d in cfg.input_size)
    return f"timm's {name}; pretrained: {name}.{cfg.tag} ({cfg.num_classes} classes, {shape})"


def _builder(name: str) -> Callable[..., nn.Module]:
    def build(
        data_config: DataConfig,
        drop_rate: float | None = None,
        drop_path_rate: float | None = None,
        global_pool: str | None = None,
    ) -> nn.Module:
        return create(name, data_config, drop_rate=drop_rate, drop_path_rate=drop_path_rate, global_pool=global_pool)

    build.__doc__ = (f"{_summary(name)}.\n\nBuilt by timm {timm.__version__} with in_chans and num_classes "
                     f"from the data.\n\n{HYPERPARAMETER_HELP}")
    build.__module__ = "timm"
    build.__qualname__ = build.__name__ = f"create_model('{name}')"
    return build


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """An unreachable Hub makes huggingface_hub log every retry; the ZooError says it once."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


class TimmProvider:
    """Every architecture ``timm.list_models()`` knows, built lazily, one at a time."""

    description = f"timm {timm.__version__}"
    # What `zoo models check` builds when not asked for timm/... by name: a plain CNN and a
    # fixed-size transformer (built for the data's image size), each taking 28x28 digits; two keep
    # the whole-zoo check quick. `zoo models check 'timm/convnext*'` checks a family by name.
    checked = ("resnet18", "vit_tiny_patch16_224")

    def names(self) -> list[str]:
        return timm.list_models()

    def builder(self, name: str) -> Callable[..., nn.Module]:
        return _builder(name)

    def pretrained_weights(self, name: str, data_config: DataConfig) -> dict[str, torch.Tensor]:
        """timm's default weights for ``name``, from the Hugging Face cache (the Hub when not cached).

        timm adapts them to the data's input channels and image size; the classifier keeps the
        checkpoint's class count, and the zoo re-initialises it when the data's differs.
        """
        if not timm.models.is_model_pretrained(name):
            raise ZooError(f"timm offers no pretrained weights for '{name}'; set model.pretrained to a "
                           "safetensors file or a run folder, or leave it unset")
        arguments = shape_arguments(name, data_config)
        arguments.pop("num_classes")
        cfg = timm.models.get_pretrained_cfg(name)
        where = cfg.hf_hub_id or cfg.url or name
        try:
            with _quiet_hub():
                model = timm.create_model(name, pretrained=True, **arguments)
        except Exception as exc:  # not cached and no Hub, or a damaged download
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ZooError(
                f"model.pretrained=true: timm's weights for '{name}' ({where}) are not in the Hugging Face "
                f"cache and could not be downloaded ({type(exc).__name__}: {detail[:160]}); fetch them once "
                "with network access, or set model.pretrained to a safetensors file"
            ) from None
        return model.state_dict()
