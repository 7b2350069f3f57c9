"""``scripts/train.sh`` and ``scripts/setup.sh`` as a new user meets them: no Hub, no Accelerate config.

The README's main command must train to a model on a machine that cannot reach the Hugging Face Hub
(the default set falls back to the sample the package ships, saying so in one line), and print no
"values were not passed" warning block: the set-up writes Accelerate's default config when the user
has none, and never touches one that exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

# The scripts set up and use the checkout's .venv (installing from the package index when it is
# missing or stale); a suite run by another python, e.g. on a lent GPU box without an index, skips them.
pytestmark = [pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                                 reason="runs scripts/*.sh, which use the checkout's .venv; this is not it"),
              pytest.mark.slow]

WARNING_BLOCK = "values were not passed to `accelerate launch`"
FALLBACK = ("[zoo] data.path 'ylecun/mnist': the Hugging Face Hub cannot be reached; "
            "training on the MNIST sample bundled with zoo-launch instead")


def user_env(home: Path) -> dict[str, str]:
    """A user with an empty Hugging Face home (no Accelerate config, no cached data) and no Hub."""
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    env.pop("ACCELERATE_CONFIG_FILE", None)
    return env


def test_readme_command_trains_offline_on_the_bundled_sample_without_a_warning_block(
    mnist_path: str, tmp_path: Path
) -> None:
    home, run = tmp_path / "hf-home", tmp_path / "run"
    proc = subprocess.run(
        ["bash", "scripts/train.sh", "recipes/mlp.yaml", "trainer.epochs=1", "model.fc1=32", "tracking.wandb=false",
         f"output_dir={run}"],
        cwd=REPO, env=user_env(home), capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert WARNING_BLOCK not in output
    assert (home / "accelerate" / "default_config.yaml").is_file()
    fallback = [line for line in proc.stdout.splitlines() if "cannot be reached" in line]
    assert fallback == [f"{FALLBACK} ({mnist_path})"]
    assert yaml.safe_load((run / "recipe.yaml").read_text())["data"]["path"] == mnist_path  # what it trained on
    assert {"summary.json", "model.safetensors", "model.json", "metrics.jsonl"} <= {p.name for p in run.iterdir()}


def test_a_mistake_through_train_sh_is_one_error_line(tmp_path: Path) -> None:
    """A typo in the README's main command: our line only, not accelerate's traceback after it."""
    proc = subprocess.run(["bash", "scripts/train.sh", "recipes/mlp.yaml", "trainer.epoch=3"],
                          cwd=REPO, env=user_env(tmp_path / "hf-home"), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: override 'trainer.epoch=3': unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?)"]


def test_setup_never_touches_an_existing_accelerate_config(tmp_path: Path) -> None:
    config = tmp_path / "hf-home" / "accelerate" / "default_config.yaml"
    config.parent.mkdir(parents=True)
    mine = "# my own\ncompute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 8\n"
    config.write_text(mine)
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, env=user_env(tmp_path / "hf-home"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert config.read_text() == mine
    assert "default config" not in proc.stdout
