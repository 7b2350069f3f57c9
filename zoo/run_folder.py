"""The run folder: one run at a time in an ``output_dir``, never one that is finished or not a zoo run's.

A run holds an exclusive ``fcntl.flock`` on ``<output_dir>/.zoo-run.lock`` for its whole life.
The kernel drops the lock when the process ends, however it ends (``kill -9`` included), so a
crashed run never leaves the folder stuck; the file stays, and the next run takes it over. The
holder writes its host and pid into the file, only so that a refused run can name it.

Before anything is written, the folder is checked (``zoo.output_folder``, which checks a sweep's
folder the same way): an existing file, a folder that cannot be written, a sweep's folder and a
folder holding files that no zoo run wrote are refused with one line; files are never removed
here, except the lock file of a folder this run created and left empty.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from zoo.divergence import DIVERGED_MARKER
from zoo.errors import ZooError
from zoo.metrics_file import strict_json
from zoo.output_folder import check_output_folder
from zoo.recipe import Recipe
from zoo.sweep.spec import SPEC_FILE

RECIPE_FILE = "recipe.yaml"  # the resolved recipe, written first by every run
FINISHED_MARKER = "summary.json"  # the run's summary, written last by a run that trained to the end
LOCK_NAME = ".zoo-run.lock"
# What marks a folder as a zoo run's: the lock, the resolved recipe (written first by every run,
# also before the lock existed), or what `zoo slurm` and `zoo sweep` write before the run starts
# (named here only to be looked for: zoo.slurm and zoo.sweep.point write them).
RUN_MARKERS = (LOCK_NAME, RECIPE_FILE, "slurm/train.sbatch", "sweep-point.json")


def write_recipe(output_dir: Path, recipe: Recipe) -> None:
    """``recipe.yaml``: the resolved recipe the run trains (the folder is made here)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RECIPE_FILE).write_text(recipe.to_yaml())


def write_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    """``summary.json``, the finished marker: written last, so its presence means the run is complete."""
    text = json.dumps(strict_json(summary), indent=2, allow_nan=False) + "\n"
    (output_dir / FINISHED_MARKER).write_text(text)


def check_output_dir(recipe: Recipe) -> Path:
    """Refuse to start into a folder that holds a finished or a diverged run: it is never overwritten."""
    output_dir = Path(recipe.output_dir)
    for marker, what in ((FINISHED_MARKER, "a finished run"), (DIVERGED_MARKER, "a run that diverged")):
        if (output_dir / marker).exists():
            raise ZooError(f"output_dir '{output_dir}' holds {what} ({marker}); pick another, "
                           f"e.g. output_dir={output_dir}-2, or delete it first")
    return output_dir


def check_run_folder(output_dir: Path) -> None:
    """Refuse an ``output_dir`` that is a file, a sweep's folder, or a folder of files that no zoo run wrote."""
    # A Slurm sweep's folder holds slurm/train.sbatch too: its sweep.json says it is not a run's.
    check_output_folder(output_dir, "run", RUN_MARKERS, {SPEC_FILE: "sweep"})


def _holder(lock_path: Path) -> str:
    try:
        holder = json.loads(lock_path.read_text())
        return f"pid {holder['pid']} on {holder['host']}, since {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"  # the holder is between taking the lock and writing its name


class RunFolderLock:
    """Held for a ``with`` block; ``enabled=False`` (ranks other than the main one) does nothing."""

    def __init__(self, output_dir: Path, enabled: bool = True) -> None:
        self.output_dir, self.enabled = Path(output_dir), enabled
        self.lock_path = self.output_dir / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunFolderLock:
        if not self.enabled:
            return self
        check_run_folder(self.output_dir)
        self._created = not self.output_dir.exists()
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ZooError(f"cannot write output_dir '{self.output_dir}': {exc.strerror}; "
                           "pick a folder you can write to") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise ZooError(f"output_dir '{self.output_dir}' is in use by another run ({_holder(self.lock_path)}); "
                           "wait for it to end or pick another output_dir") from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(self._fd, 0)
        os.write(self._fd, (json.dumps(holder) + "\n").encode())
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is None:
            return
        # A run that stopped before writing anything (bad data, say) leaves no folder behind.
        if self._created and [p.name for p in self.output_dir.iterdir()] == [LOCK_NAME]:
            self.lock_path.unlink()
            self.output_dir.rmdir()
        os.close(self._fd)  # releases the lock
        self._fd = None
