"""timm/resnet18 trained for real by the launcher, then fine-tuned from its run folder.

The suite trains the shipped recipe on a 1,500-digit cut of the bundled sample for one epoch (the
full recipe, 3 epochs on all 10,000 digits, takes minutes; README gives its measured accuracy).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import REPO, launch_args
from zoo.samples import mnist_path

pytestmark = pytest.mark.slow
RECIPE = REPO / "examples" / "zoo-timm" / "recipes" / "resnet18.yaml"


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 training and 300 test digits of the bundled sample, as a local parquet data set."""
    import datasets

    folder = tmp_path_factory.mktemp("few-digits")
    full = datasets.load_dataset(str(mnist_path()))
    full["train"].select(range(1200)).to_parquet(str(folder / "train.parquet"))
    full["test"].select(range(300)).to_parquet(str(folder / "test.parquet"))
    return folder


def _train(*overrides: str) -> subprocess.CompletedProcess:
    cmd = [*launch_args(1), "-m", "zoo.train", str(RECIPE), "tracking.wandb=false", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_resnet18_trains_then_fine_tunes_from_its_run_folder_with_the_backbone_frozen(
    few_digits: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _train(f"data.path={few_digits}", f"output_dir={first}", "trainer.epochs=1", "data.batch_size=32")
    summary = json.loads((first / "summary.json").read_text())
    assert summary["test_acc"] >= 0.3, summary  # one epoch on 1,200 digits (chance: 0.1); 49-75% measured

    tuned = _train(f"data.path={few_digits}", f"output_dir={second}", "trainer.epochs=1", "data.batch_size=32",
                   f"model.pretrained={first}", "model.freeze=backbone", "trainer.lr=1e-3")
    weights = load_file(str(first / "model.safetensors"))
    assert (f"pretrained weights from {first / 'model.safetensors'}: loaded {len(weights)} of the model's "
            f"{len(weights)} tensors") in tuned.stdout
    assert "parameter tensors frozen (11,170,240 parameters); training 2: fc.weight, fc.bias" in tuned.stdout
    record = json.loads((second / "pretrained.json").read_text())
    assert sorted(record["loaded"]) == sorted(weights) and record["reinitialised"] == {}
    after = load_file(str(second / "model.safetensors"))
    changed = sorted(name for name in weights if not (weights[name] == after[name]).all())
    assert changed == ["fc.bias", "fc.weight"]  # the backbone, BatchNorm statistics included, never moved
    assert json.loads((second / "summary.json").read_text())["test_acc"] >= summary["test_acc"] - 0.1
