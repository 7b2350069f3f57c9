"""One real training run with every tracker on, validation every 20 steps and the profiler; each
tracker's record read back with its own tool (W&B's offline run file, TensorBoard's
EventAccumulator, MLflow's client on the run's local store, csv.DictReader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_tracking import read_jsonl, wandb_run_view
from tests.trackers.readers import csv_metrics, csv_pairs, mlflow_run, tensorboard_scalars, tensorboard_text
from zoo.trackers.mlflow_runs import local_store

pytestmark = pytest.mark.slow

STEPS = 57  # optimizer steps in the epoch
VAL_STEPS = [20, 40]  # val_every_steps=20; not 57, where the epoch's own evaluation runs


def test_every_tracker_records_the_same_run(launch_training, tmp_path: Path) -> None:
    run = tmp_path / "run"
    launch_training("recipes/mlp.yaml", f"output_dir={run}", "model.fc1=32", "trainer.epochs=1",
                    "trainer.val_every_steps=20", "tracking.log_every=10", "trainer.profile.steps=3",
                    "trainer.profile.wait=2", "tracking.backends=[wandb, tensorboard, mlflow, csv]")
    summary = json.loads((run / "summary.json").read_text())
    records = read_jsonl(run / "metrics.jsonl")
    val = [r for r in records if r["kind"] == "val"]
    assert [r["global_step"] for r in val] == VAL_STEPS
    assert [r["epoch"] for r in val] == pytest.approx([20 / STEPS, 40 / STEPS])
    val_loss = {r["global_step"]: r["val_loss"] for r in val}
    epoch_acc = {r["global_step"]: r["val_acc"] for r in records if r["kind"] == "epoch"}
    train_loss = {r["global_step"]: r["train_loss"] for r in records if r["kind"] == "step"}
    assert sorted(epoch_acc) == [0, STEPS] and sorted(train_loss) == [10, 20, 30, 40, 50]

    (wandb_dir,) = (run / "wandb").glob("offline-run-*")
    view = wandb_run_view(wandb_dir)
    assert {row["_step"]: row["val/loss"] for row in view["history"] if "val/loss" in row} == val_loss
    assert view["config"]["trainer"]["val_every_steps"] == 20
    assert view["summary"]["test_acc"] == summary["test_acc"]

    scalars = tensorboard_scalars(run / "tensorboard")
    assert scalars["val/loss"] == pytest.approx(val_loss)  # TensorBoard keeps float32
    assert scalars["epoch/val_acc"] == pytest.approx(epoch_acc)
    assert scalars["train/loss"] == pytest.approx(train_loss)
    assert scalars["summary/test_acc"] == {STEPS: pytest.approx(summary["test_acc"])}
    assert "val_every_steps: 20" in tensorboard_text(run / "tensorboard", "config")

    client, mlflow = mlflow_run(local_store(run)[0], "zoo-launch")
    history = client.get_metric_history(mlflow.info.run_id, "val/loss")
    assert {m.step: m.value for m in history} == val_loss
    assert mlflow.data.params["trainer.val_every_steps"] == "20" and mlflow.info.status == "FINISHED"
    assert mlflow.data.metrics["test_acc"] == summary["test_acc"]

    rows = csv_metrics(run / "csv")
    assert {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "val/loss"} == val_loss
    assert csv_pairs(run / "csv" / "config.csv")["trainer.val_every_steps"] == "20"
    assert float(csv_pairs(run / "csv" / "summary.csv")["test_acc"]) == summary["test_acc"]

    trace = json.loads((run / "profile" / "trace.json").read_text())
    profiled = {e["name"] for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#")}
    assert profiled == {"ProfilerStep#4", "ProfilerStep#5", "ProfilerStep#6"}  # after 2 waited, 2 warm-up
    assert "aten::" in (run / "profile" / "ops.txt").read_text()
