"""Early stopping (``trainer.early_stopping``): stop when a metric has stopped improving.

Decided after each epoch's evaluation only (epoch 0, before training, is not a candidate): an
epoch improves on the best so far when its metric beats it by more than ``min_delta`` (lower for
``mode: min``, higher for ``max``); after ``patience`` epochs in a row without improvement the
run stops. The metric comes from the epoch record, which is reduced across processes, so every
process takes the same decision at the same epoch.

The best epoch's weights (the evaluated ones: the EMA when it is on) are kept on the device and
become the run's model. Counters and best value go into every checkpoint (:meth:`state_dict`),
the weights beside them, so a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class EarlyStopping:
    def __init__(self, metric: str, mode: str, patience: int, min_delta: float) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"early-stopping mode is min or max, got {mode!r}")
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0  # epochs in a row without improvement
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def observe(self, record: dict[str, Any]) -> bool:
        """Take an epoch record; True when it is the best so far (its weights should be kept)."""
        value = record.get(self.metric)
        if value is None:
            raise KeyError(f"early stopping watches '{self.metric}', which the epoch record does not have")
        if self.improves(float(value)):
            self.best, self.best_epoch, self.bad_epochs = float(value), int(record["epoch"]), 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.stopped_epoch = int(record["epoch"])
        return False

    @property
    def should_stop(self) -> bool:
        return self.stopped_epoch is not None

    @property
    def reason(self) -> str | None:
        """Why the run stopped early, for ``summary.json``; None while it has not."""
        if self.stopped_epoch is None:
            return None
        return (f"{self.metric} did not improve by more than {self.min_delta} for {self.patience} epoch(s); "
                f"best {self.best:.6g} at epoch {self.best_epoch}")

    @torch.no_grad()
    def keep(self, weights: dict[str, torch.Tensor]) -> None:
        """Remember these weights as the best ones (a device-side copy, reused between epochs)."""
        if self.best_weights is None or self.best_weights.keys() != weights.keys():
            self.best_weights = {name: tensor.detach().clone() for name, tensor in weights.items()}
            return
        for name, tensor in weights.items():
            self.best_weights[name].copy_(tensor)

    def state_dict(self) -> dict[str, Any]:
        """Counters and best value (JSON-safe); the weights are saved separately."""
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, torch.Tensor] | None = None) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.stopped_epoch = state["bad_epochs"], state["stopped_epoch"]
        if weights is not None:
            self.keep(weights)
