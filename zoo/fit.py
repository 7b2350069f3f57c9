"""The one fit loop, for every device setup, over what ``accelerator.prepare`` returns.

:func:`prepare_training` builds what a run trains, once (:class:`Training`); :func:`fit` trains it.
It reports validation loss and accuracy before training (the starting point every curve is read
against), then after every epoch the train loss, validation loss and accuracy; the run ends with a
test-set evaluation (:mod:`zoo.validation`). Each optimizer step is :class:`zoo.step.Steps`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from zoo.augment import augment_micro_batch
from zoo.batching import BatchPlan
from zoo.data import ImageClassificationData
from zoo.divergence import check_loss
from zoo.early_stopping import EarlyStopping
from zoo.ema import WeightAverage
from zoo.finetune import parameter_groups
from zoo.fit_state import FitHooks, FitState
from zoo.recipe import TrainerSection
from zoo.sharding import is_sharded, shard_model
from zoo.step import Steps, capture_step
from zoo.validation import Validation

__all__ = ["FitHooks", "FitState", "Training", "build_optimizer", "build_scheduler", "fit", "make_train_plan",
           "prepare_training"]


@dataclass
class Training:
    """What :func:`fit` trains, built once by :func:`prepare_training`: the model, optimizer and schedule
    after ``accelerator.prepare`` (a checkpoint may be loaded into them before fit), the batch order and
    the step mode (:func:`zoo.step.step_mode`) they were built for."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    plan: BatchPlan
    mode: str
    trainer: TrainerSection


