"""EMA and early stopping in real training runs: the kept weights, the stop, exact resume after
SIGKILL, and the same stop with two processes.

The early-stopping rule is chosen so the stop is certain and early: val_acc must improve by more
than 0.5, so epoch 1 is the best and, with patience 1, epoch 2 stops the run (out of 3).

The uninterrupted run (:func:`one_process`) also has every tracker, validation every 20 steps and
the profiler on, read back here too (one run of this size costs minutes on a shared 2-core
machine); the killed and two-process runs have none of them, so their equality also shows those
leave training unchanged.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.forked_runs import ForkedRuns
from tests.test_checkpoint import _latest_step, _start, _wait_for_checkpoint
from tests.test_run import rebuilt_test_metrics
from tests.test_tracking import read_jsonl, wandb_run_view
from tests.trackers.readers import csv_metrics, csv_pairs, mlflow_run, tensorboard_scalars, tensorboard_text
from zoo.trackers.mlflow_runs import local_store

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 57
TRAINING = ["model.fc1=32", "model.dropout=0", "trainer.epochs=3", "trainer.ema=0.9", "checkpoint.every_steps=5",
            "trainer.early_stopping.metric=val_acc", "trainer.early_stopping.mode=max",
            "trainer.early_stopping.min_delta=0.5", "trainer.early_stopping.patience=1"]
RULES = [*TRAINING, "tracking.wandb=false"]
EVERYTHING = [*TRAINING, "trainer.val_every_steps=20", "tracking.log_every=10", "trainer.profile.steps=3",
              "trainer.profile.wait=2", "tracking.backends=[wandb, tensorboard, mlflow, csv]"]


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    timings = {"train_seconds", "samples_per_second"}
    return [{k: v for k, v in json.loads(line).items() if k not in timings} for line in lines]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="session")
def one_process(tmp_path_factory: pytest.TempPathFactory, mnist_path: str, forked_runs: ForkedRuns) -> Path:
    run = tmp_path_factory.mktemp("one") / "run"
    log = run.parent / "train.log"
    assert forked_runs.run(["recipes/mlp.yaml", f"data.path={mnist_path}", f"output_dir={run}", *EVERYTHING],
                           log) == 0, log.read_text()[-5000:]  # python launch/train.py, forked
    return run


def test_early_stopping_keeps_the_best_ema_weights_as_the_model(one_process: Path, mnist_path: str) -> None:
    summary = json.loads((one_process / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["ema"] == 0.9
    assert summary["early_stopping"]["stopped_epoch"] == 2 and summary["early_stopping"]["best_epoch"] == 1
    assert summary["stop_reason"].startswith("early stopping: val_acc did not improve by more than 0.5")
    epochs = [r for r in _records(one_process) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert summary["early_stopping"]["best"] == epochs[1]["val_acc"]

    latest = one_process / "checkpoints" / (one_process / "checkpoints" / "latest").read_text().strip()
    assert _same_weights(one_process / "model.safetensors", latest / "best.safetensors")  # epoch 1's EMA
    assert not _same_weights(one_process / "model.safetensors", one_process / "model-raw.safetensors")
    assert _same_weights(one_process / "model-raw.safetensors", latest / "model.safetensors")  # as trained
    # The test split was measured on the kept weights, and the EMA is what validation saw.
    rebuilt = rebuilt_test_metrics(one_process, mnist_path)
    assert rebuilt["test_acc"] == pytest.approx(summary["test_acc"], abs=1e-6)


def test_ema_and_early_stopping_resume_bit_exactly_after_sigkill(one_process: Path, mnist_path: str,
                                                                 launch_training, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    proc = _start(mnist_path, killed, *RULES)
    # Inside epoch 2: the average, the best weights and the counters all matter after the kill.
    step = _wait_for_checkpoint(proc, killed, at_least=STEPS_PER_EPOCH + 10)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert step < 2 * STEPS_PER_EPOCH, "must be killed inside epoch 2"

    resumed = launch_training("recipes/mlp.yaml", f"output_dir={killed}", *RULES)
    assert "resuming from" in resumed.stdout
    for name in ("model.safetensors", "model-raw.safetensors"):
        assert _same_weights(one_process / name, killed / name), name
    # Evaluations match exactly; a step window cut by the kill is not comparable (nor is it in
    # test_checkpoint.py), so step records are left out.
    evaluations = [[r for r in _records(run) if r["kind"] == "epoch"] for run in (killed, one_process)]
    assert evaluations[0] == evaluations[1]
    a, b = (json.loads((run / "summary.json").read_text()) for run in (one_process, killed))
    assert a == b
    assert _latest_step(killed) == _latest_step(one_process)


def test_two_processes_stop_at_the_same_epoch(one_process: Path, launch_training, tmp_path: Path) -> None:
    two = tmp_path / "two"
    launch_training("recipes/mlp.yaml", f"output_dir={two}", *RULES, num_processes=2)
    one_summary, two_summary = (json.loads((run / "summary.json").read_text()) for run in (one_process, two))
    assert two_summary["world_size"] == 2
    assert two_summary["early_stopping"]["stopped_epoch"] == one_summary["early_stopping"]["stopped_epoch"] == 2
    assert two_summary["early_stopping"]["best_epoch"] == one_summary["early_stopping"]["best_epoch"]
    one_epochs, two_epochs = ([r for r in _records(run) if r["kind"] == "epoch"] for run in (one_process, two))
    for x, y in zip(one_epochs, two_epochs, strict=True):
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-4)


VAL_STEPS = [20, 40, 60, 80, 100]  # val_every_steps=20, but not 57 or 114, where the epochs' own evaluations run


def test_every_tracker_records_the_same_run(one_process: Path) -> None:
    """Each tracker read back with its own tool: W&B's offline run file, TensorBoard's EventAccumulator,
    MLflow's client on the run's local store, csv.DictReader; and the val_every_steps records and profile."""
    run = one_process
    summary = json.loads((run / "summary.json").read_text())
    records = read_jsonl(run / "metrics.jsonl")
    val = [r for r in records if r["kind"] == "val"]
    assert [r["global_step"] for r in val] == VAL_STEPS
    assert [r["epoch"] for r in val] == pytest.approx([step / STEPS_PER_EPOCH for step in VAL_STEPS])
    val_loss = {r["global_step"]: r["val_loss"] for r in val}
    epoch_acc = {r["global_step"]: r["val_acc"] for r in records if r["kind"] == "epoch"}
    train_loss = {r["global_step"]: r["train_loss"] for r in records if r["kind"] == "step"}
    assert sorted(epoch_acc) == [0, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert sorted(train_loss) == list(range(10, 2 * STEPS_PER_EPOCH, 10))

    (wandb_dir,) = (run / "wandb").glob("offline-run-*")
    view = wandb_run_view(wandb_dir)
    assert {row["_step"]: row["val/loss"] for row in view["history"] if "val/loss" in row} == val_loss
    assert view["config"]["trainer"]["val_every_steps"] == 20
    assert view["summary"]["test_acc"] == summary["test_acc"]

    scalars = tensorboard_scalars(run / "tensorboard")
    assert scalars["val/loss"] == pytest.approx(val_loss)  # TensorBoard keeps float32
    assert scalars["epoch/val_acc"] == pytest.approx(epoch_acc)
    assert scalars["train/loss"] == pytest.approx(train_loss)
    assert scalars["summary/test_acc"] == {2 * STEPS_PER_EPOCH: pytest.approx(summary["test_acc"])}
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


def test_sharded_training_refuses_ema_and_early_stopping_in_one_line() -> None:
    from torch import nn

    from zoo.errors import ZooError
    from zoo.model_selection import WeightSelection
    from zoo.recipe import TrainerSection

    with pytest.raises(ZooError, match=r"trainer.strategy=ddp only"):
        WeightSelection(TrainerSection(strategy="fsdp", ema=0.99), nn.Linear(2, 2))
    assert WeightSelection(TrainerSection(strategy="fsdp"), nn.Linear(2, 2)).ema is None
