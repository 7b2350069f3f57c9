"""Checkpoints that a killed job can always continue from, exactly.

Layout under ``<output_dir>/checkpoints/``::

    step-00000120/            one complete checkpoint (a folder, renamed into place whole)
        model.safetensors     weights
        ema.safetensors       the weights' moving average, with trainer.ema
        best.safetensors      the best epoch's evaluated weights, with trainer.early_stopping
        optimizer.pt          optimizer state (tensors and numbers only)
        sharded/              instead of the two above under trainer.strategy=fsdp: every
                              process's shards of both (zoo.sharded_checkpoint)
        scheduler.pt          LR schedule state, when there is one
        scaler.pt             fp16 grad-scaler state, when there is one
        rank-0.pt ...         each rank's RNG states and its share of the epoch's running loss
        state.json            epoch, micro-step within the epoch, optimizer steps, history, the
                              seed that fixes data order, the W&B run id; written last
    latest                    the name of the newest complete checkpoint, updated after the rename

Every process writes its own rank file into a temporary folder; the main process writes the rest,
renames the folder, then moves ``latest``. A half-written checkpoint is therefore never picked, and
a corrupt one is reported and the previous one used. Only safe formats are read: safetensors and
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.divergence import Diverged, weights_are_finite
from zoo.errors import ZooError
from zoo.fit_state import FitState, RunningLoss
from zoo.model_file import save_weights
from zoo.recipe import Recipe
from zoo.resume_check import resume_changes
from zoo.run_folder import RECIPE_FILE
from zoo.sharded_checkpoint import check_sharded, is_sharded_checkpoint, load_sharded, save_sharded

CHECKPOINTS = "checkpoints"
LATEST = "latest"
# A checkpoint's own weights, inside its step-* folder; the name of the run's final weights
# (zoo.model_file), so a checkpoint folder also serves as model.pretrained.
WEIGHTS = "model.safetensors"


def checkpoint_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def _rng_state(state: FitState) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "train_loss_sum": float(state.running_loss.loss_sum),
        "train_count": state.running_loss.examples,
    }


def _restore_rng(saved: dict[str, Any]) -> None:
    random.setstate(saved["python"])
    kind, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])


def save_checkpoint(
    accelerator: Any, output_dir: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any,
    state: FitState, extra: dict[str, Any], keep: int, tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write one checkpoint atomically on every process; returns its folder.

    ``tensors`` are further named sets of weights (``ema``, ``best``), each saved as
    ``<name>.safetensors``. Collective: every process must call it at the same step. Weights that
    are not finite raise :class:`Diverged` before anything is written; a write that fails (a full
    disk) removes the partial folder and raises a ZooError naming the path, so the previous
    checkpoint stays the latest.
    """
    if not weights_are_finite(model, accelerator):  # never keep a diverged model as "the latest"
        raise Diverged(state.global_step, "the weights are not finite")
    root = checkpoint_root(output_dir)
    name = f"step-{state.global_step:08d}"
    final = root / name
    tmp = root / f".tmp-{name}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a job killed while saving
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        _write_files(accelerator, tmp, model, optimizer, scheduler, state, extra, tensors)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ZooError(f"could not write checkpoint '{final}': {_failure(exc)}; make room there and start the "
                       "same command again to continue from the previous checkpoint") from None
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (epoch end right after an every_steps save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_latest(root, name)
        _prune(root, keep)
    accelerator.wait_for_everyone()
    return final


def _save(obj: Any, path: Path) -> None:
    # Through a Python file, so that a failed write keeps its OSError (torch's own writer says only
    # "unexpected pos").
    with path.open("wb") as f:
        torch.save(obj, f)


def _write_files(
    accelerator: Any, tmp: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any,
    state: FitState, extra: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]] | None,
) -> None:

    _save(_rng_state(state), tmp / f"rank-{accelerator.process_index}.pt")
    sharded = extra.get("strategy") == "fsdp"
    if sharded:  # every process writes its shards of the weights and optimizer state
        save_sharded(tmp, model, optimizer)
    if accelerator.is_main_process:
        if not sharded:
            save_weights(accelerator.unwrap_model(model).state_dict(), tmp / WEIGHTS)
            _save(optimizer.state_dict(), tmp / "optimizer.pt")
        for set_name, values in (tensors or {}).items():
            save_weights(values, tmp / f"{set_name}.safetensors")
        if scheduler is not None:
            _save(scheduler.state_dict(), tmp / "scheduler.pt")
        if accelerator.scaler is not None:
            _save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps({
            "state": state.progress(), "world_size": accelerator.num_processes, **extra,
        }, indent=1))


