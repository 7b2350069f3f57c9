"""Elastic resume: a run checkpointed with 2 processes continues the same trajectory on 1 and on 4."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.elastic import use_global_batch_dropout, world_size_dependent_layers

# Tiny: a narrow MLP with its default dropout (0.5), 1 epoch, a checkpoint every 10 steps.
TINY = ["tracking.wandb=false", "trainer.epochs=1", "model.fc1=32", "checkpoint.every_steps=10",
        "checkpoint.keep=20"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == "epoch"]


def test_dropout_mask_of_an_example_does_not_depend_on_the_world_size() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 4), nn.Dropout(0.3))
    streams = use_global_batch_dropout(model, seed=7)
    assert streams is not None and world_size_dependent_layers(model) == []
    x = torch.randn(10, 8)
    streams.at(epoch=1, step=3, rows=10, first_row=0)
    whole = model(x)
    for world in (2, 4):
        parts = []
        for rank in range(world):
            lo, hi = (10 * rank) // world, (10 * (rank + 1)) // world
            streams.at(epoch=1, step=3, rows=10, first_row=lo)
            parts.append(model(x[lo:hi]))
        assert torch.allclose(torch.cat(parts), whole, atol=1e-6)
    streams.at(epoch=1, step=4, rows=10, first_row=0)
    assert not torch.allclose(model(x), whole)  # the next micro-batch draws other masks


def test_layers_that_depend_on_the_world_size_are_named() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout2d(0.1))
    assert world_size_dependent_layers(model) == ["1 (BatchNorm1d)", "2 (Dropout2d)"]


def _rewind_to(source: Path, target: Path, step: int) -> None:
    """``target``: ``source`` as a job killed right after its step-``step`` checkpoint left it."""
    shutil.copytree(source, target)
    (target / "summary.json").unlink()
    root = target / "checkpoints"
    for folder in root.glob("step-*"):
        if int(folder.name.removeprefix("step-")) > step:
            shutil.rmtree(folder)
    (root / "latest").write_text(f"step-{step:08d}\n")


@pytest.mark.slow
def test_ddp_run_resumes_on_one_and_four_processes(launch_training, tmp_path: Path) -> None:
    full = tmp_path / "full"
    launch_training("recipes/mlp.yaml", f"output_dir={full}", *TINY, num_processes=2)
    expected = _metrics(full)
    for world in (1, 4):
        run = tmp_path / f"on{world}"
        _rewind_to(full, run, step=30)  # inside the first epoch: a mid-epoch running loss carries over
        out = launch_training("recipes/mlp.yaml", f"output_dir={run}", *TINY, num_processes=world).stdout
        assert f"resuming a 2-process checkpoint with {world} process(es)" in out
        assert "continues the same trajectory" in out
        resumed = _metrics(run)
        assert len(resumed) == len(expected) == 2
        for a, b in zip(expected[1:], resumed[1:], strict=True):
            for key in ("train_loss", "val_loss", "val_acc"):
                assert b[key] == pytest.approx(a[key], abs=1e-4), (world, key)
        assert json.loads((run / "summary.json").read_text())["world_size"] == world


def test_global_batch_dropout_keeps_each_unit_with_probability_1_minus_p_and_rescales() -> None:
    model = nn.Sequential(nn.Dropout(0.3))
    streams = use_global_batch_dropout(model, seed=1)
    assert streams is not None
    streams.at(epoch=1, step=1, rows=256, first_row=0)
    out = model(torch.ones(256, 1024))
    kept = out != 0
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))  # inverted dropout's scale
    assert abs(kept.float().mean().item() - 0.7) < 0.01  # 262,144 draws: the std is about 0.001
    model.eval()
    assert torch.equal(model(torch.ones(4, 8)), torch.ones(4, 8))
