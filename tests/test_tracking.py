"""Tracking: what W&B recorded (read back from its own offline files), metrics.jsonl, progress output."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from importlib import metadata, util
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from zoo.fit_state import FitState, RunningLoss
from zoo.progress import Progress
from zoo.recipe import TrackingSection
from zoo.tracking import Tracker, window_loss

# W&B's own tests; zoo itself runs without wandb (one warning line), as on a lent GPU box.
needs_wandb = pytest.mark.skipif(util.find_spec("wandb") is None, reason="wandb is not installed")

REPO = Path(__file__).resolve().parents[1]
WANDB_BLOCK, WANDB_HEADER = 32768, 7


def read_wandb_records(path: Path) -> list[Any]:
    """The protobuf ``Record``s of a ``.wandb`` file: W&B's variant of the leveldb log format.

    A 7-byte file header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each
    ``crc32 (uint32) | length (uint16) | type (uint8) | data``; a record too long for a block is
    split FIRST/MIDDLE/LAST; block tails too short for a chunk header are zero padding.
    (wandb >= 0.2x no longer ships a Python reader, so this one checks every checksum itself.)
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:WANDB_HEADER])
    assert ident == b":W&B", f"{path} is not a W&B transaction log"
    records, pos, pending = [], WANDB_HEADER, b""
    while pos + WANDB_HEADER <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < WANDB_HEADER:
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos:pos + WANDB_HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + WANDB_HEADER:pos + WANDB_HEADER + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f"bad checksum at byte {pos} of {path}"
        pos += WANDB_HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_run_view(run_dir: Path) -> dict[str, Any]:
    """run id, config, history rows and final summary from one offline-run-* folder."""
    (path,) = run_dir.glob("run-*.wandb")
    view: dict[str, Any] = {"run_id": None, "config": {}, "history": [], "summary": {}, "artifacts": []}
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            view["run_id"], view["group"] = record.run.run_id, record.run.run_group
            view["config"].update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            view["config"].update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            view["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            view["summary"].update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "artifact":
            view["artifacts"].append(record.artifact)
    return view


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@needs_wandb
def test_two_process_job_records_one_wandb_run(launch_training: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # 7200 training examples / 144 = 50 steps per epoch: two windows of 25 steps each.
    proc = launch_training("recipes/mlp.yaml", f"output_dir={out}", "trainer.epochs=2", "data.batch_size=144",
                           "model.fc1=64", "model.fc2=32", "tracking.log_every=25", "tracking.name=two-procs",
                           num_processes=2)
    summary = json.loads((out / "summary.json").read_text())

    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"one W&B run per job, found {runs}"
    view = wandb_run_view(runs[0])
    config = view["config"]
    assert {"seed", "model", "data", "trainer", "checkpoint", "tracking"} <= set(config)
    assert config["trainer"]["epochs"] == 2 and config["tracking"]["name"] == "two-procs"
    assert config["env"]["world_size"] == 2 and config["env"]["device"] == "cpu"
    assert set(config["env"]["versions"]) == {"torch", "accelerate", "datasets", "wandb", "zoo-launch"}
    assert config["env"]["versions"]["torch"] == metadata.version("torch")
    if (REPO / ".git").exists():
        assert len(config["env"]["git_commit"].removesuffix("-dirty")) == 40

    history_keys = set().union(*view["history"])
    assert {"train/loss", "train/lr", "train/samples_per_second", "epoch", "epoch/val_acc", "epoch/val_loss",
            "epoch/train_loss"} <= history_keys
    assert sorted(row["_step"] for row in view["history"] if "train/loss" in row) == [25, 50, 75, 100]
    assert view["summary"]["best_val_acc"] == summary["best_val_acc"]
    assert view["summary"]["test_acc"] == summary["test_acc"]
    (artifact,) = view["artifacts"]
    assert artifact.type == "model" and artifact.name == f"model-{view['run_id']}"
    assert {entry.path for entry in artifact.manifest.contents} == {"model.safetensors", "model.json"}

    records = read_jsonl(out / "metrics.jsonl")
    epochs = [r for r in records if r["kind"] == "epoch"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert all({"epoch", "train_loss", "val_loss", "val_acc", "lr", "train_seconds"} <= set(r) for r in epochs)
    assert [r["global_step"] for r in steps] == [25, 50, 75, 100]
    assert all(r["examples"] == 25 * 144 and r["samples_per_second"] > 0 for r in steps)
    # Windows are reduced over both processes: two equal windows average to the epoch's exact loss.
    for epoch, (first, second) in zip((1, 2), (steps[0:2], steps[2:4]), strict=True):
        assert math.isclose((first["train_loss"] + second["train_loss"]) / 2, epochs[epoch]["train_loss"],
                            rel_tol=1e-9)

    # Captured stdout is no terminal: plain lines, no bar redraws, one offline notice.
    assert "\r" not in proc.stdout
    assert "[zoo] step 25/100 (epoch 0.50/2) loss " in proc.stdout
    assert proc.stdout.count("wandb sync") == 1

    with Image.open(out / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 300


def _tracking(**values: Any) -> TrackingSection:
    return TrackingSection(**{"project": "zoo-tests", "log_every": 3, **values})


def _feed(tracker: Tracker, losses: list[list[float]], examples: int, state: FitState) -> None:
    """Drive the tracker as ``fit`` does: the running loss grows every step, an epoch record at each end."""
    for epoch_losses in losses:
        for loss in epoch_losses:
            state.running_loss.add(torch.tensor(loss * examples, dtype=torch.float64), examples)
            state.global_step += 1
            state.step += 1
            tracker.on_step(state, 0.1)
        state.running_loss.end_epoch()
        state.epoch, state.step = state.epoch + 1, 0
        mean = sum(epoch_losses) / len(epoch_losses)
        tracker.log_epoch({"epoch": state.epoch, "train_loss": mean, "val_loss": mean, "val_acc": 0.5,
                           "lr": 0.1, "train_seconds": 0.0})


@needs_wandb
def test_resumed_job_continues_the_same_wandb_run(tmp_path: Path) -> None:
    config = {"seed": 0, "tracking": {"project": "zoo-tests"}}
    first = Tracker(tmp_path, _tracking(artifacts="all"), config, enabled=True, stream=io.StringIO())
    run_id = first.wandb_run_id
    assert run_id
    state = FitState()
    first.start(state, steps_per_epoch=4, epochs=2)
    _feed(first, [[1.0, 2.0, 3.0, 4.0]], examples=8, state=state)  # then the job is preempted
    checkpoint = tmp_path / "checkpoints" / "step-00000004"
    checkpoint.mkdir(parents=True)
    (checkpoint / "meta.json").write_text("{}")
    first.log_checkpoint(checkpoint)  # tracking.artifacts=all: checkpoints become artifacts too
    first.finish({"preempted_at_step": state.global_step})

    second = Tracker(tmp_path, _tracking(), config, enabled=True, resume_run_id=run_id, stream=io.StringIO())
    assert second.wandb_run_id == run_id
    second.start(state, steps_per_epoch=4, epochs=2)
    _feed(second, [[5.0, 6.0, 7.0, 8.0]], examples=8, state=state)
    second.finish({"best_val_acc": 0.5, "test_acc": 0.25})
    import wandb

    wandb.teardown()  # what process exit does: wait until W&B's writer has flushed its files

    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    views = [wandb_run_view(run) for run in runs]
    assert [view["run_id"] for view in views] == [run_id, run_id]
    steps = [[row["_step"] for row in view["history"] if "train/loss" in row] for view in views]
    assert steps == [[3], [6]]  # the second attempt goes on from the first's step count
    assert views[1]["summary"]["test_acc"] == 0.25
    assert [(a.type, a.name) for a in views[0]["artifacts"]] == [("checkpoint", f"checkpoint-{run_id}")]
    assert views[1]["artifacts"] == []  # the default (model) uploads no checkpoint, and no model was given
    # metrics.jsonl: windows of 3 steps, the second spanning the resume; its mean is exact.
    windows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "step"]
    assert [(r["global_step"], r["train_loss"]) for r in windows] == [(3, 2.0), (6, 5.5)]


@needs_wandb
def test_tracking_group_names_the_wandb_run_group(tmp_path: Path) -> None:
    """A sweep's points share a W&B group (tracking.group, set by zoo sweep)."""
    tracker = Tracker(tmp_path, _tracking(group="lr-sweep"), {"seed": 0}, enabled=True, stream=io.StringIO())
    tracker.finish({"test_acc": 0.5})
    import wandb

    wandb.teardown()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert wandb_run_view(run)["group"] == "lr-sweep"


def test_loss_window_spans_epoch_ends() -> None:
    state = FitState()
    running = state.running_loss
    for loss in (1.0, 3.0):  # epoch 1's last two steps
        running.add(torch.tensor(loss * 2, dtype=torch.float64), 2)
    running.end_epoch()
    state.epoch = 1
    running.add(torch.tensor(10.0, dtype=torch.float64), 4)  # the first step of epoch 2: 4 examples with loss 2.5 each
    assert window_loss(running) == (pytest.approx((2 + 6 + 10) / 8), 8)
    running.add(torch.tensor(1.0, dtype=torch.float64), 1)
    assert window_loss(running) == (pytest.approx(1.0), 1)


def test_a_resumed_epochs_sums_are_no_window_of_the_new_attempt() -> None:
    running = RunningLoss(loss_sum=40.0, examples=10)  # as a checkpoint restores it, mid-epoch
    running.on_device(torch.device("cpu"))
    running.add(torch.tensor(6.0, dtype=torch.float64), 2)
    assert (float(running.loss_sum), running.examples) == (46.0, 12)  # the epoch's mean covers the whole epoch
    assert window_loss(running) == (pytest.approx(3.0), 2)  # the window, only what this attempt trained


@pytest.mark.parametrize(("env", "reason"), [
    ({"NETRC": "/nonexistent/netrc"}, "no W&B API key found"),
    ({"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}, "the W&B server is not reachable"),
])
@needs_wandb
def test_no_key_or_no_network_goes_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], env: dict[str, str],
                                           reason: str) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    tracker = Tracker(tmp_path, _tracking(), {}, enabled=True, stream=io.StringIO())
    tracker.finish({})
    out = capsys.readouterr().out
    assert f"[zoo] W&B offline ({reason}); upload later with: wandb sync {tmp_path}/wandb/offline-run-*" in out
    assert tracker.wandb_run is None and len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


@needs_wandb
def test_offline_wandb_adds_no_footer_to_our_line(tmp_path: Path) -> None:
    """Offline, our one line says where the run is and how to upload it; W&B's own footer (run history,
    summary and the same `wandb sync` hint, ~40 lines at the end of every run) is left out. A fresh
    process without WANDB_SILENT, which the suite sets, is what a user's run looks like."""
    code = (
        "import io, sys; from pathlib import Path; from zoo.recipe import TrackingSection; "
        "from zoo.tracking import Tracker; "
        "t = Tracker(Path(sys.argv[1]), TrackingSection(project='zoo-tests'), {}, enabled=True, stream=io.StringIO()); "
        "t.finish({'test_acc': 0.5})"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "WANDB_QUIET")}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env={**env, "WANDB_MODE": "offline"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert f"[zoo] W&B offline (WANDB_MODE is offline); upload later with: wandb sync {tmp_path}" in output
    assert output.count("wandb sync") == 1, output
    assert "Run summary" not in output


@needs_wandb
def test_wandb_failure_never_stops_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WANDB_MODE", "not-a-mode")  # wandb.init raises on this
    tracker = Tracker(tmp_path, _tracking(), {}, enabled=True, stream=io.StringIO())
    assert tracker.wandb_run_id is None
    assert "W&B could not start" in capsys.readouterr().err

    class Broken:
        id = "broken"

        def log(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("network went away")

    tracker.wandb_run = Broken()
    state = FitState()
    tracker.start(state, steps_per_epoch=3, epochs=1)
    _feed(tracker, [[1.0, 1.0, 1.0]], examples=2, state=state)
    assert tracker.curves.started == tmp_path.resolve()  # the last epoch's record started the drawing
    tracker.finish({})
    kinds = [r["kind"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert kinds == ["step", "epoch"]
    assert capsys.readouterr().err.count("W&B logging stopped") == 1
    assert (tmp_path / "curves.png").is_file()


def test_wandb_off_never_imports_it(tmp_path: Path) -> None:
    script = (
        "import sys, pathlib\n"
        "from zoo.recipe import TrackingSection\n"
        "from zoo.tracking import Tracker\n"
        f"t = Tracker(pathlib.Path({str(tmp_path)!r}), TrackingSection(wandb=False), {{}}, enabled=True)\n"
        "t.log_epoch({'epoch': 0, 'train_loss': None, 'val_loss': 1.0, 'val_acc': 0.1, 'lr': 0.1, "
        "'train_seconds': 0.0})\n"
        "t.finish({})\n"
        "print('wandb' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.splitlines()[-1] == "False"
    assert not (tmp_path / "wandb").exists() and (tmp_path / "metrics.jsonl").is_file()


def _window(step: int) -> dict[str, Any]:
    return {"global_step": step, "epoch": step / 10, "train_loss": 1.0 / step, "lr": 1e-3, "samples_per_second": 1e4}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(total_steps=20, epochs=2, stream=stream, interval=0.0)
    progress.begin(0)
    for step in range(1, 21):
        progress.step()
        if step % 5 == 0:
            progress.window(_window(step))
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 4
    assert lines[0].startswith("[zoo] step 5/20 (epoch 0.50/2) loss 0.2000 lr 0.001 10,000 samples/s eta ")

    quiet = io.StringIO()
    limited = Progress(total_steps=20, epochs=2, stream=quiet, interval=3600.0)
    limited.begin(0)
    for step in (5, 10, 15):
        limited.window(_window(step))
    assert len(quiet.getvalue().splitlines()) == 1  # a fast loop never floods a log file


def test_progress_bar_on_a_terminal() -> None:
    stream = _Terminal()
    progress = Progress(total_steps=20, epochs=2, stream=stream)
    progress.begin(0)
    for _ in range(10):
        progress.step()
    progress.epoch({"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_acc": 0.875, "lr": 1e-3,
                    "train_seconds": 1.0})
    progress.window(_window(10))
    progress.close()
    text = stream.getvalue()
    assert "\r" in text and "10/20" in text  # a tqdm bar, with its ETA
    assert "[zoo] epoch 1/2 train_loss 0.5000 val_loss 0.4000 val_acc 0.8750" in text
    assert "loss=0.1000" in text and "val_acc=0.8750" in text
