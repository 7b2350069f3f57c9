"""A small CNN for image classification, built only from the data's shapes.

zoo-launch finds it through the entry point in this package's pyproject.toml, so the module does
not import the registry or use ``@register_model``: installing the package is the registration.
The hyperparameters' ranges are declared in the signature (``Annotated[..., Field(...)]``), so zoo
checks them when a recipe is loaded, before any work, as it does for its own models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from zoo.models import DataConfig, DropoutRate, Width


class SmallCNN(nn.Module):
    """Conv -> BatchNorm -> ReLU -> MaxPool blocks, then a dropout and linear head.

    Takes any ``input_dims`` (C, H, W): the channel count comes from the data, and a block only
    pools while the feature map is at least 2 pixels on each side, so small images work too.

    Args:
        channels: output channels of each conv block; its length is the depth.
        hidden: width of the hidden linear layer before the logits; 0 skips it.
        dropout: dropout probability before the head.
    """

    def __init__(
        self,
        data_config: DataConfig,
        channels: Annotated[tuple[Width, ...], Field(min_length=1)] = (16, 32),
        hidden: Annotated[int, Field(ge=0)] = 64,
        dropout: DropoutRate = 0.1,
    ) -> None:
        super().__init__()
        in_channels, height, width = _chw(data_config["input_dims"])
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU()]
            if height >= 2 and width >= 2:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        features = in_channels * height * width
        head: list[nn.Module] = [nn.Flatten(1), nn.Dropout(dropout)]
        if hidden:
            head += [nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout)]
            features = hidden
        head.append(nn.Linear(features, len(data_config["mapping"])))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _chw(input_dims: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) from ``input_dims``; a 2-D (H, W) means one channel."""
    dims = tuple(int(d) for d in input_dims)
    if len(dims) == 2:
        return (1, *dims)
    if len(dims) != 3:
        raise ValueError(f"SmallCNN needs input_dims (C, H, W) or (H, W), got {dims}")
    return dims  # type: ignore[return-value]
