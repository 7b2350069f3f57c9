"""Experiment trackers behind one small interface (``tracking.backends``).

Every backend gets the same things: the resolved recipe (flattened to ``section.key`` names) when
it starts, every metric record as ``{name: value}`` at an optimizer step, and the run's summary at
the end. Names are the W&B ones: ``train/loss``, ``train/lr``, ``train/samples_per_second``,
``train/epoch`` per step window; ``epoch``, ``epoch/val_loss``, ``epoch/val_acc``, ... per epoch;
``val/loss``, ``val/acc`` for ``trainer.val_every_steps``. All are plotted against the optimizer
step.

Backends live on the main process only. One that fails to start, or fails later, prints one
warning and is dropped; training and the other backends go on. A backend's tool is imported only
when it is on. Run ids (W&B, MLflow) are kept with the checkpoints so a resumed job continues the
same runs; ``resume_step`` (the checkpoint's optimizer step) lets a backend drop what a killed
attempt recorded after it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from zoo.errors import warn
from zoo.trackers.values import flatten, numbers  # noqa: F401  (the backends' shared helpers)


class Backend(Protocol):
    name: str

    @property
    def run_id(self) -> str | None: ...

    def log_metrics(self, values: dict[str, float], step: int) -> None: ...

    def log_summary(self, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...



def _start_tensorboard(output_dir: Path, tracking: Any, config: dict[str, Any], run_ids: dict[str, str],
                       resume_step: int | None) -> Backend:
    from zoo.trackers.tensorboard_events import TensorBoardBackend

    return TensorBoardBackend(output_dir, config, resume_step)


def _start_mlflow(output_dir: Path, tracking: Any, config: dict[str, Any], run_ids: dict[str, str],
                  resume_step: int | None) -> Backend:
    from zoo.trackers.mlflow_runs import MlflowBackend

    return MlflowBackend(output_dir, tracking, config, run_ids.get("mlflow"))


def _start_csv(output_dir: Path, tracking: Any, config: dict[str, Any], run_ids: dict[str, str],
               resume_step: int | None) -> Backend:
    from zoo.trackers.csv_files import CsvBackend

    return CsvBackend(output_dir, config, resume_step)


Starter = Callable[..., Backend]  # (output_dir, tracking, config, run_ids, resume_step) -> Backend
STARTERS: dict[str, Starter] = {"tensorboard": _start_tensorboard, "mlflow": _start_mlflow, "csv": _start_csv}


class Backends:
    """The backends a run records to; every call goes to each, and a failing one is dropped."""

    def __init__(self, backends: list[Backend] | None = None) -> None:
        self.backends = list(backends or [])

    @classmethod
    def start(cls, names: list[str], output_dir: Path, tracking: Any, config: dict[str, Any],
              run_ids: dict[str, str] | None = None, resume_step: int | None = None,
              starters: dict[str, Starter] | None = None) -> Backends:
        """Start each named backend that has a starter (W&B is started by its own module)."""
        started = []
        for name in names:
            starter = (starters or STARTERS).get(name)
            if starter is None:
                continue
            try:
                started.append(starter(Path(output_dir), tracking, config, run_ids or {}, resume_step))
            except Exception as exc:
                warn(f"tracking backend '{name}' could not start ({type(exc).__name__}: {_first_line(exc)}); "
                     f"training goes on without it (remove it from tracking.backends to silence this)")
        return cls(started)

    def add(self, backend: Backend | None) -> None:
        if backend is not None:
            self.backends.append(backend)

    @property
    def names(self) -> list[str]:
        return [backend.name for backend in self.backends]

    @property
    def run_ids(self) -> dict[str, str]:
        """Run ids to keep with the checkpoints, by backend name."""
        return {b.name: b.run_id for b in self.backends if b.run_id is not None}

    def get(self, name: str) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)

    def log_metrics(self, values: dict[str, Any], step: int) -> None:
        plottable = numbers(values)
        self._each("log metrics", lambda backend: backend.log_metrics(plottable, step))

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._each("write the summary", lambda backend: backend.log_summary(summary))

    def close(self) -> None:
        self._each("close", lambda backend: backend.close())
        self.backends = []

    def _each(self, what: str, call: Callable[[Backend], None]) -> None:
        for backend in list(self.backends):
            try:
                call(backend)
            except Exception as exc:
                warn(f"tracking backend '{backend.name}' could not {what} ({type(exc).__name__}: "
                     f"{_first_line(exc)}); it is dropped, training and the other trackers go on")
                self.backends.remove(backend)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
