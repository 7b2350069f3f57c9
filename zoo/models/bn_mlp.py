"""A deeper MLP with BatchNorm: the seed notes' tip for training deeper nets stably."""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.common import DataConfig, bn_blocks, input_size, num_classes
from zoo.registry import register_model


@register_model("bn_mlp")
class BatchNormMLP(nn.Module):
    """A deep nn.Sequential of Linear -> BatchNorm1d -> ReLU -> Dropout blocks.

    Args:
        widths: width of each hidden block; its length is the depth.
        dropout: dropout probability after each block.
    """

    def __init__(
        self, data_config: DataConfig, widths: tuple[int, ...] = (512, 256, 128), dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            bn_blocks(input_size(data_config), widths, dropout),
            nn.Linear(widths[-1] if widths else input_size(data_config), num_classes(data_config)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
