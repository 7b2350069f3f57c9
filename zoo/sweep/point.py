"""One point of a sweep: an ordinary run folder, trained by a child process, and what became of it.

The sweep adds two files to a point's run folder, and this module is their only writer:

    <point>/sweep-point.json   {"status": ..., "error": ..., "trial": ..., "varied": [...], "pruned_at_epoch": ...}
    <point>/train.log          the training's output, every attempt appended

Status: ``finished`` (the run wrote summary.json), ``failed`` (with the error line the training
printed last), ``pruned`` (Optuna stopped it; it checkpointed first), ``running`` (a sweep is
training it, or died while it was: either way the next sweep resumes it from its checkpoint),
and ``new`` for a folder no attempt has touched.

Stopping: the child gets SIGUSR1, which a run treats like preemption: it checkpoints at its next
step boundary and exits with code 3. The sweep sends it when it is itself asked to stop (Ctrl-C,
SIGTERM, a Slurm preemption), or when the trial's per-epoch validation says prune.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from zoo.metrics_file import METRICS_FILE
from zoo.run_folder import FINISHED_MARKER
from zoo.sweep.spec import SUMMARY_METRICS

POINT_FILE = "sweep-point.json"
LOG_FILE = "train.log"
SUMMARY_FILE = FINISHED_MARKER  # written by the run when it finishes
EXIT_PREEMPTED = 3  # a run's "checkpointed on a signal" (zoo.preemption)
POLL_SECONDS = 0.2
# "error: ..." as zoo prints it, also behind srun's "0: " and torchrun's "[rank0]:" tags; or a traceback's last line.
_ERROR_LINE = re.compile(r"(^|[\]:] ?)error: |^\w*(Error|Exception|Interrupt)\b")


@dataclass
class Point:
    """One run of the sweep: its folder, the overrides that make it differ, its Optuna trial."""

    name: str
    folder: Path
    varied: list[str]
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    status: str  # finished, failed, pruned or stopped (checkpointed; resumes next time)
    error: str | None = None
    value: float | None = None
    pruned_at_epoch: int | None = None


def read_point(folder: Path) -> dict[str, Any]:
    path = folder / POINT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def point_status(folder: Path) -> str:
    if (folder / SUMMARY_FILE).is_file():
        return "finished"
    return read_point(folder).get("status", "new" if not folder.is_dir() else "running")


def write_point(point: Point, status: str, **details: Any) -> None:
    point.folder.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "varied": point.varied, "trial": point.trial, **details}
    tmp = point.folder / f".{POINT_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(point.folder / POINT_FILE)  # never half-written: a report may read it any time


def epoch_records(folder: Path) -> list[dict[str, Any]]:
    """The run's epoch records so far; a line being written is skipped until it is whole."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "epoch":
            records.append(record)
    return records


def read_metric(folder: Path, metric: str) -> float | None:
    """A finished run's metric: from summary.json, or its last epoch record."""
    if metric in SUMMARY_METRICS:
        path = folder / SUMMARY_FILE
        value = json.loads(path.read_text()).get(metric) if path.is_file() else None
    else:
        records = epoch_records(folder)
        value = records[-1].get(metric) if records else None
    return float(value) if value is not None else None


class _Output:
    """Copies the child's output to train.log (and the terminal when asked), keeping its last error line."""

    def __init__(self, stream: TextIO, log: TextIO, echo: TextIO | None) -> None:
        self.error: str | None = None
        self.last: str | None = None
        self._thread = threading.Thread(target=self._copy, args=(stream, log, echo), daemon=True)
        self._thread.start()

    def _copy(self, stream: TextIO, log: TextIO, echo: TextIO | None) -> None:
        for line in stream:
            log.write(line)
            log.flush()
            if echo is not None:
                echo.write(line)
                echo.flush()
            text = line.strip()
            if text:
                self.last = text
                if _ERROR_LINE.search(text):
                    self.error = text

    def join(self) -> None:
        self._thread.join(timeout=30)


def signal_child(process: subprocess.Popen) -> None:
    """Ask a local child to checkpoint and stop (a run treats SIGUSR1 as preemption)."""
    if process.poll() is None:
        process.send_signal(signal.SIGUSR1)


@dataclass
class Launch:
    """How to start a point and how to stop it early."""

    command: Sequence[str]  # the point's overrides are appended
    env: dict[str, str] | None = None
    echo: TextIO | None = None  # also copy the output here (a Slurm task's log)
    stop: Callable[[subprocess.Popen], None] = signal_child


def run_point(point: Point, overrides: Sequence[str], launch: Launch, stopping: threading.Event,
              should_prune: Callable[[dict[str, Any]], bool] | None = None, metric: str = "best_val_acc") -> Outcome:
    """Train one point to its end (resuming from its checkpoint) and say how it ended."""
    write_point(point, "running")
    seen, pruned_at, signalled = 0, None, False
    with (point.folder / LOG_FILE).open("a") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} sweep starts this point\n")
        log.flush()
        process = subprocess.Popen([*launch.command, *overrides], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=launch.env, start_new_session=True)
        output = _Output(process.stdout, log, launch.echo)  # type: ignore[arg-type]
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            if should_prune is not None and pruned_at is None:
                records = [r for r in epoch_records(point.folder) if r["epoch"] >= 1]
                for record in records[seen:]:
                    if should_prune(record):
                        pruned_at = record["epoch"]
                        break
                seen = len(records)
            if not signalled and (pruned_at is not None or stopping.is_set()):
                launch.stop(process)
                signalled = True
        output.join()
    return _outcome(point, process.returncode, output, pruned_at, signalled, metric)


def _outcome(point: Point, code: int, output: _Output, pruned_at: int | None, signalled: bool,
             metric: str) -> Outcome:
    if code == 0 and (point.folder / SUMMARY_FILE).is_file():
        value = read_metric(point.folder, metric)
        write_point(point, "finished", **{metric: value})
        return Outcome("finished", value=value)
    if pruned_at is not None:
        write_point(point, "pruned", pruned_at_epoch=pruned_at)
        return Outcome("pruned", pruned_at_epoch=pruned_at)
    if code == EXIT_PREEMPTED or (signalled and code != 0):  # a signal can land before the run's handler
        write_point(point, "running", note=f"stopped (exit {code}); the next sweep resumes it")
        return Outcome("stopped")
    error = output.error or output.last or "no output"
    error = f"exit code {code}: {error}" if code != 0 else f"exit code 0 but no {SUMMARY_FILE}: {error}"
    write_point(point, "failed", error=error)
    return Outcome("failed", error=error)
