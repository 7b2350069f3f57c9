"""The training step, and the low-overhead versions of it that ``trainer.compile`` selects.

* ``auto`` (the default): ``graph`` where it can run (a CUDA device, one process, batches resident
  on the device, no fp16 loss scaler), otherwise ``none``, without a word.
* ``none``: the plain eager step.
* ``torch``: ``torch.compile(mode="reduce-overhead")`` on the model (CUDA graphs under the hood).
* ``graph``: the whole optimizer step (every micro-batch's forward and backward, gradient
  clipping, the optimizer update) captured once as one CUDA graph and replayed for every full
  global batch, so a step costs one launch instead of hundreds. This is what makes small models
  fast on a big GPU, where Python and kernel launches dominate.

An explicit ``graph`` or ``torch`` that cannot run here falls back and says so in one line;
results do not depend on the switch beyond float tolerance.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from itertools import pairwise
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from zoo.batching import BatchPlan
from zoo.data import ImageClassificationData
from zoo.elastic import streams_of
from zoo.ema import WeightAverage
from zoo.recipe import TrainerSection


def capture_blockers(trainer: TrainerSection, *, world_size: int, resident: bool) -> list[str]:
    """What in this run keeps its step from being captured as one CUDA graph (empty: nothing).

    ``resident``: the batches already live on the device (``ImageClassificationData.place``)."""
    blockers = {
        "several processes": world_size > 1,  # the gradient all-reduce is not captured
        "streamed batches": not resident,
        # The loss scaler reads the gradients' finiteness on the host before every step.
        "fp16 mixed precision": trainer.mixed_precision == "fp16",
        # SGD's update reads the LR as a host number, so a schedule could not reach the graph.
        "an LR schedule with SGD": trainer.schedule != "none" and trainer.optimizer == "sgd",
        # One-cycle also cycles Adam's beta1, which the graph holds as a constant.
        "the onecycle schedule": trainer.schedule == "onecycle",
    }
    return [name for name, present in blockers.items() if present]


def compile_fallback_reason(trainer: TrainerSection, *, device: torch.device, world_size: int,
                            resident: bool) -> str | None:
    """Why an explicit ``trainer.compile`` cannot be used here, or None when it can (or is auto/none)."""
    mode = trainer.compile
    if mode in ("none", "auto"):
        return None
    if device.type != "cuda":
        return f"trainer.compile={mode} needs a CUDA device; running the plain step on {device.type}"
    found = capture_blockers(trainer, world_size=world_size, resident=resident) if mode == "graph" else []
    if found:
        return (f"trainer.compile=graph cannot capture this step (here: {', '.join(found)}); "
                "running trainer.compile=torch instead")
    return None


def choose_step(trainer: TrainerSection, *, device: torch.device, world_size: int,
                resident: bool) -> tuple[str, str | None]:
    """The step mode that runs here, and the one line to print when an explicit choice cannot."""
    if trainer.compile == "auto":
        capturable = device.type == "cuda" and not capture_blockers(trainer, world_size=world_size, resident=resident)
        return ("graph" if capturable else "none"), None
    reason = compile_fallback_reason(trainer, device=device, world_size=world_size, resident=resident)
    if reason is None:
        return trainer.compile, None
    return ("torch" if trainer.compile == "graph" and device.type == "cuda" else "none"), reason


def step_mode(trainer: TrainerSection, accelerator: Accelerator, data: ImageClassificationData) -> str:
    """The step that runs here for ``trainer.compile``, with the batches where ``data.place`` put them;
    prints one line when an explicit choice cannot run."""
    mode, reason = choose_step(trainer, device=accelerator.device, world_size=accelerator.num_processes,
                               resident=data.resident)
    if reason is not None:
        accelerator.print(f"[zoo] {reason}")
    return mode


def micro_offsets(batch_size: int, grad_accum: int) -> list[int]:
    """Where each micro-batch of a full global batch starts within it (and where the last ends).

    The same cuts as ``BatchPlan.micro_batch_bounds`` makes for every full global batch.
    """
    return [(batch_size * i) // grad_accum for i in range(grad_accum + 1)]


class CudaGraphRecorder:
    """Records a step as one CUDA graph and replays it: everything in :class:`CapturedStep` that needs CUDA.

    It is a seam of its own so that the step's arithmetic can be checked where there is no GPU:
    tests/test_step.py puts an eager recorder in ``CapturedStep.recorder``'s place, which re-runs the
    very same step (device LRs, micro-batches, clipping, the optimizer) on every replay.
    """

    def record(self, step: Callable[[], torch.Tensor], unset_grads: Callable[[], None],
               warmup: int) -> Callable[[], torch.Tensor]:
        """Run ``step`` ``warmup`` times on a side stream (autograd, cuBLAS and the optimizer's state
        set themselves up outside the graph), capture it, and return what replays it (returning the
        loss tensor the graph writes). The CUDA generator is put back as it was before the warm-up."""
        rng = torch.cuda.get_rng_state()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), warnings.catch_warnings():
                # Running a capturable optimizer uncaptured makes torch suggest capturable=False once
                # per optimizer: here (and for a short last batch) that is on purpose.
                warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
                for _ in range(warmup):
                    unset_grads()
                    step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # Gradients start unset, so the first micro-batch's backward writes them afresh on
            # every replay and the later ones accumulate onto it.
            unset_grads()
            with torch.cuda.graph(graph):
                loss = step()
        finally:
            torch.cuda.set_rng_state(rng)

        def replay() -> torch.Tensor:
            graph.replay()
            return loss

        return replay


class CapturedStep:
    """One optimizer step over a full global batch, captured as one CUDA graph.

    The graph runs, for each of the ``grad_accum`` micro-batches, the forward pass (under bf16
    autocast when asked) and the backward of its loss scaled to its share of the global batch,
    then clips the gradient norm (on the device: the scale is a tensor, no host sync) and
    steps the optimizer. Feed it the micro-batches in order with :meth:`feed`; the last one
    replays the graph.

    The learning rate of an Adam/AdamW optimizer (built with ``capturable=True``) is a device
    tensor per parameter group that the graph reads (the other hyperparameters are constants: the
    one-cycle schedule, which also cycles beta1, is not captured); :meth:`sync_lr` copies the
    schedule's value into it in place after each schedule step, so a schedule never needs a
    re-capture. SGD's step takes its LR as a host number: captured with a constant LR, it is used
    without a schedule only.

    Capturing runs a few warm-up steps on a side stream; the model's and optimizer's state are
    restored afterwards, so capturing never changes results.
    """

    recorder: ClassVar[CudaGraphRecorder] = CudaGraphRecorder()

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                 labels: torch.Tensor, grad_accum: int = 1, grad_clip: float | None = None,
                 bf16: bool = False, warmup: int = 3) -> None:
        self.model, self.optimizer, self.grad_clip, self.bf16 = model, optimizer, grad_clip, bf16
        self.batch_size = len(labels)
        self.offsets = micro_offsets(self.batch_size, grad_accum)
        self.static_images, self.static_labels = images.clone(), labels.clone()
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.device_lrs: list[torch.Tensor] | None = None
        if optimizer.defaults.get("capturable"):
            self.device_lrs = [torch.tensor(float(g["lr"]), device=images.device) for g in optimizer.param_groups]
        self.micro = 0
        # The graph holds the mode it was captured in (dropout, BatchNorm's batch statistics): training.
        model.train()
        saved = self._save_state()
        try:
            self._replay = self.recorder.record(self._graph_step, self._unset_grads, warmup)
        finally:
            # Warm-up ran real steps: put everything back as it was, in place, because the graph
            # reads and writes these very tensors (load_state_dict would replace them).
            self._restore_state(*saved)

    def _save_state(self) -> tuple[dict[str, torch.Tensor], dict[Any, dict[str, torch.Tensor]]]:
        model_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        optim_state = {p: {k: v.clone() for k, v in self.optimizer.state[p].items() if torch.is_tensor(v)}
                       for p in self.params if p in self.optimizer.state}
        return model_state, optim_state

    def _restore_state(self, model_state: dict[str, torch.Tensor],
                       optim_state: dict[Any, dict[str, torch.Tensor]]) -> None:
        self.model.load_state_dict(model_state)
        for p in self.params:
            for key, value in self.optimizer.state[p].items():
                if torch.is_tensor(value):
                    # A state the warm-up created starts at zero: Adam's step count and moments, SGD's
                    # momentum (whose first step then equals the plain one's, dampening being 0).
                    value.copy_(optim_state[p][key]) if p in optim_state else value.zero_()

    def _unset_grads(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _graph_step(self) -> torch.Tensor:
        """:meth:`_step` as the graph holds it: the optimizer reads each group's LR from
        ``device_lrs``. Outside it the groups keep host floats, for the schedule and the eager steps
        of a short last batch."""
        float_lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.device_lrs is not None:
            for group, lr in zip(self.optimizer.param_groups, self.device_lrs, strict=True):
                group["lr"] = lr
        try:
            return self._step()
        finally:
            for group, lr in zip(self.optimizer.param_groups, float_lrs, strict=True):
                group["lr"] = lr

    def _step(self) -> torch.Tensor:
        """The step the plain loop runs, over the static batch; returns the summed loss (float64)."""
        # Without the autocast cache: a cached bf16 copy of a weight made during capture would be
        # reused by every replay, stale after the first update.
        autocast = (torch.autocast(self.static_images.device.type, dtype=torch.bfloat16, cache_enabled=False)
                    if self.bf16 else nullcontext())
        sums = []
        for lo, hi in pairwise(self.offsets):
            with autocast:
                loss = F.cross_entropy(self.model(self.static_images[lo:hi]).float(), self.static_labels[lo:hi])
            share = (hi - lo) / self.batch_size
            (loss * share if share != 1 else loss).backward()
            sums.append(loss.detach().double() * (hi - lo))
        if self.grad_clip is not None:
            # foreach: one norm and one scaling launch; error_if_nonfinite stays False, because
            # checking it would read the norm on the host (a sync, not allowed in a capture).
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        return torch.stack(sums).sum()

    def sync_lr(self) -> None:
        """Copy the schedule's current LR into the tensors the graph reads (in place, no sync)."""
        if self.device_lrs is not None:
            for group, lr in zip(self.optimizer.param_groups, self.device_lrs, strict=True):
                lr.fill_(group["lr"])

    def feed(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Take the next micro-batch of a full global batch; after the last one, run the captured
        step and return the global batch's summed loss (a device tensor: no host sync)."""
        lo, hi = self.offsets[self.micro], self.offsets[self.micro + 1]
        self.static_images[lo:hi].copy_(images)
        self.static_labels[lo:hi].copy_(labels)
        self.micro += 1
        if self.micro < len(self.offsets) - 1:
            return None
        self.micro = 0
        return self._replay()


class Steps:
    """The optimizer steps of one fit call: plain, or captured as a CUDA graph (``captured``).

    Why each share's mean loss is scaled by ``share_size * world_size / global_batch``: each process
    holds a share of the global batch (shares can differ by one example, and accumulation cuts it
    further), and data parallelism averages gradients over processes. This scaling makes that average
    exactly the gradient of the global batch's mean loss, for any number of processes and any
    accumulation, so one seed trains the same model at every scale. With one process and a full
    batch the factor is 1 and is skipped.

    Accelerate's wrappers exist for loss scaling; without a scaler they only add per-step Python
    work (about 0.1 ms a step, measured), so the plain optimizer and backward are used directly.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 trainer: TrainerSection, accelerator: Accelerator, plan: BatchPlan,
                 ema: WeightAverage | None = None) -> None:
        self.model, self.scheduler, self.trainer, self.accelerator, self.plan = (
            model, scheduler, trainer, accelerator, plan)
        plain = accelerator.scaler is None
        self.optimizer = getattr(optimizer, "optimizer", optimizer) if plain else optimizer
        self.backward = (lambda loss: loss.backward()) if plain else accelerator.backward
        self.autocast = nullcontext if accelerator.mixed_precision == "no" else accelerator.autocast
        self.captured: CapturedStep | None = None
        self.ema = ema  # updated after every optimizer step
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


def capture_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageClassificationData,
                 trainer: TrainerSection, accelerator: Accelerator, plan: BatchPlan) -> CapturedStep | None:
    """The captured step for this run's full global batches (None when the set has none).

    Called after any checkpoint was loaded, because the graph works on these very tensors.
    """
    if plan.num_examples < plan.batch_size:
        return None
    # Any full batch serves as the example: its values are replaced before every replay.
    first = BatchPlan(plan.batch_size, plan.batch_size, seed=0, shuffle=False)
    images, labels = next(data.batches("train", first, 0))
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
