"""EMA and early stopping in real training runs: the kept weights, the stop, exact resume after
SIGKILL, and the same stop with two processes.

The early-stopping rule is chosen so the stop is certain and early: val_acc must improve by more
than 0.5, so epoch 1 is the best and, with patience 1, epoch 2 stops the run (out of 3).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, launch_args
from tests.test_checkpoint import _latest_step, _start, _wait_for_checkpoint
from tests.test_run import rebuilt_test_metrics

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 57
RULES = ["model.fc1=32", "model.dropout=0", "trainer.epochs=3", "trainer.ema=0.9", "checkpoint.every_steps=5",
         "trainer.early_stopping.metric=val_acc", "trainer.early_stopping.mode=max",
         "trainer.early_stopping.min_delta=0.5", "trainer.early_stopping.patience=1", "tracking.wandb=false"]


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    timings = {"train_seconds", "samples_per_second"}
    return [{k: v for k, v in json.loads(line).items() if k not in timings} for line in lines]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, mnist_path: str) -> Path:
    run = tmp_path_factory.mktemp("one") / "run"
    cmd = [*launch_args(1), str(REPO / "launch" / "train.py"), "recipes/mlp.yaml", f"data.path={mnist_path}",
           f"output_dir={run}", *RULES]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    evaluations = [[r for r in _records(run) if r["kind"] != "step"] for run in (killed, one_process)]
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
