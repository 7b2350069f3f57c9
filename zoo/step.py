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

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.recipe import TrainerSection


def capture_blockers(trainer: TrainerSection, world_size: int, resident: bool) -> list[str]:
    """What in this run keeps its step from being captured as one CUDA graph (empty: nothing)."""
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


def compile_fallback_reason(trainer: TrainerSection, device: torch.device, world_size: int,
                            resident: bool) -> str | None:
    """Why an explicit ``trainer.compile`` cannot be used here, or None when it can (or is auto/none)."""
    mode = trainer.compile
    if mode in ("none", "auto"):
        return None
    if device.type != "cuda":
        return f"trainer.compile={mode} needs a CUDA device; running the plain step on {device.type}"
    found = capture_blockers(trainer, world_size, resident) if mode == "graph" else []
    if found:
        return (f"trainer.compile=graph cannot capture this step (here: {', '.join(found)}); "
                "running trainer.compile=torch instead")
    return None


def choose_step(trainer: TrainerSection, device: torch.device, world_size: int,
                resident: bool) -> tuple[str, str | None]:
    """The step mode that runs here, and the one line to print when an explicit choice cannot."""
    if trainer.compile == "auto":
        capturable = device.type == "cuda" and not capture_blockers(trainer, world_size, resident)
        return ("graph" if capturable else "none"), None
    reason = compile_fallback_reason(trainer, device, world_size, resident)
    if reason is None:
        return trainer.compile, None
    return ("torch" if trainer.compile == "graph" and device.type == "cuda" else "none"), reason


def micro_offsets(batch_size: int, grad_accum: int) -> list[int]:
    """Where each micro-batch of a full global batch starts within it (and where the last ends).

    The same cuts as ``BatchPlan.micro_batch_bounds`` makes for every full global batch.
    """
    return [(batch_size * i) // grad_accum for i in range(grad_accum + 1)]


class CapturedStep:
    """One optimizer step over a full global batch, captured as one CUDA graph.

    The graph runs, for each of the ``grad_accum`` micro-batches, the forward pass (under bf16
    autocast when asked) and the backward of its loss scaled to its share of the global batch,
    then clips the gradient norm (on the device: the scale is a tensor, no host sync) and
    steps the optimizer. Feed it the micro-batches in order with :meth:`feed`; the last one
    replays the graph.

    The learning rate of an Adam/AdamW optimizer (built with ``capturable=True``) is a device
    tensor the graph reads (the other hyperparameters are constants: the one-cycle schedule,
    which also cycles beta1, is not captured); :meth:`sync_lr` copies the schedule's value into it in place after
    each schedule step, so a schedule never needs a re-capture. SGD's step takes its LR as a
    host number: captured with a constant LR, it is used without a schedule only.

    Capturing runs a few warm-up steps on a side stream; the model's and optimizer's state are
    restored afterwards, so capturing never changes results.
    """

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
        saved = self._save_state()
        try:
            self.static_loss = self._capture(warmup)
        finally:
            # Warm-up and capture ran real steps: put everything back as it was, in place, because
            # the graph reads and writes these very tensors (load_state_dict would replace them).
            self._restore_state(*saved)

    def _save_state(self) -> tuple[dict[str, torch.Tensor], dict[Any, dict[str, torch.Tensor]], torch.Tensor]:
        model_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        optim_state = {p: {k: v.clone() for k, v in self.optimizer.state[p].items() if torch.is_tensor(v)}
                       for p in self.params if p in self.optimizer.state}
        return model_state, optim_state, torch.cuda.get_rng_state()

    def _restore_state(self, model_state: dict[str, torch.Tensor],
                       optim_state: dict[Any, dict[str, torch.Tensor]], rng: torch.Tensor) -> None:
        self.model.load_state_dict(model_state)
        for p in self.params:
            for key, value in self.optimizer.state[p].items():
                if torch.is_tensor(value):
                    value.copy_(optim_state[p][key]) if p in optim_state else value.zero_()
        torch.cuda.set_rng_state(rng)

    def _capture(self, warmup: int) -> torch.Tensor:
        float_lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.device_lrs is not None:  # the graph reads the LR from these tensors
            for group, lr in zip(self.optimizer.param_groups, self.device_lrs, strict=True):
                group["lr"] = lr
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # Gradients start unset, so the first micro-batch's backward writes them afresh on
            # every replay and the later ones accumulate onto it.
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):
                loss = self._step()
            return loss
        finally:
            # The schedule and the eager steps (a short last batch) keep working on host floats.
            for group, lr in zip(self.optimizer.param_groups, float_lrs, strict=True):
                group["lr"] = lr

    def _step(self) -> torch.Tensor:
        """The step the plain loop runs, over the static batch; returns the summed loss (float64)."""
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if self.bf16 else nullcontext()
        sums = []
        for lo, hi in zip(self.offsets[:-1], self.offsets[1:], strict=True):
            with autocast:
                loss = F.cross_entropy(self.model(self.static_images[lo:hi]).float(), self.static_labels[lo:hi])
            share = (hi - lo) / self.batch_size
            (loss * share if share != 1 else loss).backward()
            sums.append(loss.detach().double() * (hi - lo))
        if self.grad_clip is not None:
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
        self.graph.replay()
        return self.static_loss
