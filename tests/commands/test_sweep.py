"""``zoo sweep`` on this machine: a grid stopped midway and finished by a rerun, an Optuna search
and its report, pruning, and failed points. Points are tiny (fc1=32, one or two epochs)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from zoo import cli
from zoo.sweep.grid import GridEngine
from zoo.sweep.point import Launch, Point, point_status, read_point, run_point
from zoo.sweep.runner import local_launch
from zoo.sweep.spec import build_spec, point_overrides, read_spec

optuna = pytest.importorskip("optuna")  # a machine without it (e.g. a lent GPU box) skips this file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "recipes" / "mlp.yaml")
TINY = ["model.fc1=32", "tracking.wandb=false"]
GRID = ["--sweep", "model.fc2=16,32", "--sweep", "trainer.lr=1e-3,3e-3", "--parallel", "2"]


def sweep_command(mnist_path: str, folder: Path, *options: str, epochs: int = 1) -> list[str]:
    return [sys.executable, "-m", "zoo.cli", "sweep", RECIPE, f"data.path={mnist_path}", *TINY,
            f"trainer.epochs={epochs}", f"output_dir={folder}", *options]


def run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file of a folder with its modification time and content hash."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_grid_stopped_midway_finishes_on_rerun_without_retraining(mnist_path: str, tmp_path: Path) -> None:
    folder = tmp_path / "grid"
    command = sweep_command(mnist_path, folder, *GRID, epochs=2)
    points = [folder / f"model.fc2={fc2},trainer.lr={lr}" for fc2 in (16, 32) for lr in ("1e-3", "3e-3")]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    deadline = time.monotonic() + 240
    while not any((p / "summary.json").is_file() for p in points):
        assert first.poll() is None and time.monotonic() < deadline, "no point finished"
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)  # what Ctrl-C or a scheduler does to the sweep
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 3, out
    finished = [p for p in points if (p / "summary.json").is_file()]
    assert 1 <= len(finished) < 4, out
    # A point still training when the signal came is stopped and said so; on a quiet machine both
    # parallel points may already have finished, and the rest had not started.
    if any((p / "train.log").is_file() for p in set(points) - set(finished)):
        assert "stopped; the next run of the sweep resumes it" in out
    before = {p: snapshot(p) for p in finished}

    rerun = run(command)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for point in finished:  # skipped, not retrained: not one file touched
        assert f"{point.name}: finished before; skipped" in rerun.stdout
        assert snapshot(point) == before[point]
    for point in points:
        assert point_status(point) == "finished"
        assert yaml.safe_load((point / "recipe.yaml").read_text())["tracking"]["group"] == "grid"
    for point in set(points) - set(finished):
        if (point / "train.log").read_text().count("sweep starts this point") == 2 and (point / "checkpoints").is_dir():
            assert f"{point.name}: resuming" in rerun.stdout
    assert "| model.fc2=" in rerun.stdout and (folder / "sweep.png").is_file()
    assert yaml.safe_load((folder / "best-recipe.yaml").read_text())["output_dir"] == str(tmp_path / "grid-best")


def test_optuna_search_and_its_report_name_the_best_trial(mnist_path: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "search"
    proc = run(sweep_command(mnist_path, folder, "--search", "trainer.lr=log:1e-4..1e-2",
                             "--search", "model.dropout=0.0..0.5", "--trials", "6", "--parallel", "2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = optuna.load_study(study_name="zoo-sweep", storage=f"sqlite:///{folder / 'optuna.db'}")
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    for trial in trials:  # each trial is an ordinary run folder trained with the trial's parameters
        recipe = yaml.safe_load((folder / f"trial-{trial.number:03d}" / "recipe.yaml").read_text())
        assert recipe["trainer"]["lr"] == pytest.approx(trial.params["trainer.lr"])
        assert recipe["model"]["dropout"] == pytest.approx(trial.params["model.dropout"])
        summary = json.loads((folder / f"trial-{trial.number:03d}" / "summary.json").read_text())
        assert trial.value == summary["best_val_acc"]

    assert cli.main(["sweep", "report", str(folder)]) == 0
    out = capsys.readouterr().out
    best = study.best_trial
    assert f"best: trial-{best.number:03d} (trial {best.number}): best_val_acc {best.value:.4f}" in out
    assert out.count("| finished |") == 6 and f"| trial-{best.number:03d} (best) |" in out
    rerun = yaml.safe_load((folder / "best-recipe.yaml").read_text())
    assert rerun["trainer"]["lr"] == pytest.approx(best.params["trainer.lr"])
    assert (folder / "sweep.png").is_file() and (folder / "optuna-history.png").is_file()


def test_a_pruned_point_checkpoints_and_its_folder_says_so(mnist_path: str, tmp_path: Path) -> None:
    spec, _ = build_spec(RECIPE, [f"data.path={mnist_path}", *TINY, "trainer.epochs=30", f"output_dir={tmp_path}"],
                         search=["trainer.lr=log:1e-4..1e-2"])
    point = Point(name="trial-000", folder=tmp_path / "trial-000", varied=["trainer.lr=0.001"], trial=0)
    seen: list[int] = []

    def prune_after_first_epoch(record: dict) -> bool:
        seen.append(record["epoch"])
        return True

    outcome = run_point(point, point_overrides(spec, point.varied, point.folder), local_launch(spec, 1),
                        threading.Event(), prune_after_first_epoch)
    assert outcome.status == "pruned" and outcome.pruned_at_epoch == seen[0] == 1
    assert point_status(point.folder) == "pruned" and read_point(point.folder)["pruned_at_epoch"] == 1
    assert not (point.folder / "summary.json").exists() and any((point.folder / "checkpoints").iterdir())


def test_a_failed_point_is_reported_and_retried_only_when_asked(mnist_path: str, tmp_path: Path) -> None:
    folder = tmp_path / "fails"
    command = sweep_command(mnist_path, folder, "--sweep", "data.image_column=nosuch")  # fails once data loads
    point = folder / "data.image_column=nosuch"
    first = run(command)
    assert first.returncode == 1, first.stdout + first.stderr
    assert ("data.image_column=nosuch: failed: exit code 2: error: data.image_column 'nosuch' is not a column"
            in first.stdout)
    again = run(command)
    assert again.returncode == 1 and "failed before (exit code 2: error: " in again.stdout
    assert "--retry-failed runs it again" in again.stdout and "training" not in again.stdout
    assert "| failed (exit code 2: error: data.image_column 'nosuch'" in again.stdout
    assert (point / "train.log").read_text().count("sweep starts this point") == 1
    # Asked to retry, the engine hands the point out again (its training would fail the same way).
    spec = read_spec(folder)
    assert GridEngine(spec).next_point() is None
    retry = GridEngine(spec, retry_failed=True)
    assert retry.notes == ["data.image_column=nosuch: retrying"] and retry.next_point().folder == point


def test_launch_environment_shares_the_cores(tmp_path: Path) -> None:
    spec, _ = build_spec(RECIPE, [f"output_dir={tmp_path}"], grid=["model.fc1=32,64"])
    env = local_launch(spec, parallel=2).env or {}
    if "OMP_NUM_THREADS" not in os.environ:
        assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert isinstance(local_launch(spec, 1), Launch)
