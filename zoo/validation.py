"""Evaluations: exact loss and accuracy over a whole split, during training and at its end."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from zoo.batching import BatchPlan
from zoo.data import ImageClassificationData
from zoo.early_stopping import EarlyStopping
from zoo.ema import WeightAverage
from zoo.fit_state import FitState


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageClassificationData, split: str, accelerator: Accelerator) -> dict[str, float]:
    """Exact loss and accuracy over a whole split, each process taking a disjoint share.

    Sums are reduced across processes, so nothing is padded or counted twice. The unwrapped
    model is used: processes may hold different numbers of batches, and a data-parallel
    forward would wait for the others.
    """
    module = accelerator.unwrap_model(model)
    was_training = module.training
    module.eval()
    plan = BatchPlan(len(data.splits[split]), data.eval_batch_size, seed=0, shuffle=False)
    totals = torch.zeros(3, device=accelerator.device, dtype=torch.float64)
    for images, labels in data.batches(split, plan, 0, accelerator.process_index, accelerator.num_processes):
        with accelerator.autocast():
            logits = module(images)
        totals[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
        totals[1] += (logits.argmax(dim=1) == labels).sum()
        totals[2] += len(labels)
    totals = accelerator.reduce(totals, reduction="sum")
    module.train(was_training)
    count = max(totals[2].item(), 1.0)
    return {"loss": totals[0].item() / count, "acc": totals[1].item() / count}


def evaluate_test(model: nn.Module, data: ImageClassificationData, accelerator: Accelerator) -> dict[str, float]:
    """The final test-set evaluation."""
    metrics = evaluate(model, data, "test", accelerator)
    return {"test_loss": metrics["loss"], "test_acc": metrics["acc"]}


class Validation:
    """The validation split's evaluations during training, on the weights they are meant to judge:
    the EMA's when there is one. Epoch records also go to early stopping, which keeps the weights
    of the best one."""

    def __init__(self, model: nn.Module, data: ImageClassificationData, accelerator: Accelerator,
                 ema: WeightAverage | None, stopper: EarlyStopping | None) -> None:
        self.model, self.data, self.accelerator = model, data, accelerator
        self.ema, self.stopper = ema, stopper

    def _evaluated(self) -> Any:
        return self.ema.applied() if self.ema is not None else nullcontext()

    def epoch_record(self, state: FitState, epoch: int, train_loss: float | None, seconds: float,
                     lr: float) -> dict[str, Any]:
        with self._evaluated():
            val = evaluate(self.model, self.data, "validation", self.accelerator)
            state.best_val_acc = max(state.best_val_acc, val["acc"]) if epoch > 0 else state.best_val_acc
            entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"], "val_acc": val["acc"],
                     "lr": lr, "train_seconds": seconds}
            if self.stopper is not None and epoch > 0 and self.stopper.observe(entry):
                self.stopper.keep(self.accelerator.unwrap_model(self.model).state_dict())
        return entry

    def step_record(self, state: FitState, epoch: float) -> dict[str, Any]:
        """A ``trainer.val_every_steps`` record: at an optimizer step, within an epoch."""
        with self._evaluated():
            val = evaluate(self.model, self.data, "validation", self.accelerator)
        return {"global_step": state.global_step, "epoch": epoch, "val_loss": val["loss"], "val_acc": val["acc"]}

    @property
    def should_stop(self) -> bool:
        """Early stopping saw no improvement for its patience."""
        return self.stopper is not None and self.stopper.should_stop
