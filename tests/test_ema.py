"""The weight average: the same numbers as torch's own EMA helper, swapped in and out exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from zoo.ema import WeightAverage


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def _train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, after_step) -> None:
    torch.manual_seed(1)
    for _ in range(5):
        loss = model(torch.randn(32, 8)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        after_step()


def test_matches_torch_averaged_model_including_buffers() -> None:
    model = _model()
    reference = AveragedModel(copy.deepcopy(model), multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    reference.update_parameters(model)  # AveragedModel's first update copies the starting weights
    average = WeightAverage(model, decay=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def both() -> None:
        average.update()
        reference.update_parameters(model)

    _train_steps(model, optimizer, both)
    expected = reference.module.state_dict()
    got = average.state_dict()
    assert "1.running_mean" in got and "1.num_batches_tracked" not in got
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(got["0.weight"], model.state_dict()["0.weight"])  # it really lags


def test_applied_swaps_in_and_restores_bit_exactly() -> None:
    model = _model()
    average = WeightAverage(model, decay=0.5)
    _train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), average.update)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied():
        for name, tensor in average.state_dict().items():
            assert torch.equal(model.state_dict()[name], tensor)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, raw[name]), name


def test_state_dict_round_trip_and_mismatch() -> None:
    model = _model()
    average = WeightAverage(model, decay=0.5)
    _train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), average.update)
    saved = {k: v.clone() for k, v in average.state_dict().items()}
    other = WeightAverage(_model(), decay=0.5)
    other.load_state_dict(saved)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(ValueError, match="does not fit"):
        other.load_state_dict({"0.weight": saved["0.weight"]})
    with pytest.raises(ValueError):
        WeightAverage(model, decay=1.0)
