"""The baseline MLP (784-1024-128-10 on MNIST), built from the data's shapes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.common import DataConfig, DropoutRate, Width, input_size, num_classes
from zoo.registry import register_model


@register_model("mlp")
class MLP(nn.Module):
    """Two hidden layers with ReLU and dropout: the baseline classifier for single characters.

    Args:
        fc1: width of the first hidden layer.
        fc2: width of the second hidden layer.
        dropout: dropout probability after each hidden layer.
    """

    fsdp_blocks = ("fc1", "fc2")  # trainer.strategy=fsdp shards these as blocks (zoo.sharding)

    def __init__(
        self, data_config: DataConfig, fc1: Width = 1024, fc2: Width = 128, dropout: DropoutRate = 0.5
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size(data_config), fc1)
        self.fc2 = nn.Linear(fc1, fc2)
        self.fc3 = nn.Linear(fc2, num_classes(data_config))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = self.dropout(F.relu(self.fc1(x)))
        x = self.dropout(F.relu(self.fc2(x)))
        return self.fc3(x)
