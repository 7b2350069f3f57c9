"""Runs a sweep's points, N at a time, until its engine has none left or the sweep is asked to stop.

The same loop serves ``zoo sweep`` on this machine (N workers, each training its points in a child
``zoo train`` process) and a Slurm array task (one worker, each point an ``srun``). SIGINT, SIGTERM
and SIGUSR1 ask it to stop: every running point checkpoints and exits, nothing new starts, and the
same command later takes up where it stopped.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from zoo.sweep.point import Launch, Outcome, Point, run_point
from zoo.sweep.spec import SweepSpec, point_overrides

EXIT_STOPPED = 3  # the sweep stopped on a signal; run it again to continue (a Slurm task requeues on it)


class Engine(Protocol):
    notes: list[str]
    failed_before: int  # failed points left alone (no retry asked for)

    def next_point(self) -> Point | None: ...

    def watcher(self, point: Point) -> Callable[[dict[str, Any]], bool] | None: ...

    def finish(self, point: Point, outcome: Outcome) -> None: ...


@dataclass
class Result:
    outcomes: list[tuple[Point, Outcome]] = field(default_factory=list)
    stopped: bool = False
    failed_before: int = 0

    def count(self, status: str) -> int:
        return sum(1 for _, outcome in self.outcomes if outcome.status == status)

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return EXIT_STOPPED
        return 1 if self.count("failed") or self.failed_before else 0  # an unfinished sweep is not a success


def say(message: str) -> None:
    print(f"[zoo sweep] {message}", flush=True)


def describe(point: Point, outcome: Outcome, metric: str) -> str:
    what = {"finished": f"finished, {metric} {outcome.value}",
            "pruned": f"pruned at epoch {outcome.pruned_at_epoch}",
            "stopped": "stopped; the next run of the sweep resumes it",
            "failed": f"failed: {outcome.error}"}[outcome.status]
    return f"{point.name}: {what}"


def local_launch(spec: SweepSpec, parallel: int) -> Launch:
    """A point on this machine: ``zoo train`` in a child process, the CPU threads shared out."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    if "OMP_NUM_THREADS" not in env:  # N points side by side each get their share of the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return Launch(command=[sys.executable, "-m", "zoo.train", spec.recipe], env=env)


def run_sweep(spec: SweepSpec, engine: Engine, launch: Launch, parallel: int = 1) -> Result:
    """Train every point the engine hands out, ``parallel`` at a time; returns how each ended."""
    for note in engine.notes:
        say(note)
    result, stopping, lock = Result(failed_before=engine.failed_before), threading.Event(), threading.Lock()

    def work() -> None:
        while not stopping.is_set():
            point = engine.next_point()
            if point is None:
                return
            say(f"{point.name}: training {' '.join(point.varied)}")
            overrides = point_overrides(spec, point.varied, point.folder)
            try:
                outcome = run_point(point, overrides, launch, stopping, engine.watcher(point), spec.metric)
            except OSError as exc:  # the training command itself could not start
                outcome = Outcome("failed", error=f"could not start {launch.command[0]}: {exc}")
            engine.finish(point, outcome)
            say(describe(point, outcome, spec.metric))
            with lock:
                result.outcomes.append((point, outcome))

    def stop(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            say(f"{signal.Signals(signum).name}: every running point checkpoints and stops; "
                "run the same command again to go on")
        stopping.set()

    workers = [threading.Thread(target=work, name=f"sweep-worker-{i}") for i in range(max(1, parallel))]
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():
                worker.join(timeout=0.2)  # short waits, so the signal handler runs promptly
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result.stopped = stopping.is_set()
    return result
