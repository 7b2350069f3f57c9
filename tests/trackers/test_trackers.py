"""The tracking backends one by one, read back with their own tools: TensorBoard and CSV here,
MLflow in test_mlflow_runs.py, all four from a real training run in tests/test_model_selection.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.trackers.readers import csv_metrics, csv_pairs, tensorboard_scalars, tensorboard_steps, tensorboard_text
from zoo.trackers import Backends, flatten

pytest.importorskip("tensorboard")  # a machine without it (e.g. a lent GPU box) skips this file

CONFIG = {"seed": 0, "trainer": {"lr": 0.001, "epochs": 2}, "tracking": {"backends": ["tensorboard", "csv"]}}
TRACKING = SimpleNamespace(project="zoo-test", name=None, tags=[], mlflow_uri=None)


def _log(backends: Backends, steps: range, offset: float = 0.0) -> None:
    for step in steps:
        backends.log_metrics({"train/loss": step + offset, "train/lr": 0.001, "epoch": None}, step)


def test_tensorboard_and_csv_record_metrics_config_and_summary(tmp_path: Path) -> None:
    backends = Backends.start(["wandb", "tensorboard", "csv"], tmp_path, TRACKING, CONFIG)
    assert backends.names == ["tensorboard", "csv"]  # W&B is started by its own module
    _log(backends, range(1, 4))
    backends.log_summary({"test_acc": 0.9, "stop_reason": "patience"})
    backends.close()

    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss"] == {1: 1.0, 2: 2.0, 3: 3.0}
    assert scalars["summary/test_acc"] == {3: pytest.approx(0.9)}
    assert "lr: 0.001" in tensorboard_text(tmp_path / "tensorboard", "config")
    assert '"stop_reason": "patience"' in tensorboard_text(tmp_path / "tensorboard", "summary")

    rows = csv_metrics(tmp_path / "csv")
    assert [(r["step"], r["name"], float(r["value"])) for r in rows if r["name"] == "train/loss"] == [
        ("1", "train/loss", 1.0), ("2", "train/loss", 2.0), ("3", "train/loss", 3.0)]
    assert not any(r["name"] == "epoch" for r in rows)  # None is not a value
    assert csv_pairs(tmp_path / "csv" / "config.csv")["trainer.lr"] == "0.001"
    assert csv_pairs(tmp_path / "csv" / "summary.csv") == {"test_acc": "0.9", "stop_reason": "patience"}


def test_resume_drops_what_a_killed_attempt_logged_after_the_checkpoint(tmp_path: Path) -> None:
    first = Backends.start(["tensorboard", "csv"], tmp_path, TRACKING, CONFIG)
    _log(first, range(1, 6))
    first.close()  # as if killed after step 5, its last checkpoint at step 3
    second = Backends.start(["tensorboard", "csv"], tmp_path, TRACKING, CONFIG, resume_step=3)
    _log(second, range(4, 7), offset=100.0)
    second.close()

    assert tensorboard_steps(tmp_path / "tensorboard", "train/loss") == [1, 2, 3, 4, 5, 6]
    assert tensorboard_scalars(tmp_path / "tensorboard")["train/loss"] == {
        1: 1.0, 2: 2.0, 3: 3.0, 4: 104.0, 5: 105.0, 6: 106.0}
    loss = [(int(r["step"]), float(r["value"])) for r in csv_metrics(tmp_path / "csv") if r["name"] == "train/loss"]
    assert loss == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 104.0), (5, 105.0), (6, 106.0)]


def test_a_backend_that_cannot_start_warns_and_the_others_go_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "csv").write_text("a file where the csv backend wants its folder")
    backends = Backends.start(["csv", "tensorboard"], tmp_path, TRACKING, CONFIG)
    assert backends.names == ["tensorboard"]
    assert "tracking backend 'csv' could not start (FileExistsError" in capsys.readouterr().err

    _log(backends, range(1, 3))  # the one left records as usual
    backends.close()
    assert tensorboard_steps(tmp_path / "tensorboard", "train/loss") == [1, 2]

def test_flatten() -> None:
    assert flatten(CONFIG) == {"seed": 0, "trainer.lr": 0.001, "trainer.epochs": 2,
                               "tracking.backends": ["tensorboard", "csv"]}
