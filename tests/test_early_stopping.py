"""Early stopping's decision, and that a restored one decides exactly as the original."""

from __future__ import annotations

import json

import pytest
import torch

from zoo.early_stopping import EarlyStopping


def _records(values: list[float], metric: str = "val_loss") -> list[dict]:
    return [{"epoch": i + 1, metric: v} for i, v in enumerate(values)]


def test_stops_after_patience_epochs_without_improvement() -> None:
    stopper = EarlyStopping("val_loss", "min", patience=2, min_delta=0.0)
    kept = [stopper.observe(r) for r in _records([1.0, 0.8, 0.85, 0.8])]
    assert kept == [True, True, False, False]  # equal to the best is no improvement
    assert stopper.should_stop and stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    assert "val_loss did not improve" in stopper.reason and "epoch 2" in stopper.reason


def test_min_delta_mode_max_and_nan() -> None:
    stopper = EarlyStopping("val_acc", "max", patience=3, min_delta=0.01)
    for record in _records([0.5, 0.505, float("nan"), 0.52], metric="val_acc"):
        stopper.observe(record)
    assert stopper.best == 0.52 and stopper.bad_epochs == 0 and not stopper.should_stop
    with pytest.raises(KeyError):
        stopper.observe({"epoch": 5, "val_loss": 1.0})


def test_restored_state_continues_identically() -> None:
    values = [1.0, 0.9, 0.95, 0.97, 0.99]
    whole = EarlyStopping("val_loss", "min", patience=3, min_delta=0.0)
    for record in _records(values):
        whole.observe(record)
    first = EarlyStopping("val_loss", "min", patience=3, min_delta=0.0)
    for record in _records(values)[:3]:
        first.observe(record)
    first.keep({"w": torch.ones(2)})
    saved = json.loads(json.dumps(first.state_dict()))  # what a checkpoint's state.json holds
    second = EarlyStopping("val_loss", "min", patience=3, min_delta=0.0)
    second.load_state_dict(saved, {"w": torch.ones(2)})
    for record in _records(values)[3:]:
        second.observe(record)
    assert second.state_dict() == whole.state_dict() and second.stopped_epoch == 5
    assert torch.equal(second.best_weights["w"], torch.ones(2))
