"""The BatchNorm MLP plus a linear skip connection from the inputs to the logits."""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.bn_mlp import bn_body_and_head
from zoo.models.common import DataConfig, DropoutRate, Width, input_size, num_classes
from zoo.registry import register_model


@register_model("skip_mlp")
class SkipMLP(nn.Module):
    """Deep BatchNorm MLP whose logits get a linear map of the flattened inputs added to them.

    The skip layer gives the net a linear model to fall back on, so adding depth cannot make it
    worse than a linear classifier.

    Args:
        widths: width of each hidden block; its length is the depth.
        dropout: dropout probability after each block.
    """

    def __init__(
        self, data_config: DataConfig, widths: tuple[Width, ...] = (512, 256, 128), dropout: DropoutRate = 0.2
    ) -> None:
        super().__init__()
        # The body and head are bn_mlp's; their attribute names are what saved runs' weights use.
        self.body, self.head = bn_body_and_head(data_config, widths, dropout)
        self.skip = nn.Linear(input_size(data_config), num_classes(data_config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) + self.skip(torch.flatten(x, 1))
