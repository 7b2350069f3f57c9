"""``zoo sweep report SWEEP_DIR``: every point in one table, the best point's recipe, a plot.

Written into the sweep folder (this module is their only writer)::

    report.md          the table: varied keys, best val acc, test acc, epochs, status (and errors)
    best-recipe.yaml   the best point's resolved recipe, its output_dir moved beside the sweep's,
                       ready to rerun: ``zoo train <sweep>/best-recipe.yaml``
    sweep.png          the metric against each varied key, one panel per key
    optuna-history.png an Optuna search's optimisation history
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError
from zoo.run_folder import RECIPE_FILE
from zoo.sweep.point import SUMMARY_FILE, Point, epoch_records, point_status, read_metric, read_point
from zoo.sweep.spec import SweepSpec, read_spec


@dataclass
class Row:
    point: Point
    status: str
    values: dict[str, Any] = field(default_factory=dict)  # the varied keys
    best_val_acc: float | None = None
    test_acc: float | None = None
    epochs: int | None = None
    metric: float | None = None
    note: str = ""


def _row(point: Point, spec: SweepSpec, status: str | None = None) -> Row:
    folder = point.folder
    summary = json.loads((folder / SUMMARY_FILE).read_text()) if (folder / SUMMARY_FILE).is_file() else {}
    records = epoch_records(folder)
    status = status or point_status(folder)
    accs = [r["val_acc"] for r in records if r.get("val_acc") is not None and r["epoch"] >= 1]
    detail = read_point(folder)
    note = detail.get("error") or (f"at epoch {detail['pruned_at_epoch']}" if status == "pruned" else "")
    return Row(
        point=point, status=status, values=dict(v.split("=", 1) for v in point.varied),
        best_val_acc=summary.get("best_val_acc", max(accs) if accs else None), test_acc=summary.get("test_acc"),
        epochs=summary.get("epochs", records[-1]["epoch"] if records else None),
        metric=read_metric(folder, spec.metric) if status == "finished" else None, note=note,
    )


def collect(spec: SweepSpec) -> list[Row]:
    """One row per point: every grid point (started or not), or every trial of the study."""
    if spec.engine == "grid":
        from zoo.sweep.grid import grid

        return [_row(point, spec) for point in grid(spec)]
    from zoo.sweep.search import open_study, trial_point

    rows = []
    for trial in open_study(spec).get_trials(deepcopy=False):
        point = trial_point(trial, spec.folder)
        state = trial.state.name.lower()
        status = {"complete": "finished", "fail": "failed"}.get(state, state)
        row = _row(point, spec, None if status == "running" else status)
        row.note = row.note or trial.user_attrs.get("error", "")
        rows.append(row)
    return rows


def best_row(rows: list[Row], spec: SweepSpec) -> Row | None:
    done = [row for row in rows if row.status == "finished" and row.metric is not None]
    if not done:
        return None
    sign = 1 if spec.direction == "maximize" else -1
    return max(done, key=lambda row: sign * row.metric)  # type: ignore[operator]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fmt_value(text: str) -> str:
    """A sampled value as written, shortened to 4 significant digits when it is a long float."""
    number = _as_number(text)
    return f"{number:.4g}" if number is not None and len(text) > 8 else text


def table(rows: list[Row], spec: SweepSpec, best: Row | None) -> str:
    """A Markdown table, one line per point; the best point marked."""
    head = ["point", *spec.varied, "best_val_acc", "test_acc", "epochs", "status"]
    if spec.metric not in ("best_val_acc", "test_acc"):
        head.insert(-1, spec.metric)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.point.name + (" (best)" if row is best else ""),
                 *(_fmt_value(row.values.get(k, "-")) for k in spec.varied),
                 _fmt(row.best_val_acc), _fmt(row.test_acc), _fmt(row.epochs)]
        if spec.metric not in ("best_val_acc", "test_acc"):
            cells.append(_fmt(row.metric))
        cells.append(row.status + (f" ({row.note})" if row.note else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_best_recipe(best: Row, spec: SweepSpec) -> Path:
    """The best point's resolved recipe; its output_dir is new, so it reruns without refusing."""
    recipe = yaml.safe_load((best.point.folder / RECIPE_FILE).read_text())
    recipe["output_dir"] = str(spec.folder.parent / f"{spec.folder.name}-best")
    path = spec.folder / "best-recipe.yaml"
    path.write_text(f"# the best point of sweep {spec.folder}: {best.point.name} "
                    f"({spec.metric} {_fmt(best.metric)})\n" + yaml.safe_dump(recipe, sort_keys=False))
    return path


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot(rows: list[Row], spec: SweepSpec) -> Path:
    """The metric against each varied key, one panel per key; log x for log ranges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    done = [row for row in rows if row.metric is not None]
    fig, axes = plt.subplots(1, len(spec.axes), figsize=(4.5 * len(spec.axes), 3.6), squeeze=False)
    for ax, axis in zip(axes[0], spec.axes, strict=True):
        xs = [row.values.get(axis.key, "") for row in done]
        numbers = [_as_number(x) for x in xs]
        if all(n is not None for n in numbers) and xs:
            ax.scatter(numbers, [row.metric for row in done])
            if axis.log or (axis.values and min(numbers) > 0 and max(numbers) / min(numbers) >= 100):  # type: ignore[type-var, operator]
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a narrow span overlap
            if axis.is_range:  # where the points fell in the whole space searched
                ax.set_xlim(axis.low, axis.high)
        else:
            ax.scatter(xs, [row.metric for row in done])
        ax.set_xlabel(axis.key)
        ax.set_ylabel(spec.metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{spec.folder.name}: {spec.metric} per point ({len(done)} finished)")
    fig.tight_layout()
    path = spec.folder / "sweep.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_history(spec: SweepSpec) -> Path | None:
    """Optuna's optimisation history of the study; None when no trial finished yet."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    from zoo.sweep.search import open_study

    study = open_study(spec)
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        ax = plot_optimization_history(study, target_name=spec.metric)
    path = spec.folder / "optuna-history.png"
    ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(ax.figure)
    return path


def report(folder: str | Path) -> str:
    """Write the report files into the sweep folder and return the text to print."""
    spec = read_spec(folder)
    rows = collect(spec)
    if not rows:
        raise ZooError(f"{folder} holds no points yet; run the sweep first")
    best = best_row(rows, spec)
    text = table(rows, spec, best)
    (spec.folder / "report.md").write_text(f"# Sweep {spec.folder}\n\n{text}")
    lines = [text.rstrip()]
    if best is not None:
        trial = f" (trial {best.point.trial})" if best.point.trial is not None else ""
        lines.append(f"best: {best.point.name}{trial}: {spec.metric} {_fmt(best.metric)} with "
                     f"{' '.join(best.point.varied)}")
        recipe = write_best_recipe(best, spec)
        lines.append(f"its recipe: {recipe} (rerun: zoo train {recipe})")
    else:
        lines.append("best: none yet (no point has finished)")
    lines.append(f"plot: {plot(rows, spec)}")
    if spec.engine == "optuna":
        history = plot_history(spec)
        if history is not None:
            lines.append(f"optimisation history: {history}")
    counts = {s: sum(1 for r in rows if r.status == s) for s in ("finished", "pruned", "failed", "running", "new")}
    lines.append("points: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)

