"""The BatchNorm MLP plus a linear skip connection from the inputs to the logits."""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.common import DataConfig, bn_blocks, input_size, num_classes
from zoo.registry import register_model


@register_model("skip_mlp")
class SkipMLP(nn.Module):
    """Deep BatchNorm MLP whose logits get a linear map of the flattened inputs added to them.

    The skip layer gives the net a linear model to fall back on, so depth can only help
    (the seed notes' tip for deeper networks).

    Args:
        widths: width of each hidden block; its length is the depth.
        dropout: dropout probability after each block.
    """

    def __init__(
        self, data_config: DataConfig, widths: tuple[int, ...] = (512, 256, 128), dropout: float = 0.2
    ) -> None:
        super().__init__()
        features, classes = input_size(data_config), num_classes(data_config)
        self.body = bn_blocks(features, widths, dropout)
        self.head = nn.Linear(widths[-1] if widths else features, classes)
        self.skip = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) + self.skip(torch.flatten(x, 1))
