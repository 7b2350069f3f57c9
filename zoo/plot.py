"""Learning curves from run folders: train and validation loss, and validation accuracy, per epoch.

Reads only ``metrics.jsonl`` (its ``"kind": "epoch"`` records) and ``recipe.yaml`` (for the run's
name), so it works on any finished, running or preempted run folder, copied from anywhere.
Drawing uses a bare :class:`matplotlib.figure.Figure` (the Agg renderer, no pyplot, no display)::

    runs = [load_curves("runs/mlp"), load_curves("runs/bn_mlp")]
    plot_curves(runs).savefig("compare.png")
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError
from zoo.metrics_file import METRICS_FILE
from zoo.run_folder import RECIPE_FILE

CURVES_FILE = "curves.png"
# Every figure drawn here carries this mark in its metadata, in the formats that keep some, so
# that `zoo plot` can tell a plot of its own (which it redraws) from anyone else's file (which it
# never overwrites). Plain ASCII without brackets, which PDF and SVG would escape.
PLOT_MARK = "zoo-launch learning curves by zoo.plot"
_MARK_KEY = {"png": "Software", "pdf": "Creator", "svg": "Creator", "svgz": "Creator", "ps": "Creator",
             "eps": "Creator"}
_MARKED_SIZE_LIMIT = 64 * 1024 * 1024  # a figure of curves is far smaller; a bigger file is not one


@dataclass
class Curves:
    """One run's per-epoch series; ``train_loss`` has no value at epoch 0 (before training)."""

    name: str
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)


def run_name(run_dir: Path) -> str:
    """``tracking.name`` from the run's ``recipe.yaml``, else the folder's name."""
    recipe = run_dir / RECIPE_FILE
    try:
        data = yaml.safe_load(recipe.read_text()) if recipe.is_file() else None
        name = ((data or {}).get("tracking") or {}).get("name")
    except (yaml.YAMLError, OSError, AttributeError):
        name = None
    return str(name) if name else run_dir.resolve().name


def load_curves(run_dir: str | Path) -> Curves:
    """The epoch records of ``run_dir/metrics.jsonl``; a ZooError names a folder that is no run."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        what = "does not exist" if not run_dir.exists() else "has no metrics.jsonl"
        raise ZooError(f"run folder '{run_dir}' {what}; pass the output_dir of a zoo run")
    by_epoch: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ZooError(f"{path}: line {number} is not JSON; is the file damaged?") from None
        # Step-window records carry "kind": "step"; older epoch records may lack "kind".
        if record.get("kind", "epoch") == "epoch" and "val_loss" in record:
            by_epoch[int(record["epoch"])] = record  # a resumed run's rewritten epoch wins
    if not by_epoch:
        raise ZooError(f"{path} has no epoch records yet; plot again after the first validation")
    curves = Curves(run_name(run_dir))
    for epoch in sorted(by_epoch):
        record = by_epoch[epoch]
        curves.epochs.append(epoch)
        curves.train_loss.append(record.get("train_loss"))
        curves.val_loss.append(record["val_loss"])
        curves.val_acc.append(record["val_acc"])
    return curves


def plot_curves(runs: Sequence[Curves]) -> Any:
    """A figure with two panels: loss (train solid, validation dashed) and validation accuracy.

    Each run gets one colour; its lines are labelled ``"<name> train"``, ``"<name> val"`` and
    ``"<name>"``, so the figure's own ``Line2D`` data can be checked against the records.
    """
    from matplotlib.figure import Figure

    labels = _unique_labels([run.name for run in runs])
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, acc_ax = figure.subplots(1, 2)
    for index, (run, label) in enumerate(zip(runs, labels, strict=True)):
        color = f"C{index % 10}"
        trained = [(e, v) for e, v in zip(run.epochs, run.train_loss, strict=True) if v is not None]
        if trained:
            loss_ax.plot(*zip(*trained, strict=True), color=color, marker="o", markersize=3, label=f"{label} train")
        loss_ax.plot(run.epochs, run.val_loss, color=color, linestyle="--", marker="s", markersize=3,
                     label=f"{label} val")
        acc_ax.plot(run.epochs, run.val_acc, color=color, marker="o", markersize=3, label=label)
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    return figure


def save_curves(runs: Sequence[Curves], output: str | Path) -> Any:
    """Draw ``runs`` and write the figure to ``output`` (format from its suffix); return the figure."""
    figure = plot_curves(runs)
    output = Path(output)
    formats = figure.canvas.get_supported_filetypes()
    if output.suffix.lstrip(".").lower() not in formats:
        raise ZooError(f"cannot write '{output}': use one of the suffixes .{', .'.join(sorted(formats))}")
    if output.parent != Path() and not output.parent.is_dir():
        raise ZooError(f"cannot write '{output}': folder '{output.parent}' does not exist")
    key = _MARK_KEY.get(output.suffix.lstrip(".").lower())
    figure.savefig(output, dpi=110, **({"metadata": {key: PLOT_MARK}} if key else {}))
    return figure


def is_zoo_plot(path: str | Path) -> bool:
    """Whether ``path`` is a figure drawn here (its metadata holds the mark); False for anything else."""
    path = Path(path)
    if path.suffix.lstrip(".").lower() not in _MARK_KEY or not path.is_file():
        return False
    try:
        if path.stat().st_size > _MARKED_SIZE_LIMIT:
            return False
        data = path.read_bytes()
        if path.suffix.lower() == ".svgz":
            import gzip

            data = gzip.decompress(data)
    except (OSError, EOFError):  # unreadable, or a .svgz that is not gzip
        return False
    return PLOT_MARK.encode() in data


def write_run_curves(run_dir: str | Path) -> Path:
    """``<run_dir>/curves.png`` for one run; called by the run itself at its end."""
    path = Path(run_dir) / CURVES_FILE
    save_curves([load_curves(run_dir)], path)
    return path


def _unique_labels(names: list[str]) -> list[str]:
    """Run names as labels; repeats get ``#2``, ``#3`` so every line stays distinguishable."""
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return labels


