"""The grid engine: every combination of the ``--sweep`` values, each point once.

A point's folder is named after its overrides (``model.fc1=32,trainer.lr=0.001``). Taking up a
grid again skips finished points, resumes unfinished ones (the run continues from its checkpoint)
and starts the rest; a failed point is named with its error and rerun only with ``retry_failed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from zoo.sweep.point import Outcome, Point, point_status, read_point
from zoo.sweep.spec import SweepSpec, grid_points, point_dirname


def grid(spec: SweepSpec) -> list[Point]:
    """Every point of the grid, in the order Slurm array tasks take them."""
    return [Point(name=point_dirname(varied, index), folder=spec.folder / point_dirname(varied, index), varied=varied)
            for index, varied in enumerate(grid_points(spec.axes))]


class GridEngine:
    """Hands out the points still to train; ``only`` restricts it to one point (a Slurm array task)."""

    def __init__(self, spec: SweepSpec, retry_failed: bool = False, only: int | None = None) -> None:
        self.spec = spec
        self.notes: list[str] = []
        self.failed_before = 0
        self._lock = threading.Lock()
        self._queue: list[Point] = []
        for index, point in enumerate(grid(spec)):
            if only is not None and index != only:
                continue
            status = point_status(point.folder)
            if status in ("finished", "pruned"):
                self.notes.append(f"{point.name}: {status} before; skipped")
            elif status == "failed" and not retry_failed:
                error = read_point(point.folder).get("error", "no error recorded")
                self.notes.append(f"{point.name}: failed before ({error}); skipped, --retry-failed runs it again")
                self.failed_before += 1
            else:
                if status != "new":
                    self.notes.append(f"{point.name}: {'retrying' if status == 'failed' else 'resuming'}")
                self._queue.append(point)

    def next_point(self) -> Point | None:
        with self._lock:
            return self._queue.pop(0) if self._queue else None

    def watcher(self, point: Point) -> Callable[[dict[str, Any]], bool] | None:
        return None  # a grid trains every point to the end

    def finish(self, point: Point, outcome: Outcome) -> None:
        pass  # the point's folder already says how it ended