def _failure(exc: BaseException) -> str:
    """The operating system's reason for a failed write ("No space left on device"), wherever it is."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    found = re.search(r"os error (\d+)", str(exc))  # safetensors reports the errno in its message
    if found:
        return os.strerror(int(found.group(1)))
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def remove_partial_checkpoints(output_dir: Path) -> None:
    """Remove the temporary folders of saves that never finished (a kill, a full disk)."""
    for partial in checkpoint_root(output_dir).glob(".tmp-step-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / LATEST)


def _prune(root: Path, keep: int) -> None:
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _check(folder: Path) -> dict[str, Any]:
    """Read and verify a checkpoint's metadata; raise ValueError when it is unusable."""
    from safetensors import safe_open

    meta = json.loads((folder / "state.json").read_text())
    for rank in range(meta["world_size"]):
        if not (folder / f"rank-{rank}.pt").is_file():
            raise ValueError(f"rank-{rank}.pt is missing")
        torch.load(folder / f"rank-{rank}.pt", weights_only=True)  # small: read whole, so damage shows here
    for optional in ("scheduler.pt", "scaler.pt"):
        if (folder / optional).is_file():
            torch.load(folder / optional, weights_only=True)
    if is_sharded_checkpoint(folder):
        check_sharded(folder)
        return meta
    if not (folder / WEIGHTS).is_file():
        raise ValueError(f"{WEIGHTS} is missing")
    for path in sorted(folder.glob("*.safetensors")):  # the weights, and ema/best when kept
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (not a dict)  reads every header entry; a truncated file fails here
                weights.get_slice(key)
    torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
    return meta


def find_checkpoint(output_dir: Path, resume: str) -> Path | None:
    """The checkpoint to continue from, as ``trainer.resume`` says, or None to start fresh.

    ``auto``: the newest good checkpoint in ``output_dir`` (a corrupt one is reported and the one
    before it used); ``never``: none; anything else: that folder, which must be good.
    """
    if resume == "never":
        root = checkpoint_root(output_dir)
        if any(root.glob("step-*")):
            raise ZooError(
                f"trainer.resume=never but '{root}' holds checkpoints of an unfinished run; "
                "continue it with trainer.resume=auto or pick another output_dir"
            )
        return None
    if resume != "auto":
        folder = Path(resume)
        try:
            _check(folder)
        except Exception as exc:  # any failure to read means "not usable"
            raise ZooError(
                f"trainer.resume='{resume}' is not a usable checkpoint ({type(exc).__name__}: {exc})"
            ) from None
        return folder
    root = checkpoint_root(output_dir)
    candidates = sorted(root.glob("step-*"), reverse=True)
    latest = (root / LATEST).read_text().strip() if (root / LATEST).is_file() else None
    if latest and (root / latest) in candidates:  # the pointer first, then newest to oldest
        candidates.remove(root / latest)
        candidates.insert(0, root / latest)
    for folder in candidates:
        try:
            _check(folder)
            return folder
        except Exception as exc:  # any failure to read means "not usable"
            print(f"warning: checkpoint {folder} is corrupt ({type(exc).__name__}: {exc}); trying the one before it",
                  file=sys.stderr)
    return None


def load_tensors(folder: Path, name: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor] | None:
    """A named set of weights saved with ``tensors=`` (``ema``, ``best``), or None when absent."""
    from safetensors.torch import load_file

    path = Path(folder) / f"{name}.safetensors"
    return load_file(str(path), device=str(device)) if path.is_file() else None


def _world_size_change(saved: int, now: int, dependent: list[str] | None) -> str:
    head = f"[zoo] resuming a {saved}-process checkpoint with {now} process(es): "
    if dependent is None:  # written before zoo recorded it
        return head + "dropout random streams restart, so training departs from the uninterrupted run"
    if dependent:
        return (head + f"{', '.join(dependent)} depend on the number of processes, so training departs "
                "from the uninterrupted run (random streams and batch statistics cannot carry over)")
    return head + "batches, gradients and dropout do not depend on it; the run continues the same trajectory"


