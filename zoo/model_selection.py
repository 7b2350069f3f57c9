"""Which weights a run evaluates and keeps: the EMA (``trainer.ema``) and early stopping's best
epoch (``trainer.early_stopping``), around the one fit loop.

:class:`WeightSelection` builds both from the recipe, hands their state to every checkpoint
(``ema.safetensors``, ``best.safetensors`` and the counters in ``state.json``), restores it on
resume, and at the end loads the run's model into the live one: the best epoch's weights when
early stopping kept some, else the average when there is one, else the weights as trained. The
raw trained weights are returned too when they differ from the kept ones because of the EMA, so
the run folder can hold both. Every process holds the same copies, so the collective test
evaluation sees the same weights everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.early_stopping import EarlyStopping
from zoo.ema import WeightAverage
from zoo.errors import ZooError


class WeightSelection:
    def __init__(self, trainer: Any, model: nn.Module) -> None:
        """``model`` is the unwrapped model, after ``accelerator.prepare``."""
        if getattr(trainer, "strategy", "ddp") == "fsdp" and (trainer.ema or trainer.early_stopping is not None):
            # Sharded weights would need sharded averages and best copies, saved with the shards.
            raise ZooError("trainer.ema and trainer.early_stopping work with trainer.strategy=ddp only; "
                           "set trainer.strategy=ddp or turn them off")
        self.model = model
        self.ema = WeightAverage(model, trainer.ema) if trainer.ema else None
        rule = trainer.early_stopping
        self.stopper = (EarlyStopping(rule.metric, rule.mode, rule.patience, rule.min_delta)
                        if rule is not None else None)

    def checkpoint_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        tensors = {}
        if self.ema is not None:
            tensors["ema"] = self.ema.state_dict()
        if self.stopper is not None and self.stopper.best_weights is not None:
            tensors["best"] = self.stopper.best_weights
        return tensors

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"early_stopping": self.stopper.state_dict()} if self.stopper is not None else {}

    def restore(self, folder: Path, extra: dict[str, Any], device: torch.device) -> None:
        """Continue from a checkpoint's average, best weights and counters, bit for bit."""
        from zoo.checkpoint import load_tensors

        if self.ema is not None:
            saved = load_tensors(folder, "ema", device)
            if saved is None:  # the checkpoint was written without trainer.ema: start the average here
                print(f"[zoo] {folder} has no EMA; the average starts from its weights", flush=True)
            else:
                self.ema.load_state_dict(saved)
        if self.stopper is not None and "early_stopping" in extra:
            self.stopper.load_state_dict(extra["early_stopping"], load_tensors(folder, "best", device))

    @torch.no_grad()
    def select_final(self) -> dict[str, torch.Tensor] | None:
        """Load the run's model into the live model; returns the raw trained weights when the EMA is on."""
        live = self.model.state_dict()
        raw = {name: tensor.detach().clone() for name, tensor in live.items()} if self.ema is not None else None
        if self.stopper is not None and self.stopper.best_weights is not None:
            chosen = self.stopper.best_weights
        elif self.ema is not None:
            chosen = self.ema.state_dict()
        else:
            return None
        for name, tensor in chosen.items():
            live[name].copy_(tensor)
        return raw

    @property
    def stopped_early(self) -> bool:
        return self.stopper is not None and self.stopper.should_stop

    def summary(self, epochs: int) -> dict[str, Any]:
        """What ``summary.json`` says about why training stopped and the kept weights."""
        result: dict[str, Any] = {"stop_reason": f"early stopping: {self.stopper.reason}" if self.stopped_early
                                  else f"trainer.epochs={epochs} done"}
        if self.ema is not None:
            result["ema"] = self.ema.decay
        if self.stopper is not None:
            stopper = self.stopper
            result["early_stopping"] = {
                "metric": stopper.metric, "best": stopper.best, "best_epoch": stopper.best_epoch,
                "stopped_epoch": stopper.stopped_epoch, "reason": stopper.reason,
            }
        return result
