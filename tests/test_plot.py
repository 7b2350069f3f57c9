"""Learning curves: the drawn lines carry the runs' records, the PNG is real, ``zoo plot`` overlays runs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from zoo.cli import main as zoo
from zoo.errors import ZooError
from zoo.plot import CURVES_FILE, CurvesDrawer, load_curves, plot_curves, start_drawer


def make_run(folder: Path, epochs: int, seed: int, name: str | None = None) -> list[dict[str, Any]]:
    """A run folder as the tracker writes it: epoch and step records, and a recipe.yaml."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    epoch_records, lines = [], []
    for epoch in range(epochs + 1):
        record = {"kind": "epoch", "epoch": epoch, "train_loss": None if epoch == 0 else rng.uniform(0.1, 2),
                  "val_loss": rng.uniform(0.1, 2), "val_acc": rng.uniform(0.1, 1), "lr": 1e-3, "train_seconds": 1.0}
        epoch_records.append(record)
        lines.append(record)
        lines.append({"kind": "step", "global_step": 10 * (epoch + 1), "epoch": epoch + 0.5,
                      "train_loss": rng.uniform(0.1, 2), "lr": 1e-3, "samples_per_second": 1e4, "examples": 100})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "recipe.yaml").write_text(f"tracking:\n  name: {name}\n" if name else "seed: 0\n")
    return epoch_records


def lines_by_label(figure: Any) -> dict[str, list[tuple[float, float]]]:
    return {line.get_label(): [tuple(map(float, xy)) for xy in line.get_xydata()]
            for ax in figure.axes for line in ax.get_lines()}


def test_curves_carry_each_runs_records(tmp_path: Path) -> None:
    first = make_run(tmp_path / "a", epochs=3, seed=1, name="wide-mlp")
    second = make_run(tmp_path / "run-b", epochs=2, seed=2)
    figure = plot_curves([load_curves(tmp_path / "a"), load_curves(tmp_path / "run-b")])
    lines = lines_by_label(figure)
    for label, records in (("wide-mlp", first), ("run-b", second)):  # tracking.name, else the folder
        assert lines[f"{label} train"] == [(r["epoch"], r["train_loss"]) for r in records if r["epoch"] > 0]
        assert lines[f"{label} val"] == [(r["epoch"], r["val_loss"]) for r in records]
        assert lines[label] == [(r["epoch"], r["val_acc"]) for r in records]
    loss_ax, acc_ax = figure.axes
    assert loss_ax.get_title() == "Loss" and acc_ax.get_title() == "Validation accuracy"


def test_resumed_run_keeps_the_rewritten_epoch(tmp_path: Path) -> None:
    records = make_run(tmp_path / "r", epochs=2, seed=3)
    again = {**records[2], "val_acc": 0.5}  # epoch 2 written again after a resume
    with (tmp_path / "r" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(again) + "\n")
    curves = load_curves(tmp_path / "r")
    assert curves.epochs == [0, 1, 2] and curves.val_acc[-1] == 0.5


def test_zoo_plot_writes_a_png_overlaying_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "a", epochs=3, seed=1, name="first")
    make_run(tmp_path / "b", epochs=3, seed=2, name="second")
    out = tmp_path / "compare.png"
    assert zoo(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)]) == 0
    assert "first, second" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        image.load()  # decodes every row: a truncated file fails here
        assert image.format == "PNG" and image.size == (1210, 462)
        # Not a blank canvas: the curves put many colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 50


@pytest.mark.parametrize(("args", "message"), [
    (["missing"], "run folder '{tmp}/missing' does not exist"),
    (["empty"], "run folder '{tmp}/empty' has no metrics.jsonl"),
    (["a", "-o", "{tmp}/x.nope"], "cannot write '{tmp}/x.nope': use one of the suffixes"),
])
def test_zoo_plot_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        args: list[str], message: str) -> None:
    make_run(tmp_path / "a", epochs=1, seed=0)
    (tmp_path / "empty").mkdir()
    argv = [arg.format(tmp=tmp_path) if arg.startswith("{") else str(tmp_path / arg) if arg != "-o" else arg
            for arg in args]
    assert zoo(["plot", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(tmp=tmp_path)) and err.count("\n") == 1


# -- the run's own curves.png, drawn by a process started with the training ---------------------


def test_the_curves_drawer_draws_when_told_and_only_then(tmp_path: Path) -> None:
    make_run(tmp_path / "run", epochs=2, seed=0)
    start_drawer()  # as zoo.run does before the run's own imports
    CurvesDrawer().draw(tmp_path / "run")
    with Image.open(tmp_path / "run" / CURVES_FILE) as image:
        assert image.format == "PNG"

    make_run(tmp_path / "died", epochs=2, seed=0)
    drawer = CurvesDrawer()
    drawer.process.stdin.close()  # the run ended without asking (it crashed)
    assert drawer.process.wait(timeout=120) == 0
    assert not (tmp_path / "died" / CURVES_FILE).exists()

    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match=r"^error: run folder .* has no metrics\.jsonl"):
        CurvesDrawer().draw(tmp_path / "empty")


def test_the_drawer_process_never_imports_torch() -> None:
    # import zoo.plot is all the drawer's process imports from zoo; torch would cost it 2.5 s.
    code = "import sys, zoo.plot; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_started_drawing_runs_without_waiting_and_draw_then_only_waits(tmp_path: Path) -> None:
    make_run(tmp_path / "run", epochs=2, seed=0)
    drawer = CurvesDrawer()
    drawer.start(tmp_path / "run")  # what the run does once its last epoch's record is written
    assert drawer.process.wait(timeout=120) == 0  # drawn without draw() being called
    assert (tmp_path / "run" / CURVES_FILE).is_file()
    drawer.draw(tmp_path / "run")  # collects the finished drawing
    with pytest.raises(ZooError, match="already told to draw"):
        drawer.draw(tmp_path / "other")