class CurvesDrawer:
    """Draws a run's ``curves.png`` at its end, in a process started near its beginning.

    Importing matplotlib takes about 2 s on a 2-core machine, longer than a small model's epoch.
    The drawer's process imports it while the run's own process is still importing torch and
    preparing data on one core, then waits. :meth:`start` tells it where to draw as soon as the
    last epoch's record is written, so the drawing overlaps the run's last checkpoint and test
    evaluation; :meth:`draw` waits for it (telling it first if :meth:`start` was not called). If
    the run ends without drawing, the process is stopped at exit (and it ends on its own when the
    run's process dies and the pipe closes).
    """

    _waiting: subprocess.Popen | None = None  # started by start_drawer(), taken by the next drawer

    def __init__(self) -> None:
        process, CurvesDrawer._waiting = CurvesDrawer._waiting, None
        if process is None:
            process = _spawn_drawer()
        self.process = process
        self.started: Path | None = None  # the run folder the drawer was told to draw

    def start(self, run_dir: str | Path) -> None:
        """Tell the drawer to draw ``run_dir/curves.png`` now, without waiting (once; see :meth:`draw`)."""
        if self.started is not None:
            return
        self.started = Path(run_dir).resolve()
        try:
            self.process.stdin.write(f"{self.started}\n")
            self.process.stdin.close()  # the drawer draws one run; it reads up to the end of the line
        except (OSError, ValueError):
            pass  # a drawer that died: draw() says so

    def draw(self, run_dir: str | Path, timeout: float = 120) -> None:
        """Draw ``run_dir/curves.png`` and wait for it; a ZooError carries the drawer's last line when it could not."""
        if self.started not in (None, Path(run_dir).resolve()):
            raise ZooError(f"the curves drawer was already told to draw {self.started}")
        message = None if self.started is not None else f"{Path(run_dir).resolve()}\n"
        self.started = Path(run_dir).resolve()
        try:
            if message is not None:
                _, err = self.process.communicate(message, timeout=timeout)
            else:  # start() already sent the line and closed the pipe
                self.process.wait(timeout=timeout)
                err = self.process.stderr.read()
        except (subprocess.TimeoutExpired, OSError, ValueError) as exc:
            self.process.kill()
            raise ZooError(f"the curves drawer did not finish ({type(exc).__name__})") from None
        if self.process.returncode != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            raise ZooError(lines[-1] if lines else f"the curves drawer exited with {self.process.returncode}")


def start_drawer() -> None:
    """Start the next :class:`CurvesDrawer`'s process now, so its imports overlap the run's."""
    if CurvesDrawer._waiting is None:
        CurvesDrawer._waiting = _spawn_drawer()


def _spawn_drawer() -> subprocess.Popen:
    code = "from zoo.plot import draw_when_told; draw_when_told()"
    # A session of its own: a Ctrl-C at the terminal is the run's to handle (it checkpoints and still
    # draws), not the drawer's to die of. It ends when the run's process does and the pipe closes.
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    atexit.register(_stop_if_waiting, process)
    return process


def _stop_if_waiting(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def draw_when_told() -> None:
    """The drawer's process: import matplotlib, then draw the curves of the run folder it is sent."""
    import matplotlib.backends.backend_agg  # the slow imports, done while the run starts
    import matplotlib.figure  # noqa: F401

    run_dir = sys.stdin.readline().strip()
    if not run_dir:
        return  # the run ended without drawing
    try:
        write_run_curves(run_dir)
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
