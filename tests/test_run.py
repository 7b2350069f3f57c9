"""End to end: ``accelerate launch launch/train.py RECIPE`` on the real MNIST slice.

The run folder is read back the way a user would read it: the resolved recipe, one metrics
record per epoch, the summary, and a model rebuilt from ``model.json`` + ``model.safetensors``
alone that reproduces the test metrics the run reported. Then the promises around it: 2 processes
train the same model as 1, a finished run is never overwritten, ``--print-recipe`` does no work,
and a missing data folder is one clear line.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from zoo.accelerator import build_accelerator, check_gpu_processes, launcher_wants_cpu
from zoo.errors import ZooError
from zoo.recipe import Recipe
from zoo.registry import create_model
from zoo.threads import node_cores

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "launch" / "train.py")
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "val_acc", "lr", "train_seconds"}
SUMMARY_KEYS = {"test_loss", "test_acc", "best_val_acc", "epochs", "world_size"}


def epoch_records(run: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` (step-window records, if any, left out)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("kind", "epoch") == "epoch"]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def rebuilt_test_metrics(run: Path, mnist_path: str) -> dict[str, float]:
    """Test loss and accuracy of the model rebuilt from the run folder alone (no recipe, no run code)."""
    from zoo.data import ImageClassificationData

    spec = json.loads((run / "model.json").read_text())
    model = create_model(spec["name"], spec["data_config"], **spec["hparams"])
    state = load_file(str(run / "model.safetensors"))
    assert set(state) == set(model.state_dict()), "saved tensors and the rebuilt model disagree"
    model.load_state_dict(state, strict=True)
    model.eval()

    data = ImageClassificationData(mnist_path)
    data.prepare_data()
    data.setup()
    test = data.splits["test"]
    shape = (1, -1, 1, 1)
    mean = torch.tensor(spec["normalization"]["mean"]).view(shape)
    std = torch.tensor(spec["normalization"]["std"]).view(shape)
    images = (torch.tensor(test.images, dtype=torch.float32) - mean) / std
    labels = torch.from_numpy(test.labels)
    with torch.no_grad():
        logits = model(images)
    return {"test_loss": F.cross_entropy(logits, labels).item(),
            "test_acc": (logits.argmax(1) == labels).float().mean().item()}


def test_mlp_recipe_end_to_end_and_never_overwritten(launch_training: Any, mnist_path: str, tmp_path: Path) -> None:
    run = tmp_path / "mlp"
    proc = launch_training("recipes/mlp.yaml", f"output_dir={run}", "tracking.wandb=false", accelerate=True,
                           timeout=600)  # the README's command: accelerate launch, one process
    assert "Traceback" not in proc.stderr

    # The resolved recipe: the file with the overrides applied.
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["model"] == {"name": "mlp", "fc1": 1024, "fc2": 128, "dropout": 0.5}
    assert saved["trainer"]["epochs"] == 15
    assert saved["data"]["path"] == mnist_path
    assert saved["output_dir"] == str(run)
    assert proc.stdout.count("# resolved recipe") == 1  # printed once

    # One record per epoch, epoch 0 being before training.
    records = epoch_records(run)
    assert [r["epoch"] for r in records] == list(range(16))
    for record in records:
        assert set(record) >= EPOCH_KEYS, record
        assert 0.0 <= record["val_acc"] <= 1.0 and math.isfinite(record["val_loss"])
        assert record["lr"] == pytest.approx(3e-4)
    assert records[0]["train_loss"] is None and records[0]["train_seconds"] == 0
    assert all(r["train_seconds"] > 0 and math.isfinite(r["train_loss"]) for r in records[1:])
    assert records[-1]["train_loss"] < records[1]["train_loss"]
    assert records[0]["val_acc"] < 0.5 < records[-1]["val_acc"]  # it learned, from chance

    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS, summary
    assert summary["epochs"] == 15 and summary["world_size"] == 1
    assert summary["best_val_acc"] == pytest.approx(max(r["val_acc"] for r in records[1:]))
    assert summary["test_acc"] >= 0.96, f"mlp reached only {summary['test_acc']:.4f} test accuracy in 15 epochs"

    # The saved model alone reproduces what the run measured on the test split.
    rebuilt = rebuilt_test_metrics(run, mnist_path)
    assert rebuilt["test_acc"] == pytest.approx(summary["test_acc"], abs=1e-6)
    assert rebuilt["test_loss"] == pytest.approx(summary["test_loss"], abs=1e-4)

    # A second run into the finished folder fails before touching anything.
    before = snapshot(run)
    again = subprocess.run(
        [sys.executable, TRAIN, "recipes/mlp.yaml", f"data.path={mnist_path}", f"output_dir={run}",
         "tracking.wandb=false", "trainer.epochs=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert again.returncode == 2, again.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: output_dir '{run}' holds a finished run"), again.stderr
    assert "Traceback" not in again.stderr
    assert snapshot(run) == before


def test_two_processes_train_the_same_model_as_one(launch_training: Any, tmp_path: Path) -> None:
    """``data.batch_size`` is the global batch, so 2 CPU processes see the same batches as 1."""
    common = ("model.dropout=0", "trainer.epochs=1", "tracking.wandb=false")
    one, two = tmp_path / "one", tmp_path / "two"
    alone = launch_training("recipes/mlp.yaml", f"output_dir={one}", *common)
    proc = launch_training("recipes/mlp.yaml", f"output_dir={two}", *common, num_processes=2)
    # accelerate launch sets OMP_NUM_THREADS itself; each process still takes its share of the cores.
    for launched, processes in ((alone, 1), (proc, 2)):
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, node_cores() // processes))
        assert f"; {threads} CPU thread(s) per process (" in launched.stdout, launched.stdout

    first, second = epoch_records(one), epoch_records(two)
    assert [r["epoch"] for r in second] == [0, 1]  # one writer: no record twice
    assert second[0]["val_loss"] == pytest.approx(first[0]["val_loss"], abs=1e-6)  # the same initial weights
    assert second[1]["val_loss"] == pytest.approx(first[1]["val_loss"], abs=1e-4)
    assert second[1]["train_loss"] == pytest.approx(first[1]["train_loss"], abs=1e-4)

    summaries = sorted(tmp_path.rglob("summary.json"))
    assert summaries == [one / "summary.json", two / "summary.json"]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 1
    assert proc.stdout.count("test_acc") == 1  # only the main process reports


def test_print_recipe_resolves_overrides_and_does_no_work(tmp_path: Path) -> None:
    run = tmp_path / "never-made"
    proc = subprocess.run(
        [sys.executable, TRAIN, "recipes/mlp.yaml", f"output_dir={run}", "trainer.lr=1e-3", "model.fc1=256",
         "--print-recipe"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["trainer"]["lr"] == 1e-3  # the override beats the file's 3.0e-4
    assert printed["trainer"]["epochs"] == 15  # the file beats the default
    assert printed["model"] == {"name": "mlp", "fc1": 256, "fc2": 128, "dropout": 0.5}
    assert printed["output_dir"] == str(run)
    assert not run.exists()


@pytest.mark.parametrize("launcher", ["python", "accelerate-q"])
def test_missing_data_folder_is_one_line_naming_data_path(tmp_path: Path, launcher: str) -> None:
    prefix = [sys.executable] if launcher == "python" else [
        ACCELERATE, "launch", "-q", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = subprocess.run(
        [*prefix, TRAIN, "recipes/mlp.yaml", "data.path=/nonexistent/mnist", f"output_dir={tmp_path / 'run'}",
         "tracking.wandb=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: data.path '/nonexistent/mnist'"), lines[0]
    assert "point data.path at a local copy (a folder datasets.load_dataset reads" in lines[0]


def test_no_arguments_asks_for_the_recipe_only(capsys: pytest.CaptureFixture[str]) -> None:
    """Overrides are optional: argparse must not call them required (it does for nargs='*' without a default)."""
    from zoo.run import main

    with pytest.raises(SystemExit):
        main([])
    assert capsys.readouterr().err.splitlines()[-1].endswith("the following arguments are required: recipe")


def test_unreachable_hub_is_one_line_naming_data_path(tmp_path: Path) -> None:
    # Offline mode with an empty cache is what an unreachable Hub looks like to `datasets`. Only the
    # shipped recipes' own set falls back to the bundled sample (tests/test_offline.py); a set the
    # user named must not be swapped for anything.
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty-hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    proc = subprocess.run(
        [sys.executable, TRAIN, "recipes/mlp.yaml", "data.path=fashion_mnist", f"output_dir={tmp_path / 'run'}",
         "tracking.wandb=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: data.path 'fashion_mnist': the Hugging Face Hub cannot be reached"), lines[0]
    assert "point data.path at the local folder" in lines[0]
    assert not (tmp_path / "run").exists()


# -- processes and devices ------------------------------------------------------------------------


@pytest.mark.parametrize(("processes", "gpus", "use_cpu", "advice"), [
    (2, 1, False, "accelerate launch --num_processes 1 without --multi_gpu ..."),
    (8, 4, False, "accelerate launch --num_processes 4 ..."),
])
def test_more_processes_than_gpus_stop_with_one_line_saying_what_to_run(
    processes: int, gpus: int, use_cpu: bool, advice: str
) -> None:
    with pytest.raises(ZooError) as caught:
        check_gpu_processes(processes, gpus, use_cpu)
    message = str(caught.value)
    assert "\n" not in message
    assert f"starts {processes} processes on this machine but it sees {gpus} GPU(s)" in message
    assert advice in message and f"run {processes} CPU processes with ACCELERATE_USE_CPU=1" in message


@pytest.mark.parametrize(("processes", "gpus", "use_cpu"), [(1, 1, False), (4, 8, False), (2, 0, False),
                                                             (2, 1, True)])
def test_processes_that_fit_the_gpus_or_run_on_cpus_go_ahead(processes: int, gpus: int, use_cpu: bool) -> None:
    check_gpu_processes(processes, gpus, use_cpu)  # no GPU at all, or the launcher asked for CPUs: gloo


@pytest.mark.parametrize(("value", "wanted"), [("True", True), ("1", True), ("false", False), ("", False)])
def test_the_launchers_cpu_request_is_read_as_accelerate_writes_it(
    monkeypatch: pytest.MonkeyPatch, value: str, wanted: bool
) -> None:
    monkeypatch.setenv("ACCELERATE_USE_CPU", value)  # `accelerate launch --cpu` writes "True"
    assert launcher_wants_cpu() is wanted


# These two run in this order: Accelerate's process-wide state from the first must not reach the
# second (the conftest resets it after every test), or the second raises "already initialized".
def test_an_accelerator_with_bf16_in_one_test() -> None:
    from accelerate import Accelerator

    assert Accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"


def test_leaves_the_next_tests_accelerator_its_own_settings() -> None:
    from accelerate import Accelerator

    assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cpu_requested_by_the_launcher_wins_over_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert build_accelerator(Recipe()).device.type == "cpu"
    with pytest.raises(ZooError, match="fp16 needs a GPU"):
        build_accelerator(Recipe.model_validate({"trainer": {"mixed_precision": "fp16"}}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_launch_with_more_processes_than_gpus_stops_before_any_work(mnist_path: str, tmp_path: Path) -> None:
    processes = torch.cuda.device_count() + 1
    proc = subprocess.run(
        [ACCELERATE, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
         "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN, "recipes/mlp.yaml",
         f"data.path={mnist_path}", f"output_dir={tmp_path / 'run'}", "tracking.wandb=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: this launch starts {processes} processes on this machine but it sees "
                      f"{processes - 1} GPU(s); " + errors[0].split("; ", 1)[1]], proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()

