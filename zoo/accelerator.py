"""The Accelerator for this machine, and the launch checks that run before it is made."""

from __future__ import annotations

import os
from typing import Any

import torch

from zoo.errors import ZooError
from zoo.recipe import Recipe
from zoo.sharding import check_strategy


def _has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def launcher_wants_cpu() -> bool:
    """``accelerate launch --cpu`` (or ACCELERATE_USE_CPU in the environment) asks for CPU processes."""
    return os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes", "y", "on", "t")


def check_gpu_processes(local_processes: int, visible_gpus: int, use_cpu: bool) -> None:
    """Stop a launch that starts more GPU processes on this machine than it sees GPUs.

    Two processes on one GPU would not share it: the second asks for a device that is not there,
    or NCCL refuses the duplicate. Without any GPU the processes run on CPUs (gloo), as asked.
    """
    if use_cpu or visible_gpus == 0 or local_processes <= visible_gpus:
        return
    fewer = "--num_processes 1 without --multi_gpu" if visible_gpus == 1 else f"--num_processes {visible_gpus}"
    raise ZooError(
        f"this launch starts {local_processes} processes on this machine but it sees {visible_gpus} GPU(s); "
        f"launch at most one per GPU (accelerate launch {fewer} ...), or run {local_processes} CPU processes "
        "with ACCELERATE_USE_CPU=1 in the environment"
    )


def build_accelerator(recipe: Recipe) -> Any:
    """An Accelerator for whatever this machine has; ``cpu=True`` when it has no accelerator or the launcher
    asked for CPUs. A launch with more processes than GPUs stops here, before any work."""
    from accelerate import Accelerator
    from accelerate.utils import AutocastKwargs

    use_cpu = launcher_wants_cpu()
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # set by torchrun under --multi_gpu
    check_gpu_processes(local_processes, torch.cuda.device_count(), use_cpu)
    on_cpu = use_cpu or not _has_accelerator()
    check_strategy(recipe.trainer, on_cpu)
    if on_cpu and recipe.trainer.mixed_precision == "fp16":
        raise ZooError("trainer.mixed_precision=fp16 needs a GPU; on CPU use trainer.mixed_precision=bf16 or no")
    # cpu=True is what lets `accelerate launch --multi_gpu` run several processes on a CPU-only
    # machine (gloo); on a GPU machine the devices come from the launcher.
    # No autocast cache: a step captured as a CUDA graph must not keep cast weights across the
    # capture, and each weight is cast once per forward anyway.
    return Accelerator(cpu=on_cpu, mixed_precision=recipe.trainer.mixed_precision,
                       kwargs_handlers=[AutocastKwargs(cache_enabled=False)])
