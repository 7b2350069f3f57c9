"""The model and optimizer part of an fsdp run's checkpoint: each process writes its own shards.

Written with ``torch.distributed.checkpoint`` (DCP) into ``<checkpoint>/sharded/``: one file per
process plus ``.metadata``, which the coordinator writes after every process has written its
shards. zoo.checkpoint puts this folder inside the temporary checkpoint folder that is renamed
whole, so a half-written one is never picked. DCP reshards on load, so the checkpoint of N
processes loads into M processes, sharded or plain (one process).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

SHARDED = "sharded"


def _optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper of a plain run


@contextmanager
def _one_process_quiet() -> Iterator[None]:
    """DCP warns on every save and load of a one-process run that it assumes one process: it does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def is_sharded_checkpoint(folder: Path) -> bool:
    return (Path(folder) / SHARDED).is_dir()


def save_sharded(folder: Path, model: torch.nn.Module, optimizer: Any) -> None:
    """Write this process's shards of the weights and optimizer state (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, _optimizer(optimizer))
    with _one_process_quiet():
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=Path(folder) / SHARDED)


def load_sharded(folder: Path, model: torch.nn.Module, optimizer: Any) -> None:
    """Read the weights and optimizer state into this run's (possibly differently) sharded model."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    optim = _optimizer(optimizer)
    model_state, optim_state = get_state_dict(model, optim)
    state = {"model": model_state, "optim": optim_state}
    with _one_process_quiet():
        dcp.load(state, checkpoint_id=Path(folder) / SHARDED)
    set_state_dict(model, optim, model_state_dict=state["model"], optim_state_dict=state["optim"])


def check_sharded(folder: Path) -> None:
    """Raise ValueError when the shards are incomplete: no metadata, or a shard file missing or cut short."""
    from torch.distributed.checkpoint import FileSystemReader

    root = Path(folder) / SHARDED
    if not (root / ".metadata").is_file():
        raise ValueError(f"{SHARDED}/.metadata is missing")
    needed: dict[str, int] = {}
    for item in FileSystemReader(str(root)).read_metadata().storage_data.values():
        end = item.offset + item.length
        needed[item.relative_path] = max(end, needed.get(item.relative_path, 0))
    for name, size in needed.items():
        path = root / name
        if not path.is_file() or path.stat().st_size < size:
            raise ValueError(f"{SHARDED}/{name} is missing or cut short")
