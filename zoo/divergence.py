"""Divergence: a loss that is not finite, or that blew up, stops training instead of passing as success.

The loss is looked at only where the host reads it anyway (the tracker's step-window boundary,
each epoch's train and validation loss) and the weights only where a checkpoint copies them, so
watching adds no device sync to any step. Every process reads the same reduced numbers, so all
of them stop at the same step. The run folder then gets ``diverged.json`` (written by
:func:`mark_diverged` only) and the job exits with :data:`EXIT_DIVERGED`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

if TYPE_CHECKING:
    import torch

EXIT_DIVERGED = 4  # documented: training diverged; the last good checkpoint is kept
DIVERGED_MARKER = "diverged.json"
# A loss this many times the loss before training (and at least this big) has blown up: a model
# that merely learns badly stays near its starting loss, one whose weights run away leaves it far behind.
BLOWUP_FACTOR = 1000.0


class Diverged(ZooError):
    """Training stopped because the loss or the weights stopped being finite numbers."""

    def __init__(self, global_step: int, what: str) -> None:
        self.global_step, self.what = global_step, what
        super().__init__(f"training diverged at optimizer step {global_step}: {what}")


def check_loss(loss: float | None, global_step: int, name: str, reference: float | None = None) -> None:
    """Raise :class:`Diverged` when ``loss`` is NaN or infinite, or over BLOWUP_FACTOR x ``reference``."""
    if loss is None:
        return
    if not math.isfinite(loss):
        raise Diverged(global_step, f"{name} is {loss}")
    if reference is not None and math.isfinite(reference) and loss > BLOWUP_FACTOR * max(reference, 1.0):
        raise Diverged(global_step, f"{name} {loss:.3g} is over {BLOWUP_FACTOR:g}x the loss before training "
                                    f"({reference:.3g})")


def weights_are_finite(model: torch.nn.Module, accelerator: Any) -> bool:
    """True on every process at once when every process's weights are finite (collective)."""
    # Imported here: zoo.run_folder reads DIVERGED_MARKER from this module, and zoo.plot's drawer
    # process reads the run folder's names through it without paying for torch.
    import torch

    # Under FSDP each process holds shards (DTensors): each checks its own, and the flags are summed.
    params = [getattr(p, "to_local", lambda p=p: p)().detach() for p in model.parameters() if p.is_floating_point()]
    finite = torch.stack([p.isfinite().all() for p in params]).all() if params else torch.tensor(True)
    bad = (~finite).to(device=accelerator.device, dtype=torch.float32).reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return bool(bad.item() == 0)


def mark_diverged(output_dir: Path, error: Diverged, last_checkpoint: Path | None) -> None:
    """Write ``diverged.json``: where it diverged, why, and the last good checkpoint kept."""
    record = {"global_step": error.global_step, "reason": error.what,
              "last_good_checkpoint": str(last_checkpoint) if last_checkpoint else None}
    (Path(output_dir) / DIVERGED_MARKER).write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")


def advice(recipe: Any, last_checkpoint: Path | None) -> str:
    """What to try, for the one line the user sees."""
    kept = f"the last good checkpoint ({last_checkpoint}) is kept" if last_checkpoint else "no checkpoint was written"
    clip = "a lower trainer.grad_clip" if recipe.trainer.grad_clip else "trainer.grad_clip=1.0"
    return (f"{kept}; start a new run (another output_dir) with a lower trainer.lr "
            f"(this one had {recipe.trainer.lr:g}) or {clip}")


def stop_diverged(error: Diverged, recipe: Any, output_dir: Path, last_checkpoint: Path | None, main: bool) -> Diverged:
    """Mark the run diverged (on the main process) and return the error the user sees, with what to try."""
    if main:
        mark_diverged(output_dir, error, last_checkpoint)
    return Diverged(error.global_step, f"{error.what}; {advice(recipe, last_checkpoint)}")
