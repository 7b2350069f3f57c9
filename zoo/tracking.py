"""Where a run's numbers go: ``metrics.jsonl``, the terminal (or log file), W&B and ``curves.png``.

One :class:`Tracker` per process. Every process feeds it every optimizer step, because the
train-loss window (read from fit's running loss, :class:`zoo.fit_state.RunningLoss`) is reduced across
processes at each ``tracking.log_every`` boundary (one small all-reduce per window, never a device sync
per step); only the main process writes anything.

- ``metrics.jsonl``: ``{"kind": "step", ...}`` records every ``log_every`` optimizer steps (window mean
  train loss, lr, samples per second), ``{"kind": "epoch", ...}`` records (``epoch, train_loss, val_loss,
  val_acc, lr, train_seconds``) and, with ``trainer.val_every_steps``, ``{"kind": "val", ...}`` records.
- Progress: :mod:`zoo.progress`; W&B: :mod:`zoo.wandb_run` (a W&B failure never stops training).
- Other ``tracking.backends`` (TensorBoard, MLflow, CSV) go through :mod:`zoo.trackers`; one that fails
  is dropped with a warning.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import torch

from zoo.divergence import check_loss
from zoo.errors import warn
from zoo.fit_state import RunningLoss
from zoo.metrics_file import append_record, cut_back
from zoo.model_file import model_files
from zoo.progress import Progress
from zoo.trackers import Backends
from zoo.wandb_run import start_wandb

VERSIONED = ("torch", "accelerate", "datasets", "wandb", "zoo-launch")



def window_loss(running: RunningLoss, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                ) -> tuple[float, int]:
    """The mean train loss and examples of the window that ends here, over every process (``reduce``
    sums across them: the one sync of the window, so every process must call it at the same step)."""
    loss_sum, examples = running.take_window()
    device = loss_sum.device if isinstance(loss_sum, torch.Tensor) else torch.device("cpu")
    local = torch.stack([torch.as_tensor(loss_sum, dtype=torch.float64, device=device),
                         torch.tensor(float(examples), dtype=torch.float64, device=device)])
    total, count = (reduce(local) if reduce is not None else local).tolist()
    return total / max(count, 1.0), int(count)


def environment(accelerator: Any = None) -> dict[str, Any]:
    """World size, device, package versions and the git commit the code ran from."""
    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    env: dict[str, Any] = {"versions": versions, "git_commit": git_commit()}
    if accelerator is not None:
        device = accelerator.device
        env["world_size"] = accelerator.num_processes
        env["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return env


def git_commit() -> str | None:
    """The commit of the checkout the ``zoo`` package runs from (``-dirty`` when changed), else None."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


