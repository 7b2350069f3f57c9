"""The one fit loop, for every device setup, over what ``accelerator.prepare`` returns.

It reports validation loss and accuracy before training (as the seed notes do), then after every
epoch the train loss, validation loss and accuracy, and ends with a test-set evaluation.

Why each share's mean loss is scaled by ``share_size * world_size / global_batch``: each process
holds a share of the global batch (shares can differ by one example, and accumulation cuts it
further), and data parallelism averages gradients over processes. This scaling makes that average
exactly the gradient of the global batch's mean loss, for any number of processes and any
accumulation, so one seed trains the same model at every scale. With one process and a full
batch the factor is 1 and is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from zoo.augment import augment_micro_batch
from zoo.data import BatchPlan, ImageClassificationData
from zoo.divergence import check_loss
from zoo.early_stopping import EarlyStopping
from zoo.elastic import streams_of
from zoo.ema import WeightAverage
from zoo.finetune import parameter_groups
from zoo.recipe import TrainerSection
from zoo.sharding import is_sharded, shard_model
from zoo.step import CapturedStep, choose_step


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


def build_optimizer(params: Any, trainer: TrainerSection, capturable: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimizer: Adam/AdamW fused, or capturable for a captured step."""
    if trainer.optimizer == "sgd":
        return torch.optim.SGD(params, lr=trainer.lr, momentum=trainer.momentum, weight_decay=trainer.weight_decay)
    optimizer_class = torch.optim.AdamW if trainer.optimizer == "adamw" else torch.optim.Adam
    # Fused Adam does the whole update in one kernel per device: on a 2-core CPU it cut the step of
    # a batch-16 MLP from 1.65 ms to 0.3 ms (BENCHMARKS.md). A captured step needs capturable instead.
    speed = {"capturable": True, "foreach": True} if capturable else {"fused": True}
    return optimizer_class(params, lr=trainer.lr, weight_decay=trainer.weight_decay, **speed)


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


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ImageClassificationData, split: str, accelerator: Accelerator, resident: bool
) -> dict[str, float]:
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
    batches = data.batches(split, plan, 0, accelerator.device, accelerator.process_index,
                           accelerator.num_processes, resident)
    for images, labels in batches:
        with accelerator.autocast():
            logits = module(images)
        totals[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
        totals[1] += (logits.argmax(dim=1) == labels).sum()
        totals[2] += len(labels)
    totals = accelerator.reduce(totals, reduction="sum")
    module.train(was_training)
    count = max(totals[2].item(), 1.0)
    return {"loss": totals[0].item() / count, "acc": totals[1].item() / count}


def fit(
    model: nn.Module,
    data: ImageClassificationData,
    trainer: TrainerSection,
    accelerator: Accelerator,
    *,
    seed: int,
    resident: bool,
    state: FitState | None = None,
    hooks: FitHooks | None = None,
    prepared: tuple[nn.Module, torch.optim.Optimizer, Any] | None = None,
    mode: str | None = None,
    ema: WeightAverage | None = None,
    stopper: EarlyStopping | None = None,
) -> FitState:
    """Train ``model`` on ``data`` for ``trainer.epochs`` epochs; return the final state.

    ``prepared`` is ``(model, optimizer, scheduler)`` already passed through
    ``accelerator.prepare`` (and possibly restored from a checkpoint); without it they are built
    here. ``state`` continues an interrupted run from the exact micro-batch it stopped at.
    ``ema`` and ``stopper``: see :class:`Validation` (their state is the caller's to checkpoint).
    """
    state = state or FitState()
    hooks = hooks or FitHooks()
    plan = make_train_plan(data, trainer, seed)
    mode = mode or step_mode(trainer, accelerator, resident)
    if prepared is None:
        prepared = prepare_training(model, trainer, accelerator, plan, mode)
    model, optimizer, scheduler = prepared
    rank, world_size, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    steps = Steps(model, optimizer, scheduler, trainer, accelerator, plan)
    steps.ema = ema
    if mode == "graph":  # captured once, after any checkpoint was loaded into these very tensors
        steps.captured = capture_step(model, steps.optimizer, data, trainer, accelerator, plan)

    validation = Validation(model, data, accelerator, resident, ema, stopper)

    def record(epoch: int, train_loss: float | None, seconds: float) -> None:
        entry = validation.epoch_record(state, epoch, train_loss, seconds, optimizer.param_groups[0]["lr"])
        state.history.append(entry)
        hooks.on_epoch(entry)

    if not state.history:
        record(0, None, 0.0)  # where training starts from, as in the seed notes

    model.train()
    crop_padding, flip = getattr(data, "augment", (0, False))
    while state.epoch < trainer.epochs and not (stopper is not None and stopper.should_stop):
        epoch = state.epoch + 1
        steps.epoch = epoch
        loss_sum = torch.as_tensor(state.train_loss_sum, dtype=torch.float64).to(device)
        count = state.train_count
        started = time.perf_counter()
        for images, labels in data.batches("train", plan, epoch, device, rank, world_size, resident, state.step):
            if crop_padding or flip:  # drawn from (seed, epoch, step): the same at any scale and on resume
                images = augment_micro_batch(images, plan, seed, epoch, state.step, rank, world_size,
                                             crop_padding, flip)
            state.step += 1
            count += len(labels)
            loss, stepped = steps.micro_batch(images, labels, state.step)
            if loss is not None:
                loss_sum += loss
            if not stepped:
                continue
            state.global_step += 1
            state.train_loss_sum, state.train_count = loss_sum, count  # a reference: no device sync
            hooks.on_step(state, optimizer.param_groups[0]["lr"])
            every = trainer.val_every_steps
            if every and state.global_step % every == 0 and state.step != plan.micro_steps:
                # Not on an epoch's last step: the epoch's own evaluation follows.
                hooks.on_val(validation.step_record(state, state.epoch + state.step / plan.micro_steps))
            if hooks.after_step(state):
                return state
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # kernels run ahead of Python: time what ran, not what was queued
        seconds = time.perf_counter() - started
        counted = torch.tensor(float(count), device=device, dtype=torch.float64)
        totals = accelerator.reduce(torch.stack([loss_sum, counted]), "sum")
        train_loss = (totals[0] / totals[1].clamp_min(1)).item()
        state.epoch, state.step, state.train_loss_sum, state.train_count = epoch, 0, 0.0, 0
        record(epoch, train_loss, seconds)
        # Before after_epoch, so a diverged epoch is never checkpointed (the values are already on the host).
        before = state.history[0]["val_loss"]
        check_loss(train_loss, state.global_step, f"epoch {epoch}'s train loss", before)
        check_loss(state.history[-1]["val_loss"], state.global_step, f"epoch {epoch}'s validation loss", before)
        if hooks.after_epoch(state) or (stopper is not None and stopper.should_stop):
            return state
        model.train()
    return state


class Validation:
    """The validation split's evaluations during training, on the weights they are meant to judge:
    the EMA's when there is one. Epoch records also go to early stopping, which keeps the weights
    of the best one."""

    def __init__(self, model: nn.Module, data: ImageClassificationData, accelerator: Accelerator, resident: bool,
                 ema: WeightAverage | None, stopper: EarlyStopping | None) -> None:
        self.model, self.data, self.accelerator, self.resident = model, data, accelerator, resident
        self.ema, self.stopper = ema, stopper

    def _evaluated(self) -> Any:
        return self.ema.applied() if self.ema is not None else nullcontext()

    def epoch_record(self, state: FitState, epoch: int, train_loss: float | None, seconds: float,
                     lr: float) -> dict[str, Any]:
        with self._evaluated():
            val = evaluate(self.model, self.data, "validation", self.accelerator, self.resident)
            state.best_val_acc = max(state.best_val_acc, val["acc"]) if epoch > 0 else state.best_val_acc
            entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"], "val_acc": val["acc"],
                     "lr": lr, "train_seconds": seconds}
            if self.stopper is not None and epoch > 0 and self.stopper.observe(entry):
                self.stopper.keep(self.accelerator.unwrap_model(self.model).state_dict())
        return entry

    def step_record(self, state: FitState, epoch: float) -> dict[str, Any]:
        """A ``trainer.val_every_steps`` record: at an optimizer step, within an epoch."""
        with self._evaluated():
            val = evaluate(self.model, self.data, "validation", self.accelerator, self.resident)
        return {"global_step": state.global_step, "epoch": epoch, "val_loss": val["loss"], "val_acc": val["acc"]}


