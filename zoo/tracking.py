"""Where a run's numbers go: ``metrics.jsonl``, the terminal (or log file), W&B and ``curves.png``.

One :class:`Tracker` per process. Every process feeds it every optimizer step, because the
train-loss window is reduced across processes at each ``tracking.log_every`` boundary (one small
all-reduce per window, never a device sync per step); only the main process writes anything.

- ``metrics.jsonl``: ``{"kind": "step", ...}`` records every ``log_every`` optimizer steps (window mean
  train loss, lr, samples per second), ``{"kind": "epoch", ...}`` records (``epoch, train_loss, val_loss,
  val_acc, lr, train_seconds``) and, with ``trainer.val_every_steps``, ``{"kind": "val", ...}`` records.
- Progress: :mod:`zoo.progress`; W&B: :mod:`zoo.wandb_run` (a W&B failure never stops training).
- Other ``tracking.backends`` (TensorBoard, MLflow, CSV) go through :mod:`zoo.trackers`; one that fails
  is dropped with a warning.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import torch

from zoo.divergence import check_loss
from zoo.errors import warn
from zoo.progress import Progress
from zoo.trackers import Backends
from zoo.wandb_run import start_wandb

VERSIONED = ("torch", "accelerate", "datasets", "wandb", "zoo-launch")



def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None: ``json.dumps`` would write ``NaN``, which is not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


class LossWindow:
    """The mean train loss over the optimizer steps since the last window boundary.

    ``fit`` keeps a running per-process loss sum on the device (``state.train_loss_sum``, reset
    every epoch) and an example count. Each step we only keep a *reference* to that tensor, so no
    step waits for the device; at a boundary the window's sum and count are differences of those
    running values (plus whatever the previous epoch added after the last boundary), reduced over
    all processes in one call. Every process must therefore call :meth:`close` at the same step.
    """

    def __init__(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self._reduce = reduce or (lambda t: t)
        self._epoch: int | None = None
        self._ref: Any = 0.0  # this epoch's running sum (a device tensor once a step has run)
        self._count = 0
        self._base: Any = 0.0  # the running sum's value at the last boundary (a device-side copy)
        self._base_count = 0
        self._carried: Any = 0.0  # what earlier epochs added since the last boundary
        self._carried_count = 0

    def begin(self, state: Any) -> None:
        """Start the first window at ``state`` (a resumed run's running sums are not this window's)."""
        # One read of a resumed run's running sum: the checkpoint's tensor may live elsewhere.
        self._epoch, self._ref, self._count = state.epoch, float(state.train_loss_sum), state.train_count
        self._base, self._base_count = self._ref, state.train_count

    def observe(self, state: Any) -> None:
        """Called after every optimizer step; cheap: no device sync."""
        if self._epoch is not None and state.epoch != self._epoch:
            # The previous epoch ended: its running sum is final and the loop started a fresh one.
            self._carried = self._carried + (self._ref - self._base)
            self._carried_count += self._count - self._base_count
            self._base, self._base_count = 0.0, 0
        self._epoch, self._ref, self._count = state.epoch, state.train_loss_sum, state.train_count

    def close(self) -> tuple[float, int]:
        """The window's (mean loss, examples) over all processes; starts the next window."""
        total = self._carried + (self._ref - self._base)
        count = self._carried_count + self._count - self._base_count
        device = total.device if isinstance(total, torch.Tensor) else torch.device("cpu")
        local = torch.stack([torch.as_tensor(total, dtype=torch.float64, device=device),
                             torch.tensor(float(count), dtype=torch.float64, device=device)])
        loss_sum, examples = self._reduce(local).tolist()  # the one sync of the window
        self._base, self._base_count = _snapshot(self._ref), self._count
        self._carried, self._carried_count = 0.0, 0
        return loss_sum / max(examples, 1.0), int(examples)


def _snapshot(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else float(value)


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
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.log_every = tracking.log_every
        self.artifacts = getattr(tracking, "artifacts", "model")
        self.stream = stream
        self.env = environment(accelerator) if enabled else {}
        reduce = (lambda t: accelerator.reduce(t, reduction="sum")) if accelerator is not None else None
        self.window = LossWindow(reduce)
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
        self.window.begin(state)
        self._window_started = self._last_step_time = time.perf_counter()
        if self.enabled:
            self._cut_back(state)
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
        self.window.observe(state)
        now = time.perf_counter()
        self._last_step_time = now
        if self.progress is not None:
            self.progress.step()
        if state.global_step % self.log_every:
            return
        loss, examples = self.window.close()
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
            files = [Path(model_dir) / "model.safetensors", Path(model_dir) / "model.json"]
            self._wandb_artifact(f"model-{self.wandb_run.id}", "model", files, aliases=["latest"])
        try:
            self.wandb_run.summary.update({**summary, "env": self.env})
            self.wandb_run.finish()
        except Exception as exc:  # never let tracking end a finished run badly
            warn(f"W&B finish failed ({type(exc).__name__}: {exc}); local files are complete")
        self.wandb_run = None

    def _cut_back(self, state: Any) -> None:
        """Make ``metrics.jsonl`` hold exactly what came before ``state``: nothing for a fresh start
        (an unfinished attempt that left no checkpoint), else what precedes the checkpoint resumed."""
        if state.global_step == 0 and not getattr(state, "history", None):
            self.metrics_path.unlink(missing_ok=True)
            return
        if not self.metrics_path.is_file():
            return
        kept = []
        lines = self.metrics_path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # torn by a crash mid-write: what it held is written again
                warn(f"{self.metrics_path} line {number} of {len(lines)} is damaged; dropped")
                continue
            is_epoch = record.get("kind") == "epoch"
            if (is_epoch and record["epoch"] <= state.epoch) or (
                not is_epoch and record["global_step"] <= state.global_step
            ):
                kept.append(line)
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _append(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(strict_json(record), allow_nan=False) + "\n")

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
