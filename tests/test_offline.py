"""``zoo.offline``: which data.path the bundled sample may stand in for when the Hub cannot be reached.

The fallback itself, end to end (one line, trains, the run records the sample), is in
tests/test_scripts.py and tests/test_wheel.py; resuming such a run once the Hub is back is below.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from tests.forked_runs import REPO, ForkedRuns
from tests.test_data_checks import write_set
from zoo.offline import DEFAULT_DATA_PATH, offline_substitute
from zoo.preemption import EXIT_PREEMPTED
from zoo.recipe import Recipe
from zoo.samples import mnist_path


def test_only_the_default_set_falls_back_to_the_bundled_sample() -> None:
    assert DEFAULT_DATA_PATH == Recipe().data.path == "ylecun/mnist"
    assert offline_substitute("ylecun/mnist", None) == str(mnist_path())
    assert offline_substitute("ylecun/mnist", "mnist") == str(mnist_path())  # the Hub set's own config name
    assert offline_substitute("ylecun/mnist", "other") is None
    assert offline_substitute("fashion_mnist", None) is None
    assert offline_substitute("/data/mnist", None) is None


def test_the_bundled_sample_has_the_hub_sets_layout_and_card() -> None:
    sample = datasets.load_dataset(str(mnist_path()), "mnist")
    assert {split: len(rows) for split, rows in sample.items()} == {"train": 8000, "test": 2000}
    assert sample["train"].features["label"].names == [str(d) for d in range(10)]
    card = (mnist_path() / "README.md").read_text()
    assert "license: mit" in card and "Creative Commons Attribution-Share Alike 3.0" in card


@pytest.mark.slow
def test_a_run_trained_on_the_sample_resumes_on_it_when_the_hub_is_back(
    forked_runs: ForkedRuns, tmp_path: Path
) -> None:
    """Started offline (the sample stands in for ``ylecun/mnist``), stopped, then resumed by the same
    command where ``ylecun/mnist`` can be loaded: it goes on on the sample, said in one line, and ends
    bit-identical to a run that never stopped. A folder ``ylecun/mnist`` in the working directory is
    what ``datasets`` loads for that name before asking the Hub: here it is the Hub come back, with a
    set unlike the sample (8x8 images), so training on it would not go unnoticed."""
    offline, online = tmp_path / "offline", tmp_path / "online"
    offline.mkdir()
    write_set(online / "ylecun" / "mnist", {"train": [i % 10 for i in range(64)], "test": list(range(10))})
    args = [str(REPO / "recipes" / "mlp.yaml"), "model.fc1=16", "model.fc2=16", "trainer.epochs=1",
            "trainer.cpu_threads=1", "tracking.wandb=false", "checkpoint.every_steps=5"]
    full, run = tmp_path / "full", tmp_path / "run"
    assert forked_runs.run([*args, f"output_dir={full}"], tmp_path / "full.log", cwd=offline) == 0
    pid = forked_runs.start([*args, f"output_dir={run}"], tmp_path / "stopped.log", cwd=offline)
    while not (run / "checkpoints" / "latest").exists():
        time.sleep(0.01)
    os.kill(pid, signal.SIGTERM)
    assert forked_runs.wait() == EXIT_PREEMPTED
    assert forked_runs.run([*args, f"output_dir={run}"], tmp_path / "resumed.log", cwd=online) == 0

    assert "cannot be reached; training on the MNIST sample" in (tmp_path / "stopped.log").read_text()
    resumed = (tmp_path / "resumed.log").read_text()
    assert (f"[zoo] data.path 'ylecun/mnist': continuing on the MNIST sample bundled with zoo-launch, which this "
            f"run was trained on ({mnist_path()}); a new output_dir trains on the Hub's set") in resumed
    assert "cannot be reached" not in resumed and "resuming from" in resumed
    a, b = load_file(str(full / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
