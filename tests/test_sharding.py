"""trainer.strategy=fsdp: sharded training on 1, 2 and 4 CPU processes, sharded checkpoints, elastic resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.conftest import REPO, launch_args
from zoo.errors import ZooError
from zoo.recipe import TrainerSection
from zoo.sharding import block_names, check_strategy

# Tiny: a narrow MLP with its default dropout, 2 epochs; checkpoints at epoch ends and on signals.
TINY = ["tracking.wandb=false", "trainer.epochs=2", "model.fc1=32", "trainer.strategy=fsdp"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == "epoch"]


def test_blocks_are_the_declared_ones_or_found_by_size() -> None:
    model = nn.Sequential(nn.Linear(10, 10), nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2)))
    assert block_names(model, min_params=100) == ["0", "1.0"]  # 110 each; "1" keeps 22 of its own
    assert block_names(model, min_params=1000) == []
    model.fsdp_blocks = ("1",)
    assert block_names(model, min_params=100) == ["1"]
    model.fsdp_blocks = ("head",)
    with pytest.raises(ZooError, match="not submodules"):
        block_names(model, min_params=100)


def test_what_fsdp_does_not_run_with_is_refused() -> None:
    with pytest.raises(ZooError, match="bf16"):
        check_strategy(TrainerSection(strategy="fsdp", mixed_precision="fp16"), on_cpu=False)
    with pytest.raises(ZooError, match="CPUs already"):
        check_strategy(TrainerSection(strategy="fsdp", fsdp_cpu_offload=True), on_cpu=True)
    with pytest.raises(ZooError, match=r"needs trainer\.strategy=fsdp"):
        check_strategy(TrainerSection(fsdp_cpu_offload=True), on_cpu=False)
    check_strategy(TrainerSection(strategy="fsdp", mixed_precision="bf16"), on_cpu=True)


def _preempt_two_processes(mnist_path: str, run: Path) -> None:
    """A 2-process fsdp run stopped by SIGTERM (as Slurm stops a job) after it checkpointed."""
    cmd = [*launch_args(2), str(REPO / "launch" / "train.py"), "recipes/mlp.yaml", f"data.path={mnist_path}",
           f"output_dir={run}", *TINY]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.02)  # epoch 0 evaluated: training has started
    os.killpg(proc.pid, signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and "preempted: checkpointed" in output, output[-3000:]
    assert (run / "checkpoints" / "latest").is_file() and not (run / "summary.json").exists()


@pytest.mark.slow
def test_fsdp_agrees_across_process_counts_and_resumes_on_another(launch_training, mnist_path: str,
                                                                   tmp_path: Path) -> None:
    runs = {}
    for n in (1, 2, 4):
        run = tmp_path / f"n{n}"
        out = launch_training("recipes/mlp.yaml", f"output_dir={run}", *TINY, num_processes=n).stdout
        runs[n] = _metrics(run)
        assert json.loads((run / "summary.json").read_text())["world_size"] == n
        checkpoint = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
        assert (checkpoint / "sharded" / ".metadata").is_file() and not (checkpoint / "model.safetensors").exists()
        assert json.loads((run / "model.json").read_text())["name"] == "mlp", out[-2000:]
    plain = load_file(str(tmp_path / "n1" / "model.safetensors"))
    for n in (2, 4):
        for a, b in zip(runs[1], runs[n], strict=True):
            assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-4), n
        consolidated = load_file(str(tmp_path / f"n{n}" / "model.safetensors"))
        assert consolidated.keys() == plain.keys()
        for key, value in plain.items():  # whole tensors, not one rank's shard
            assert torch.allclose(consolidated[key], value, atol=1e-3), key

    preempted = tmp_path / "preempted"
    _preempt_two_processes(mnist_path, preempted)
    for world in (1, 4):
        run = tmp_path / f"resumed-on-{world}"
        shutil.copytree(preempted, run)
        out = launch_training("recipes/mlp.yaml", f"output_dir={run}", *TINY, num_processes=world).stdout
        assert f"resuming a 2-process checkpoint with {world} process(es)" in out
        for a, b in zip(runs[2], _metrics(run), strict=True):
            for key in ("train_loss", "val_loss", "val_acc"):
                if a[key] is not None:
                    assert b[key] == pytest.approx(a[key], abs=1e-4), (world, key)
        assert load_file(str(run / "model.safetensors")).keys() == plain.keys()


def test_a_checkpoint_is_resumed_with_the_strategy_that_wrote_it(tmp_path: Path) -> None:
    from zoo.checkpoint import load_checkpoint

    folder = tmp_path / "step-00000010"
    folder.mkdir()
    (folder / "state.json").write_text(json.dumps({"state": {}, "world_size": 2}))
    with pytest.raises(ZooError, match=r"resume it with trainer\.strategy=ddp"):
        load_checkpoint(folder, None, nn.Linear(1, 1), None, None, strategy="fsdp")
    (folder / "sharded").mkdir()
    with pytest.raises(ZooError, match=r"resume it with trainer\.strategy=fsdp"):
        load_checkpoint(folder, None, nn.Linear(1, 1), None, None, strategy="ddp")