def build_optimizer(params: Any, trainer: TrainerSection, capturable: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimizer: Adam/AdamW fused, or capturable for a captured step."""
    if trainer.optimizer == "sgd":
        return torch.optim.SGD(params, lr=trainer.lr, momentum=trainer.momentum, weight_decay=trainer.weight_decay)
    optimizer_class = torch.optim.AdamW if trainer.optimizer == "adamw" else torch.optim.Adam
    # Fused Adam does the whole update in one kernel per device: on a 2-core CPU it cut the step of
    # a batch-16 MLP from 1.65 ms to 0.3 ms (BENCHMARKS.md). A captured step needs capturable too:
    # its step count stays on the device and it takes the LR as a device tensor (fused+capturable is
    # what torch's own CUDA-graph tests of fused optimizers capture); on a CPU the same optimizer runs
    # the same code eagerly, which is how tests/test_step.py checks the captured step without a GPU.
    return optimizer_class(params, lr=trainer.lr, weight_decay=trainer.weight_decay, fused=True,
                           capturable=capturable)


def build_scheduler(
    optimizer: torch.optim.Optimizer, trainer: TrainerSection, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    total_steps = max(1, total_steps)
    if trainer.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if trainer.schedule == "onecycle":  # each group's own peak: a scaled backbone stays scaled
        peaks = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total_steps)
    return None


def make_train_plan(data: ImageClassificationData, trainer: TrainerSection, seed: int) -> BatchPlan:
    """The training batches' order: fixed by the seed and the epoch alone."""
    return BatchPlan(len(data.splits["train"]), data.batch_size, seed, shuffle=True, grad_accum=trainer.grad_accum)


def prepare_training(model: nn.Module, data: ImageClassificationData, trainer: TrainerSection,
                     accelerator: Accelerator, *, seed: int, mode: str) -> Training:
    """Build the optimizer and schedule for ``model`` and pass them through ``accelerator.prepare``.

    ``mode`` is what :func:`zoo.step.step_mode` chose. The schedule is stepped once per optimizer step by
    the loop itself, not by Accelerate: our batches are already global (Accelerate would step it
    once per process).
    """
    plan = make_train_plan(data, trainer, seed)
    if mode == "torch":
        model.compile(mode="reduce-overhead")
    sharded = is_sharded(trainer, accelerator.num_processes)
    if sharded:  # before the optimizer: it steps on the shards
        model = shard_model(model, trainer, accelerator)
    groups = parameter_groups(model, trainer.lr, trainer.backbone_lr_scale)  # frozen parameters left out
    optimizer = build_optimizer(groups, trainer, capturable=mode == "graph")
    scheduler = build_scheduler(optimizer, trainer, total_steps=plan.global_batches * trainer.epochs)
    if not sharded:  # a sharded model is already distributed; Accelerate would wrap it in DDP too
        model, optimizer = accelerator.prepare(model, optimizer)
    return Training(model, optimizer, scheduler, plan, mode, trainer)


def fit(
    training: Training,
    data: ImageClassificationData,
    accelerator: Accelerator,
    *,
    state: FitState | None = None,
    hooks: FitHooks | None = None,
    ema: WeightAverage | None = None,
    stopper: EarlyStopping | None = None,
) -> FitState:
    """Train for ``training.trainer.epochs`` epochs; return the final state.

    ``state`` continues an interrupted run from the exact micro-batch it stopped at. ``ema`` and
    ``stopper``: see :class:`zoo.validation.Validation` (their state is the caller's to checkpoint).
    """
    state = state or FitState()
    hooks = hooks or FitHooks()
    steps = Steps(training.model, training.optimizer, training.scheduler, training.trainer, accelerator,
                  training.plan, ema)
    if training.mode == "graph":  # captured once, after any checkpoint was loaded into these very tensors
        steps.captured = capture_step(training.model, steps.optimizer, data, training.trainer, accelerator,
                                      training.plan)
    validation = Validation(training.model, data, accelerator, ema, stopper)
    if not state.history:  # where training starts from
        _record(state, hooks, validation.epoch_record(state, 0, None, 0.0, _lr(training)))
    while state.epoch < training.trainer.epochs and not validation.should_stop:
        training.model.train()
        if _train_epoch(training, data, accelerator, state, steps, hooks, validation):
            return state
        if hooks.after_epoch(state):
            return state
    return state


def _lr(training: Training) -> float:
    return training.optimizer.param_groups[0]["lr"]


def _record(state: FitState, hooks: FitHooks, entry: dict[str, Any]) -> None:
    state.history.append(entry)
    hooks.on_epoch(entry)


def _train_epoch(training: Training, data: ImageClassificationData, accelerator: Accelerator, state: FitState,
                 steps: Steps, hooks: FitHooks, validation: Validation) -> bool:
    """Train the next epoch (or the rest of it, on resume), evaluate it and record it; True when a hook
    stopped training within it."""
    plan, trainer, device = training.plan, training.trainer, accelerator.device
    rank, world_size = accelerator.process_index, accelerator.num_processes
    epoch = state.epoch + 1
    steps.epoch = epoch
    crop_padding, flip = data.augment
    running = state.running_loss
    running.on_device(device)
    started = time.perf_counter()
    for images, labels in data.batches("train", plan, epoch, rank, world_size, state.step):
        if crop_padding or flip:  # drawn from (seed, epoch, step): the same at any scale and on resume
            images = augment_micro_batch(images, plan, plan.seed, epoch, state.step, rank, world_size,
                                         crop_padding, flip)
        state.step += 1
        loss, stepped = steps.micro_batch(images, labels, state.step)
        running.add(loss, len(labels))
        if not stepped:
            continue
        state.global_step += 1
        hooks.on_step(state, _lr(training))
        every = trainer.val_every_steps
        if every and state.global_step % every == 0 and state.step != plan.micro_steps:
            # Not on an epoch's last step: the epoch's own evaluation follows.
            hooks.on_val(validation.step_record(state, state.epoch + state.step / plan.micro_steps))
        if hooks.after_step(state):
            return True
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run ahead of Python: time what ran, not what was queued
    seconds = time.perf_counter() - started
    counted = torch.tensor(float(running.examples), device=device, dtype=torch.float64)
    totals = accelerator.reduce(torch.stack([running.loss_sum, counted]), "sum")
    train_loss = (totals[0] / totals[1].clamp_min(1)).item()
    running.end_epoch()
    state.epoch, state.step = epoch, 0
    _record(state, hooks, validation.epoch_record(state, epoch, train_loss, seconds, _lr(training)))
    # Before after_epoch, so a diverged epoch is never checkpointed (the values are already on the host).
    before = state.history[0]["val_loss"]
    check_loss(train_loss, state.global_step, f"epoch {epoch}'s train loss", before)
    check_loss(state.history[-1]["val_loss"], state.global_step, f"epoch {epoch}'s validation loss", before)
    return False
