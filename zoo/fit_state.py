"""Where training stands (:class:`FitState`, what a checkpoint holds) and what the run around the fit
loop hears of it (:class:`FitHooks`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class FitState:
    """Where training stands: what a checkpoint must hold to continue exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # micro-batches done within the current epoch
    global_step: int = 0  # optimizer steps done in all
    train_loss_sum: float | torch.Tensor = 0.0  # this process's summed loss so far this epoch
    train_count: int = 0  # and the examples it summed over (both for exact mid-epoch resume)
    best_val_acc: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FitHooks:
    """What the run around the loop wants to hear about; every hook is optional."""

    on_epoch: Callable[[dict[str, Any]], None] = lambda record: None
    on_step: Callable[[FitState, float], None] = lambda state, lr: None
    on_val: Callable[[dict[str, Any]], None] = lambda record: None  # trainer.val_every_steps records
    # Called after every optimizer step and after every epoch's evaluation; each returns True when
    # training must stop now (preemption). This is where checkpoints are written.
    after_step: Callable[[FitState], bool] = lambda state: False
    after_epoch: Callable[[FitState], bool] = lambda state: False