class Steps:
    """The optimizer steps of one fit call: plain, or captured as a CUDA graph (``captured``).

    Accelerate's wrappers exist for loss scaling; without a scaler they only add per-step Python
    work (about 0.1 ms a step, measured), so the plain optimizer and backward are used directly.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 trainer: TrainerSection, accelerator: Accelerator, plan: BatchPlan) -> None:
        self.model, self.scheduler, self.trainer, self.accelerator, self.plan = (
            model, scheduler, trainer, accelerator, plan)
        plain = accelerator.scaler is None
        self.optimizer = getattr(optimizer, "optimizer", optimizer) if plain else optimizer
        self.backward = (lambda loss: loss.backward()) if plain else accelerator.backward
        self.autocast = nullcontext if accelerator.mixed_precision == "no" else accelerator.autocast
        self.captured: CapturedStep | None = None
        self.ema: WeightAverage | None = None  # updated after every optimizer step
        self.dropout = streams_of(accelerator.unwrap_model(model))  # None: per-process dropout streams
        self.epoch = 0

    def micro_batch(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> tuple[torch.Tensor | None, bool]:
        """Train on the ``step``-th micro-batch of the epoch (counted from 1): its summed loss
        (None while a captured global batch is being gathered), and whether the optimizer stepped."""
        plan, accelerator = self.plan, self.accelerator
        global_batch = plan.global_batch_size(step - 1)
        stepped = step % plan.grad_accum == 0 or step == plan.micro_steps
        if self.dropout is not None:  # this share's rows of the micro-batch, for its dropout masks
            start, end = plan.micro_batch_bounds(step - 1)
            first_row = ((end - start) * accelerator.process_index) // accelerator.num_processes
            self.dropout.at(self.epoch, step, end - start, first_row)
        if self.captured is not None and global_batch == self.captured.batch_size:
            loss = self.captured.feed(images, labels)  # forward, backward, clip and step at the last one
        else:
            # This share's mean loss, scaled to its part of the global batch's mean.
            share = len(labels) * accelerator.num_processes / global_batch
            # Skip the gradient all-reduce on micro-batches that only accumulate.
            context = accelerator.no_sync(self.model) if not stepped else nullcontext()
            with context, self.autocast():
                mean = F.cross_entropy(self.model(images).float(), labels)
                self.backward(mean * share if share != 1 else mean)
            loss = mean.detach() * len(labels)
            if stepped:
                if self.trainer.grad_clip is not None:
                    accelerator.clip_grad_norm_(self.model.parameters(), self.trainer.grad_clip)
                self.optimizer.step()
        if stepped:
            if self.ema is not None and not accelerator.optimizer_step_was_skipped:
                # Outside the captured graph too, as one fused launch of its own: capturing it
                # would need the average saved and restored around the graph's warm-up steps.
                self.ema.update()
            if self.scheduler is not None and not accelerator.optimizer_step_was_skipped:
                self.scheduler.step()
                if self.captured is not None:
                    self.captured.sync_lr()  # the graph reads the LR from the device
            self.optimizer.zero_grad(set_to_none=True)
        return loss, stepped


def make_train_plan(data: ImageClassificationData, trainer: TrainerSection, seed: int) -> BatchPlan:
    """The training batches' order: fixed by the seed and the epoch alone."""
    return BatchPlan(len(data.splits["train"]), data.batch_size, seed, shuffle=True, grad_accum=trainer.grad_accum)


