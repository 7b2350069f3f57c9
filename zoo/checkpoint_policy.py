"""When a run writes a checkpoint and when it stops: the policy around the fit loop's hooks.

A checkpoint (zoo/checkpoint.py) is written every ``checkpoint.every_steps`` optimizer steps and at
every epoch's end. A stop asked for by a signal (:class:`zoo.preemption.StopFlag`) is agreed by
every rank at a step boundary and always leaves a checkpoint of that very step, written once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.checkpoint import save_checkpoint
from zoo.fit import Training
from zoo.fit_state import FitState
from zoo.model_selection import WeightSelection
from zoo.preemption import StopFlag
from zoo.recipe import Recipe
from zoo.tracking import Tracker


class CheckpointPolicy:
    """``after_step`` and ``after_epoch`` for :class:`zoo.fit.FitHooks`: each saves when it is time and
    returns True when training must stop now.

    ``training`` is what fit trains (:class:`zoo.fit.Training`); ``recorded`` holds what each
    checkpoint keeps beside them for a resume to check (the recipe as given, the world-size
    dependent layers); ``tracker`` gives the run ids to continue and hears of every save.
    """

    def __init__(self, recipe: Recipe, output_dir: Path, accelerator: Any, training: Training,
                 selection: WeightSelection, tracker: Tracker, stop: StopFlag, recorded: dict[str, Any]) -> None:
        self.recipe, self.output_dir, self.accelerator = recipe, output_dir, accelerator
        self.training, self.selection, self.tracker, self.stop = training, selection, tracker, stop
        self.recorded = recorded

    def save(self, state: FitState) -> None:
        """One checkpoint of ``state``, on every process (collective)."""
        tracker, selection = self.tracker, self.selection
        extra = {"seed": self.recipe.seed, "wandb_run_id": tracker.wandb_run_id,
                 "tracker_run_ids": tracker.run_ids, **self.recorded, **selection.checkpoint_extra(),
                 "strategy": self.recipe.trainer.strategy}
        training = self.training
        folder = save_checkpoint(self.accelerator, self.output_dir, training.model, training.optimizer,
                                 training.scheduler, state, extra, self.recipe.checkpoint.keep,
                                 selection.checkpoint_tensors())
        tracker.log_checkpoint(folder)  # a W&B artifact only with tracking.artifacts=all

    def after_step(self, state: FitState) -> bool:
        if state.step == self.training.plan.micro_steps:
            # The epoch's last step: its end follows at once, saves and asks the stop flag. Saving
            # here too would write the step twice, and replacing a checkpoint is not atomic.
            return False
        every = self.recipe.checkpoint.every_steps
        saved = bool(every) and state.global_step % every == 0
        if saved:
            self.save(state)
        if self.stop.agreed(state.global_step):
            if not saved:
                self.save(state)
            self.stop.checkpointed = True
            return True
        return False

    def after_epoch(self, state: FitState) -> bool:
        self.save(state)
        self.stop.checkpointed = self.stop.agreed(state.global_step, epoch_end=True)
        return self.stop.checkpointed
