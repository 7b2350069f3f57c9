"""Where training stands (:class:`FitState`, what a checkpoint holds), the one running train loss of a
fit (:class:`RunningLoss`), and what the run around the fit loop hears of it (:class:`FitHooks`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Sum = float | torch.Tensor  # a device tensor once a step has added to it


class RunningLoss:
    """This process's summed train loss and the examples it covers, since its epoch began.

    Every micro-batch adds to it in place on the device, so no step waits for the device. It has
    two readers: the epoch's end (its mean; a checkpoint keeps the sums for an exact mid-epoch
    resume) and the tracker's windows: :meth:`take_window` gives what was added since the last
    window, across epoch ends, at every ``tracking.log_every`` boundary.
    """

    def __init__(self, loss_sum: float = 0.0, examples: int = 0) -> None:
        self.loss_sum: Sum = loss_sum
        self.examples = examples
        # A resumed epoch's sums belong to the attempt that trained them: no window of this one.
        self._taken: tuple[Sum, int] = (_snapshot(loss_sum), examples)  # what past windows took of this epoch's sums
        self._carried: tuple[Sum, int] = (0.0, 0)  # what ended epochs added after their last window

    def begin_window(self) -> None:
        """Start a window here: what was added before is no window's."""
        self._taken, self._carried = (_snapshot(self.loss_sum), self.examples), (0.0, 0)

    def on_device(self, device: torch.device) -> None:
        """Hold the sum on ``device`` (at an epoch's start: a resumed sum arrives as a host number)."""
        self.loss_sum = torch.as_tensor(self.loss_sum, dtype=torch.float64).to(device)

    def add(self, loss_sum: torch.Tensor | None, examples: int) -> None:
        """One micro-batch: its summed loss (None while a captured global batch is being gathered)."""
        if loss_sum is not None:
            self.loss_sum += loss_sum
        self.examples += examples

    def end_epoch(self) -> None:
        """The epoch's sums are final: what no window took carries over; the next epoch starts at zero."""
        (taken_sum, taken_examples), (carried_sum, carried_examples) = self._taken, self._carried
        self._carried = (carried_sum + (self.loss_sum - taken_sum), carried_examples + self.examples - taken_examples)
        self.loss_sum, self.examples, self._taken = 0.0, 0, (0.0, 0)

    def take_window(self) -> tuple[Sum, int]:
        """The loss sum and examples added since the last window (no device sync); the next window starts."""
        (taken_sum, taken_examples), (carried_sum, carried_examples) = self._taken, self._carried
        window = (carried_sum + (self.loss_sum - taken_sum), carried_examples + self.examples - taken_examples)
        self._taken, self._carried = (_snapshot(self.loss_sum), self.examples), (0.0, 0)
        return window


def _snapshot(value: Sum) -> Sum:
    return value.detach().clone() if isinstance(value, torch.Tensor) else float(value)


@dataclass
class FitState:
    """Where training stands: what a checkpoint must hold to continue exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # micro-batches done within the current epoch
    global_step: int = 0  # optimizer steps done in all
    best_val_acc: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    running_loss: RunningLoss = field(default_factory=RunningLoss)  # per process: in each rank's checkpoint file

    def progress(self) -> dict[str, Any]:
        """What every process shares (a checkpoint's ``state.json``); the running loss is per process."""
        return {"epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                "best_val_acc": self.best_val_acc, "history": self.history}


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