def load_checkpoint(
    folder: Path, accelerator: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any,
    strategy: str = "ddp",
) -> tuple[FitState, dict[str, Any]]:
    """Restore everything into already-prepared objects; returns the fit state and the extras.

    ``strategy`` is the run's ``trainer.strategy``: fsdp checkpoints hold shards (zoo.sharded_checkpoint).
    """
    from safetensors.torch import load_file

    meta = json.loads((folder / "state.json").read_text())
    if is_sharded_checkpoint(folder) != (strategy == "fsdp"):
        written = "fsdp" if is_sharded_checkpoint(folder) else "ddp"
        raise ZooError(f"checkpoint {folder} was written with trainer.strategy={written}; "
                       f"resume it with trainer.strategy={written}")
    if strategy == "fsdp":
        load_sharded(folder, model, optimizer)
    else:
        accelerator.unwrap_model(model).load_state_dict(load_file(str(folder / WEIGHTS)))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
    if scheduler is not None and (folder / "scheduler.pt").is_file():
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    if accelerator.scaler is not None and (folder / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    # Checkpoints of earlier versions also hold the per-rank running loss here, always zero.
    fields = {key: value for key, value in meta.pop("state").items() if key not in ("train_loss_sum", "train_count")}
    state = FitState(**fields)
    rank, saved_world = accelerator.process_index, meta["world_size"]
    if saved_world == accelerator.num_processes:
        saved = torch.load(folder / f"rank-{rank}.pt", weights_only=True)
        _restore_rng(saved)
        state.running_loss = RunningLoss(saved["train_loss_sum"], saved["train_count"])
    else:
        # A different number of processes: data order is global and unchanged, dropout masks are
        # keyed by the example's place in the global batch (zoo.elastic), and the epoch's running
        # loss goes to rank 0 whole. Layers that depend on the world size are named, once, here.
        accelerator.print(_world_size_change(saved_world, accelerator.num_processes,
                                             meta.get("world_size_dependent")))
        if rank == 0:
            shares = [torch.load(folder / f"rank-{r}.pt", weights_only=True) for r in range(saved_world)]
            state.running_loss = RunningLoss(sum(s["train_loss_sum"] for s in shares),
                                             sum(s["train_count"] for s in shares))
    return state, meta


def recorded(folder: Path, key: str) -> Any:
    """What a checkpoint recorded under ``key`` beside its state (``extra`` of :func:`save_checkpoint`), or None."""
    return json.loads((Path(folder) / "state.json").read_text()).get(key)


def recorded_recipe(folder: Path) -> dict[str, Any] | None:
    """The recipe a checkpoint was trained with (as ``Recipe.model_dump(mode="json")``), if it holds one.

    It is the recipe as given: when the bundled sample stood in for the default ``data.path``, the
    checkpoint says so under ``trained_on_sample``, and a resume of the same command goes on there."""
    return recorded(folder, "recipe")


def checkpoint_to_resume(recipe: Recipe, output_dir: Path, accelerator: Any) -> Path | None:
    """The checkpoint this run continues from, refused when it was trained with another recipe.

    A change that alters the trajectory (see ``zoo.resume_check.RESUME_SAFE``) is one error listing every
    difference; a safe one (more epochs, tracking, checkpointing) is said and allowed.
    """
    import yaml

    if accelerator.is_main_process:
        remove_partial_checkpoints(output_dir)
    checkpoint = find_checkpoint(output_dir, recipe.trainer.resume)
    if checkpoint is None:
        return None
    recorded = recorded_recipe(checkpoint)
    recipe_file = checkpoint.parent.parent / RECIPE_FILE
    if recorded is None and recipe_file.is_file():  # saved before recipes were kept
        recorded = yaml.safe_load(recipe_file.read_text())
    refused, allowed = resume_changes(recorded, recipe) if recorded else ([], [])
    if refused:
        raise ZooError(f"{checkpoint} was trained with another recipe ({'; '.join(refused)}); resuming would "
                       "train neither recipe's run: undo the change(s), or start a new run in another output_dir")
    if allowed:
        accelerator.print(f"[zoo] resuming with a changed recipe: {'; '.join(allowed)}")
    return checkpoint
