"""A run that diverges stops, says so in one line, keeps its last good checkpoint and exits non-zero.

Real training, in process, on the real MNIST slice: SGD with a learning rate far too high. Each
way of noticing is exercised: the step-window loss (NaN, or blown up), the weights a checkpoint
would copy, and the epoch's losses when no window boundary comes first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from zoo.divergence import DIVERGED_MARKER, EXIT_DIVERGED
from zoo.metrics_file import strict_json
from zoo.run import main

REPO = Path(__file__).resolve().parents[1]
MLP_RECIPE = str(REPO / "recipes" / "mlp.yaml")


def refuse_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def strict_lines(path: Path) -> list[dict]:
    return [json.loads(line, parse_constant=refuse_constant) for line in path.read_text().splitlines()]


def train(mnist_path: str, run: Path, *overrides: str) -> int:
    return main([MLP_RECIPE, f"data.path={mnist_path}", f"output_dir={run}", "model.fc1=64", "tracking.wandb=false",
                 "trainer.optimizer=sgd", *overrides])


@pytest.mark.parametrize(
    ("overrides", "step", "what", "kept"),
    [
        # The case: NaN from about step 50, the first window boundary (log_every=50).
        (["trainer.lr=1e6"], 50, "the train loss of the last 50 steps is nan", None),
        # A loss that blows up without going NaN (Adam at lr=1e9 reached 4e28); a checkpoint came before.
        # (where it blows up depends on the exact trajectory, so the step is read from the line)
        (["trainer.lr=3", "tracking.log_every=5", "checkpoint.every_steps=5"], None,
         "the train loss of the last 5 steps ", None),
        # A checkpoint due before the window closes: its weights are checked, and never written.
        (["trainer.lr=1e6", "checkpoint.every_steps=5"], 5, "the weights are not finite", None),
        # No window boundary in the epoch: the epoch's train loss.
        (["trainer.lr=1e6", "tracking.log_every=1000"], 57, "epoch 1's train loss is nan", None),
    ],
    ids=["nan-window", "blowup-window", "nan-weights-at-checkpoint", "nan-epoch"],
)
def test_divergence_stops_in_one_line_and_keeps_the_last_good_checkpoint(
    mnist_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    overrides: list[str], step: int | None, what: str, kept: int | None,
) -> None:
    run = tmp_path / "run"
    assert train(mnist_path, run, *overrides) == EXIT_DIVERGED
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in stderr
    assert len(err) == 1, err
    if step is None:  # a blow-up: any step, the checkpoint before it kept
        step = int(err[0].split("optimizer step ")[1].split(":")[0])
        assert "is over 1000x the loss before training" in err[0]
        kept = max((int(p.name[5:]) for p in (run / "checkpoints").glob("step-*")), default=None)
        assert kept is None or kept < step
    assert err[0].startswith(f"error: training diverged at optimizer step {step}: {what}"), err
    assert "lower trainer.lr" in err[0] and "trainer.grad_clip" in err[0]

    marker = json.loads((run / DIVERGED_MARKER).read_text())
    assert marker["global_step"] == step
    assert not (run / "summary.json").exists()  # never a summary for a diverged model
    strict_lines(run / "metrics.jsonl")  # NaN written as null, so every line stays JSON
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    if kept is None:
        assert checkpoints == [] and marker["last_good_checkpoint"] is None
    else:
        assert checkpoints[-1].name == f"step-{kept:08d}"
        assert marker["last_good_checkpoint"] == str(checkpoints[-1])
        assert (run / "checkpoints" / "latest").read_text().strip() == checkpoints[-1].name
        weights = load_file(str(checkpoints[-1] / "model.safetensors"))
        assert all(t.isfinite().all() for t in weights.values())
        assert f"the last good checkpoint ({checkpoints[-1]}) is kept" in err[0]

    # The folder is not resumed into the same divergence, nor overwritten.
    assert train(mnist_path, run, *overrides) == 2
    assert "holds a run that diverged (diverged.json)" in capsys.readouterr().err


def test_strict_json_writes_non_finite_numbers_as_null() -> None:
    record = {"test_loss": math.nan, "inner": [math.inf, 1.5], "name": "x"}
    assert json.dumps(strict_json(record), allow_nan=False) == '{"test_loss": null, "inner": [null, 1.5], "name": "x"}'
