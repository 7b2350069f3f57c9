"""Resuming safely: Ctrl-C checkpoints, changed recipes are refused, damage falls back, a full disk is one line.

One real run is stopped with Ctrl-C (SIGINT to ``python launch/train.py``, as a terminal sends it),
then resumed in process the ways a user would: with a recipe that changes the trajectory (refused,
nothing written), after a crash tore the last metrics line and damaged the newest checkpoint's
rank file (both survived), and with safe changes (allowed, and said).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zoo.checkpoint import find_checkpoint
from zoo.preemption import EXIT_PREEMPTED
from zoo.run import main
from zoo.run_folder import LOCK_NAME

REPO = Path(__file__).resolve().parents[1]
MLP_RECIPE = str(REPO / "recipes" / "mlp.yaml")
SMALL = ["model.fc1=64", "trainer.epochs=1", "tracking.wandb=false", "checkpoint.every_steps=5"]


def latest_step(run: Path) -> int:
    latest = run / "checkpoints" / "latest"
    return int(latest.read_text().strip().removeprefix("step-")) if latest.is_file() else -1


def strict_records(path: Path) -> list[dict]:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def interrupted(mnist_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped by one Ctrl-C part way through its only epoch."""
    run = tmp_path_factory.mktemp("ctrl-c") / "run"
    proc = subprocess.Popen([sys.executable, str(REPO / "launch" / "train.py"), MLP_RECIPE, f"data.path={mnist_path}",
                             f"output_dir={run}", *SMALL], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while latest_step(run) < 10:
        assert proc.poll() is None and time.monotonic() < deadline, "training ended or stalled before step 10"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == EXIT_PREEMPTED, output[-3000:]
    assert "Ctrl-C: stopping at the next step with a checkpoint" in output
    assert "preempted: checkpointed at epoch 0" in output and "Traceback" not in output
    assert 10 <= latest_step(run) < 57
    return run


def run_files(run: Path) -> dict[Path, bytes]:
    """Every file a run wrote (the lock file names whoever held the folder last, so it is left out)."""
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_NAME}


def resume(mnist_path: str, run: Path, *overrides: str) -> int:
    return main([MLP_RECIPE, f"data.path={mnist_path}", f"output_dir={run}", *SMALL, *overrides])


@pytest.mark.parametrize(
    ("overrides", "listed"),
    [
        (["trainer.lr=0.1", "data.batch_size=64"], "data.batch_size 128 -> 64; trainer.lr 0.0003 -> 0.1"),
        (["model.fc1=32", "trainer.optimizer=sgd"], "model.fc1 64 -> 32; trainer.optimizer adam -> sgd"),
        (["seed=1", "trainer.schedule=cosine"], "seed 0 -> 1; trainer.schedule none -> cosine"),
    ],
)
def test_resume_with_a_trajectory_changing_recipe_is_refused(
    interrupted: Path, mnist_path: str, capsys: pytest.CaptureFixture[str], overrides: list[str], listed: str
) -> None:
    before = run_files(interrupted)
    assert resume(mnist_path, interrupted, *overrides) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"was trained with another recipe ({listed}); resuming would train neither recipe's run" in err
    assert run_files(interrupted) == before  # recipe.yaml included


def test_resume_survives_a_torn_metrics_line_and_a_damaged_rank_file(
    interrupted: Path, mnist_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = interrupted / "checkpoints"
    newest, previous = sorted(root.glob("step-*"), reverse=True)[:2]
    rank_file = newest / "rank-0.pt"
    rank_file.write_bytes(rank_file.read_bytes()[:50])  # a crash mid-write, or a bad disk
    with (interrupted / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "step", "global_st')  # a crash mid-line
    (root / ".tmp-step-00000099").mkdir()  # a save killed half-way

    assert resume(mnist_path, interrupted, "checkpoint.keep=3", "tracking.log_every=7") == 0
    out, err = capsys.readouterr()
    assert f"checkpoint {newest} is corrupt" in err and "trying the one before it" in err
    assert "metrics.jsonl line" in err and "is damaged; dropped" in err
    assert "Traceback" not in err
    assert f"resuming from {previous}" in out
    assert "resuming with a changed recipe: checkpoint.keep 2 -> 3; tracking.log_every 50 -> 7" in out
    assert not (root / ".tmp-step-00000099").exists()
    records = strict_records(interrupted / "metrics.jsonl")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1]
    assert json.loads((interrupted / "summary.json").read_text())["epochs"] == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs): room for one checkpoint of the small MLP, not two."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(
    small_disk: Path, mnist_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = small_disk / "run"
    assert resume(mnist_path, run) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [f"error: could not write checkpoint '{run / 'checkpoints' / 'step-00000010'}': No space left on "
                   "device; make room there and start the same command again to continue from the previous checkpoint"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert find_checkpoint(run, "auto") == run / "checkpoints" / "step-00000005"
    assert [r["epoch"] for r in strict_records(run / "metrics.jsonl") if r["kind"] == "epoch"] == [0]