class Tracker:
    """Step-window and epoch records to ``metrics.jsonl``, the progress display and W&B.

    Create one on every process (``enabled`` only on the main one) and call :meth:`on_step` on
    every process after every optimizer step. ``resume_run_id`` (kept with the checkpoints, see
    :attr:`wandb_run_id`) makes a resumed job continue the same W&B run.
    """

    def __init__(self, output_dir: Path, tracking: Any, config: dict[str, Any], enabled: bool,
                 resume_run_id: str | None = None, *, accelerator: Any = None,
                 stream: TextIO | None = None, run_ids: dict[str, str] | None = None,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.output_dir = Path(output_dir)
        self.log_every = tracking.log_every
        self.artifacts = getattr(tracking, "artifacts", "model")
        self.stream = stream
        self.env = environment(accelerator) if enabled else {}
        self._reduce = (lambda t: accelerator.reduce(t, reduction="sum")) if accelerator is not None else None
        self.progress: Progress | None = None
        self.curves: Any = None  # zoo.plot.CurvesDrawer, started with the training
        self.steps_per_epoch = self.epochs = 0  # set by start()
        self.global_step = 0
        self.loss_before_training: float | None = None  # epoch 0's validation loss: what a blow-up is measured by
        self.wandb_run: Any = None
        self._window_started = time.perf_counter()
        self._last_step_time = self._window_started
        self._paused = 0.0
        names = getattr(tracking, "backends", ["wandb"] if tracking.wandb else [])
        self.backends = Backends()
        if enabled and "wandb" in names:
            self.wandb_run = start_wandb(self.output_dir, tracking, {**config, "env": self.env}, resume_run_id)
        if enabled:
            self.backends = Backends.start(names, self.output_dir, tracking, {**config, "env": self.env},
                                           run_ids, resume_step)

    @property
    def run_ids(self) -> dict[str, str]:
        """Every backend's run id (W&B, MLflow), to keep with checkpoints and pass back as ``run_ids``."""
        ids = self.backends.run_ids
        if self.wandb_run_id is not None:
            ids["wandb"] = self.wandb_run_id
        return ids

    @property
    def wandb_run_id(self) -> str | None:
        """Store this with checkpoints and pass it back as ``resume_run_id``."""
        return self.wandb_run.id if self.wandb_run is not None else None

    def start(self, state: Any, steps_per_epoch: int, epochs: int) -> None:
        """Call once before training (with a resumed run's state, too): windows and progress start here,
        and ``metrics.jsonl`` is cut back to what ``state`` has seen."""
        self.steps_per_epoch, self.global_step, self.epochs = max(steps_per_epoch, 1), state.global_step, epochs
        state.running_loss.begin_window()  # a resumed run's running sums are not this attempt's windows
        self._window_started = self._last_step_time = time.perf_counter()
        if self.enabled:
            fresh = state.global_step == 0 and not getattr(state, "history", None)
            cut_back(self.output_dir, state.epoch, state.global_step, fresh)
            from zoo.plot import CurvesDrawer

            self.curves = CurvesDrawer()  # its process imports matplotlib while the run starts
            self.progress = Progress(steps_per_epoch * epochs, epochs, self.stream)
            if getattr(state, "history", None):  # a resumed run shows its last accuracy at once
                self.progress.val_acc = state.history[-1]["val_acc"]
            self.progress.begin(state.global_step)
        if getattr(state, "history", None):
            self.loss_before_training = state.history[0]["val_loss"]

    def on_step(self, state: Any, lr: float) -> None:
        """After every optimizer step, on every process (the window boundary reduces across them)."""
        self.global_step = state.global_step
        now = time.perf_counter()
        self._last_step_time = now
        if self.progress is not None:
            self.progress.step()
        if state.global_step % self.log_every:
            return
        loss, examples = window_loss(state.running_loss, self._reduce)
        seconds = max(now - self._window_started - self._paused, 1e-9)
        self._window_started, self._paused = now, 0.0
        self.log_step({
            "kind": "step", "global_step": state.global_step,
            "epoch": state.global_step / self.steps_per_epoch if self.steps_per_epoch else float(state.epoch),
            "train_loss": loss, "lr": lr, "samples_per_second": examples / seconds, "examples": examples,
        })
        # The window's loss is reduced over every process, so all of them stop here together.
        check_loss(loss, state.global_step, f"the train loss of the last {self.log_every} steps",
                   self.loss_before_training)

    def log_step(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append(record)
        if self.progress is not None:
            self.progress.window(record)
        self._wandb_log({"train/loss": record["train_loss"], "train/lr": record["lr"],
                         "train/samples_per_second": record["samples_per_second"], "train/epoch": record["epoch"]},
                        step=record["global_step"])

    def log_epoch(self, record: dict[str, Any]) -> None:
        """An epoch's record from ``fit`` (epoch 0 is before training)."""
        # Validation is not training: keep it out of the samples-per-second window.
        self._paused += time.perf_counter() - self._last_step_time
        self._last_step_time = time.perf_counter()
        if record["epoch"] == 0:
            self.loss_before_training = record["val_loss"]
        if not self.enabled:
            return
        self._append({"kind": "epoch", **record, "global_step": self.global_step})
        if self.curves is not None and record["epoch"] == self.epochs:
            self.curves.start(self.output_dir)  # the last epoch: drawn while the run tests and saves
        if self.progress is not None:
            self.progress.epoch(record)
        else:
            Progress(0, 0, self.stream).epoch(record)
        values = {f"epoch/{k}" if k != "epoch" else k: v for k, v in record.items() if v is not None}
        self._wandb_log(values, step=self.global_step)

    def log_val(self, record: dict[str, Any]) -> None:
        """A ``trainer.val_every_steps`` record from ``fit``, at its optimizer step."""
        self._paused += time.perf_counter() - self._last_step_time  # not training time either
        self._last_step_time = time.perf_counter()
        if not self.enabled:
            return
        self._append({"kind": "val", **record})
        self._wandb_log({"val/loss": record["val_loss"], "val/acc": record["val_acc"]}, step=record["global_step"])

    def log_checkpoint(self, folder: Path) -> None:
        """Upload a checkpoint folder as a W&B artifact, only when ``tracking.artifacts: all``."""
        if self.enabled and self.artifacts == "all" and self.wandb_run is not None:
            self._wandb_artifact(f"checkpoint-{self.wandb_run.id}", "checkpoint", [Path(folder)],
                                 aliases=["latest", f"step-{self.global_step}"])

    def finish(self, summary: dict[str, Any], model_dir: Path | None = None) -> None:
        """Close the display, draw ``curves.png``, upload the model, write the W&B summary and close it.

        ``model_dir`` holds ``model.safetensors`` + ``model.json``; it is given for a finished run
        only (a preempted one has no final model).
        """
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.close()
        try:
            if self.curves is not None:
                self.curves.draw(self.output_dir)
            else:
                from zoo.plot import write_run_curves

                write_run_curves(self.output_dir)
        except Exception as exc:  # a missing plot must never fail a finished run
            warn(f"could not draw curves.png ({type(exc).__name__}: {exc})")
        self.backends.log_summary(summary)
        self.backends.close()
        if self.wandb_run is None:
            return
        if model_dir is not None and self.artifacts != "none":
            files = model_files(model_dir)
            self._wandb_artifact(f"model-{self.wandb_run.id}", "model", files, aliases=["latest"])
        try:
            self.wandb_run.summary.update({**summary, "env": self.env})
            self.wandb_run.finish()
        except Exception as exc:  # never let tracking end a finished run badly
            warn(f"W&B finish failed ({type(exc).__name__}: {exc}); local files are complete")
        self.wandb_run = None

    def _append(self, record: dict[str, Any]) -> None:
        append_record(self.output_dir, record)

    def _wandb_log(self, values: dict[str, Any], step: int) -> None:
        """To W&B and every other backend: the same names and steps."""
        self.backends.log_metrics(values, step)
        if self.wandb_run is None:
            return
        try:
            self.wandb_run.log(values, step=step)
        except Exception as exc:
            warn(f"W&B logging stopped ({type(exc).__name__}: {exc}); training goes on, metrics.jsonl is complete")
            self.wandb_run = None

    def _wandb_artifact(self, name: str, kind: str, paths: list[Path], aliases: list[str]) -> None:
        try:
            import wandb

            artifact = wandb.Artifact(name, type=kind)
            for path in paths:
                if path.is_dir():
                    artifact.add_dir(str(path))
                else:
                    artifact.add_file(str(path))
            self.wandb_run.log_artifact(artifact, aliases=aliases)
        except Exception as exc:
            warn(f"W&B artifact '{name}' not logged ({type(exc).__name__}: {exc}); training goes on")
