"""A deeper MLP with BatchNorm after every hidden layer, which keeps deeper nets trainable."""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.common import DataConfig, DropoutRate, Width, bn_blocks, input_size, num_classes
from zoo.registry import register_model


def bn_body_and_head(
    data_config: DataConfig, widths: tuple[int, ...], dropout: float
) -> tuple[nn.Sequential, nn.Linear]:
    """:class:`BatchNormMLP`'s hidden blocks and output layer, for the models built on it."""
    features = input_size(data_config)
    return bn_blocks(features, widths, dropout), nn.Linear(widths[-1] if widths else features, num_classes(data_config))


@register_model("bn_mlp")
class BatchNormMLP(nn.Module):
    """A deep nn.Sequential of Linear -> BatchNorm1d -> ReLU -> Dropout blocks.

    Args:
        widths: width of each hidden block; its length is the depth.
        dropout: dropout probability after each block.
    """

    def __init__(
        self, data_config: DataConfig, widths: tuple[Width, ...] = (512, 256, 128), dropout: DropoutRate = 0.2
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(*bn_body_and_head(data_config, widths, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