def step_mode(trainer: TrainerSection, accelerator: Accelerator, resident: bool) -> str:
    """The step that runs here for ``trainer.compile``; prints one line when an explicit choice cannot."""
    mode, reason = choose_step(trainer, accelerator.device, accelerator.num_processes, resident)
    if reason is not None:
        accelerator.print(f"[zoo] {reason}")
    return mode


def capture_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageClassificationData,
                 trainer: TrainerSection, accelerator: Accelerator, plan: BatchPlan) -> CapturedStep | None:
    """The captured step for this run's full global batches (None when the set has none).

    Called after any checkpoint was loaded, because the graph works on these very tensors.
    """
    if plan.num_examples < plan.batch_size:
        return None
    # Any full batch serves as the example: its values are replaced before every replay.
    first = BatchPlan(plan.batch_size, plan.batch_size, seed=0, shuffle=False)
    images, labels = next(data.batches("train", first, 0, accelerator.device, resident=True))
    try:
        return CapturedStep(model, optimizer, images, labels, grad_accum=trainer.grad_accum,
                            grad_clip=trainer.grad_clip, bf16=trainer.mixed_precision == "bf16")
    except RuntimeError as exc:  # a model whose step syncs with the host, or has data-dependent shapes
        if trainer.compile != "auto":
            raise
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        accelerator.print(f"[zoo] this model's step cannot be captured as a CUDA graph ({first_line}); "
                          "running the plain step (trainer.compile=none skips the attempt)")
        return None


def prepare_training(
    model: nn.Module, trainer: TrainerSection, accelerator: Accelerator, plan: BatchPlan, mode: str = "none"
) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """Build the optimizer and schedule for ``model`` and pass them through ``accelerator.prepare``.

    ``mode`` is what :func:`step_mode` chose. The schedule is stepped once per optimizer step by
    the loop itself, not by Accelerate: our batches are already global (Accelerate would step it
    once per process).
    """
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
    return model, optimizer, scheduler


def evaluate_test(
    model: nn.Module, data: ImageClassificationData, accelerator: Accelerator, resident: bool
) -> dict[str, float]:
    """The final test-set evaluation."""
    metrics = evaluate(model, data, "test", accelerator, resident)
    return {"test_loss": metrics["loss"], "test_acc": metrics["acc"]}
