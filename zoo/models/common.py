"""What every model is built from: the shapes that come from the data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, TypedDict

from pydantic import Field
from torch import nn

# Hyperparameter ranges, declared in a model's signature and checked when a recipe is loaded, before
# any work (a plugin's model uses these or its own ``Annotated[..., Field(...)]`` the same way).
Width = Annotated[int, Field(ge=1)]  # a layer's size: a layer of no units trains nothing
DropoutRate = Annotated[float, Field(ge=0, lt=1)]  # 1 would drop every unit


class DataConfig(TypedDict):
    """Shapes from the data set: ``input_dims`` of one example (C, H, W) and the class names."""

    input_dims: Sequence[int]
    mapping: Sequence[str]


def input_size(data_config: DataConfig) -> int:
    """Number of features in one flattened example."""
    return math.prod(data_config["input_dims"])


def num_classes(data_config: DataConfig) -> int:
    return len(data_config["mapping"])


def bn_blocks(in_features: int, widths: Sequence[int], dropout: float) -> nn.Sequential:
    """Flatten, then one Linear -> BatchNorm1d -> ReLU -> Dropout block per width."""
    layers: list[nn.Module] = [nn.Flatten(start_dim=1)]
    for width in widths:
        layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)]
        in_features = width
    return nn.Sequential(*layers)
