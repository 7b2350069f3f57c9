"""``trainer.strategy=fsdp``: parameters, gradients and optimizer state sharded over the processes.

FSDP2 (``torch.distributed.fsdp.fully_shard``): every process keeps 1/N of each parameter (a
DTensor), gathers a block's full weights just before its forward and backward, and reduce-scatters
its gradients, so the optimizer steps on shards only. Blocks are the submodules the model names in
an ``fsdp_blocks`` attribute (names of submodules), or, when it names none, every submodule that
holds at least ``trainer.fsdp_min_block_params`` parameters of its own; the root takes the rest.

Like DDP, FSDP averages gradients over processes, so the fit loop's share scaling keeps the global
batch exact. With one process there is nothing to shard: the plain model trains, and its
checkpoints are in the same sharded format, so the run can go on with more processes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.recipe import TrainerSection


def is_sharded(trainer: TrainerSection, world_size: int) -> bool:
    """Whether this run's model is sharded (fsdp with several processes)."""
    return trainer.strategy == "fsdp" and world_size > 1


def check_strategy(trainer: TrainerSection, on_cpu: bool) -> None:
    """Refuse, before any work, what fsdp does not run with here."""
    if trainer.strategy != "fsdp":
        if trainer.fsdp_cpu_offload:
            raise ZooError("trainer.fsdp_cpu_offload=true needs trainer.strategy=fsdp")
        return
    if trainer.mixed_precision == "fp16":
        raise ZooError("trainer.strategy=fsdp does not use the fp16 loss scaler; use trainer.mixed_precision=bf16")
    if trainer.fsdp_cpu_offload and on_cpu:
        raise ZooError("trainer.fsdp_cpu_offload=true moves shards off GPUs, but this run's processes train on "
                       "CPUs already; drop trainer.fsdp_cpu_offload")
    for key, value in (("trainer.ema", trainer.ema), ("trainer.early_stopping", trainer.early_stopping)):
        if value is not None:  # both keep whole copies of the weights, which a sharded run does not have
            raise ZooError(f"{key} is not supported with trainer.strategy=fsdp yet; drop one of them")


def block_names(model: nn.Module, min_params: int) -> list[str]:
    """The submodules to shard as blocks: the model's ``fsdp_blocks``, else those that are big enough.

    By size, a submodule is a block when the parameters it holds outside blocks below it reach
    ``min_params`` (innermost first), the rule FSDP1's size-based wrapping used.
    """
    declared = getattr(model, "fsdp_blocks", None)
    if declared is not None:
        names = [str(name) for name in declared]
        known = dict(model.named_modules())
        missing = [name for name in names if name not in known or not name]
        if missing:
            raise ZooError(f"the model's fsdp_blocks names {missing}, which are not submodules of it")
        return names
    blocks: list[str] = []

    def own_params(prefix: str, module: nn.Module) -> int:
        total = sum(p.numel() for p in module.parameters(recurse=False))
        for name, child in module.named_children():
            total += own_params(f"{prefix}{name}.", child)
        if prefix and total >= min_params:
            blocks.append(prefix.rstrip("."))
            return 0
        return total

    own_params("", model)
    return blocks


def shard_model(model: nn.Module, trainer: TrainerSection, accelerator: Any) -> nn.Module:
    """Shard ``model`` in place with FSDP2 over all processes; returns it (now an FSDPModule)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    device = accelerator.device
    model.to(device)
    mesh = init_device_mesh(device.type, (accelerator.num_processes,))
    options: dict[str, Any] = {"mesh": mesh}
    if trainer.mixed_precision == "bf16":
        # Weights gathered and computed in bf16; gradients reduced and the optimizer run in float32.
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    options["offload_policy"] = CPUOffloadPolicy() if trainer.fsdp_cpu_offload else OffloadPolicy()
    modules = dict(model.named_modules())
    for name in block_names(model, trainer.fsdp_min_block_params):
        fully_shard(modules[name], **options)
    fully_shard(model, **options)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU, on every process (collective when sharded)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=False)
    weights = get_model_state_dict(model, options=options)
    return {key: value.detach().contiguous().cpu() for key, value in weights.items()}


def final_weights(model: nn.Module, trainer: TrainerSection, accelerator: Any) -> dict[str, torch.Tensor]:
    """The finished model's whole weights (on the main process; collective when sharded)."""
    if is_sharded(trainer, accelerator.num_processes):
        return full_state_dict(model)
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model).state_dict()
