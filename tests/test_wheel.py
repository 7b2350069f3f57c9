"""Installed equals checked out: the wheel, installed in a fresh venv, used from an empty folder.

The wheel is built from a copy of the package sources (nothing of the checkout beside it) and
installed with ``pip install --no-deps`` into a new venv. So the venv does not download torch
again, it sees the project venv's site-packages through a ``.pth`` line, added *after* the install
(pip must not see, let alone replace, the project's editable zoo-launch). A plain path line does not
run that folder's own ``.pth`` files, so the editable ``zoo`` stays invisible: every ``zoo`` below is
the wheel's, as the paths it reports show. The project venv's example plugin is visible the same
way without its module, so zoo warns once that it cannot load it; nothing here uses it.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytest.importorskip("setuptools", reason="building the wheel without the package index needs setuptools")
pytestmark = pytest.mark.slow  # builds, installs and trains

SMALL = ["trainer.epochs=1", "model.fc1=16", "model.fc2=16", "tracking.wandb=false"]
RUN_FILES = {"recipe.yaml", "metrics.jsonl", "summary.json", "model.safetensors", "model.json", "curves.png"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    shutil.copytree(REPO / "zoo", source / "zoo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(root / "dist"), str(source)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((root / "dist").glob("zoo_launch-*.whl"))

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr[-3000:]
    site_packages = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    (site_packages / "project-dependencies.pth").write_text(site.getsitepackages()[0] + "\n")
    # What pip writes for accelerate's console script, aimed at this venv's python.
    accelerate = venv / "bin" / "accelerate"
    accelerate.write_text(f"#!{python}\nimport sys\nfrom accelerate.commands.accelerate_cli import main\n"
                          "sys.exit(main())\n")
    accelerate.chmod(0o755)
    empty = root / "empty"
    empty.mkdir()
    return {"python": python, "bin": venv / "bin", "site": site_packages, "cwd": empty, "root": root}


def run(installed: dict[str, Path], *cmd: str | Path, hf_home: str = "hf", **env: str) -> subprocess.Popen:
    """Start ``cmd`` in the empty folder, with nothing of the checkout on any path."""
    environ = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_DATASETS_CACHE")}
    environ.update(HF_HOME=str(installed["root"] / hf_home), PATH=f"{installed['bin']}:{environ['PATH']}", **env)
    return subprocess.Popen([str(c) for c in cmd], cwd=installed["cwd"], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{proc.args}\n{out[-2000:]}\n{err[-4000:]}"
    return out


def test_the_installed_wheel_lists_trains_and_renders_jobs_from_an_empty_folder(installed: dict[str, Path]) -> None:
    python, cwd, site_packages = installed["python"], installed["cwd"], installed["site"]
    sample = site_packages / "zoo" / "samples" / "mnist"  # the wheel's own copy of the sample
    # Everything runs side by side: each command is mostly start-up. Paths the package computes from
    # its own location (the sample, the shipped recipe) prove which zoo each command imported.
    started = {
        "python": run(installed, python, "-m", "zoo.train", "mlp", f"data.path={sample}", *SMALL,
                      "output_dir=by-python", hf_home="hf-python"),
        "accelerate": run(installed, "accelerate", "launch", "--num_processes", "1", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zoo.train", "mlp",
                          f"data.path={sample}", *SMALL, "output_dir=by-accelerate", hf_home="hf-accelerate"),
        "offline": run(installed, python, "-m", "zoo.train", "mlp", *SMALL, "output_dir=offline",
                       hf_home="hf-offline", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
        "recipes": run(installed, "zoo", "recipes"),
        "job": run(installed, "zoo", "slurm", "submit", "mlp", "--dry-run"),
    }
    new = finish(run(installed, "zoo", "recipe", "new", "tiny", "--model", "mlp"))
    assert new == "wrote recipes/tiny.yaml; run it with: accelerate launch -m zoo.train recipes/tiny.yaml\n"
    started["zoo train"] = run(installed, "zoo", "train", "recipes/tiny.yaml", *SMALL, "--print-recipe")
    out = {name: finish(proc) for name, proc in started.items()}

    listed = [line.split()[:2] for line in out["recipes"].splitlines()]
    assert listed == [["bn_mlp", "bn_mlp"], ["mlp", "mlp"], ["skip_mlp", "skip_mlp"]]
    job = out["job"]
    assert '"${launch[@]:0:1}" "${launch[@]:2}" -m zoo.train "${args[@]}" &' in job
    assert f"ZOO_ACCELERATE={installed['bin'] / 'accelerate'}" in job
    assert f"ZOO_ARGS=({site_packages}/zoo/recipes/mlp.yaml output_dir={cwd}/runs/mlp)" in job
    assert str(REPO) not in job and "launch/train.py" not in job.split("# >>> job settings")[1]
    assert yaml.safe_load(out["zoo train"])["model"]["fc1"] == 16

    for folder in ("by-python", "by-accelerate", "offline"):
        assert {p.name for p in (cwd / folder).iterdir()} >= RUN_FILES, folder
    fallback = [line for line in out["offline"].splitlines() if "cannot be reached" in line]
    assert fallback == [f"[zoo] data.path 'ylecun/mnist': the Hugging Face Hub cannot be reached; training on the "
                        f"MNIST sample bundled with zoo-launch instead ({sample})"]
    assert yaml.safe_load((cwd / "offline" / "recipe.yaml").read_text())["data"]["path"] == str(sample)
