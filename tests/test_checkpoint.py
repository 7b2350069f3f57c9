"""Checkpoints, exact resume, preemption and scale: real training processes, killed for real."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ACCELERATE, REPO, cpu_launch_prefix, launch_args
from tests.forked_runs import ForkedRuns

pytestmark = pytest.mark.slow

# Small and fast: a narrow MLP, 2 epochs of 57 steps, a checkpoint every 5 optimizer steps.
SMALL = ["tracking.wandb=false", "trainer.epochs=2", "model.fc1=128", "checkpoint.every_steps=5"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if "val_loss" in json.loads(line)]


def _latest_step(run: Path) -> int:
    latest = run / "checkpoints" / "latest"
    if not latest.is_file():
        return -1
    return int(latest.read_text().strip().removeprefix("step-"))


def _start(mnist_path: str, run: Path, *overrides: str, num_processes: int = 1) -> subprocess.Popen:
    cmd = [*launch_args(num_processes), str(REPO / "launch" / "train.py"), "recipes/mlp.yaml",
           f"data.path={mnist_path}", f"output_dir={run}", *SMALL, *overrides]
    # A new session, so the whole process tree can be signalled as one group.
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for_checkpoint(proc: subprocess.Popen, run: Path, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = _latest_step(run)
        if step >= at_least:
            return step
        if proc.poll() is not None:
            pytest.fail(f"training ended before step {at_least}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.02)
    pytest.fail(f"no checkpoint at step >= {at_least} within {timeout}s")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun puts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _ranks(proc: subprocess.Popen) -> list[int]:
    """PIDs of the training ranks (python .../launch/train.py), not the launchers above them."""
    ranks = []
    for pid in _descendants(proc.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if any(a.endswith("launch/train.py") for a in argv) and not any(a.endswith("/accelerate") for a in argv):
            ranks.append(pid)
    return ranks


def test_sigkill_mid_epoch_resumes_bit_identical(launch_training, mnist_path: str, tmp_path: Path) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    launch_training("recipes/mlp.yaml", f"output_dir={full}", *SMALL)

    proc = _start(mnist_path, killed)
    step = _wait_for_checkpoint(proc, killed, at_least=15)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: the worst case
    proc.wait()
    assert step < 57, "must be killed inside the first epoch for a mid-epoch resume"

    resumed = launch_training("recipes/mlp.yaml", f"output_dir={killed}", *SMALL)
    assert "resuming from" in resumed.stdout
    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), f"{key} differs after resume"
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in _metrics(full)]
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in _metrics(killed)] == strip


def test_two_process_preemption_checkpoints_and_resumes(launch_training, mnist_path: str, tmp_path: Path) -> None:
    full, preempted = tmp_path / "full", tmp_path / "preempted"
    launch_training("recipes/mlp.yaml", f"output_dir={full}", *SMALL, "model.dropout=0", num_processes=2)

    # Checkpoint only at epoch ends, so the checkpoint found afterwards is the preemption's own.
    proc = _start(mnist_path, preempted, "model.dropout=0", "checkpoint.every_steps=0", num_processes=2)
    deadline = time.monotonic() + 120
    while not (preempted / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.02)  # epoch 0 evaluated: training has started
    ranks = _ranks(proc)
    assert len(ranks) == 2, ranks
    # One rank only: the ranks must agree to stop together, the unsignalled one included.
    os.kill(max(ranks), signal.SIGUSR1)
    output = proc.communicate(timeout=120)[0]
    assert output.count("preempted: checkpointed at epoch 0") == 2, output[-3000:]
    assert not (preempted / "summary.json").exists()
    step = _latest_step(preempted)
    assert 0 < step < 57

    resumed = launch_training("recipes/mlp.yaml", f"output_dir={preempted}", *SMALL, "model.dropout=0",
                              "checkpoint.every_steps=0", num_processes=2)
    assert f"step-{step:08d}" in resumed.stdout
    for a, b in zip(_metrics(full), _metrics(preempted), strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-9)
    assert json.loads((preempted / "summary.json").read_text())["world_size"] == 2


def test_one_two_and_four_processes_agree(launch_training, tmp_path: Path) -> None:
    runs = {}
    for n in (1, 2, 4):
        run = tmp_path / f"n{n}"
        launch_training("recipes/mlp.yaml", f"output_dir={run}", "tracking.wandb=false", "trainer.epochs=1",
                        "model.fc1=128", "model.dropout=0", num_processes=n)
        runs[n] = _metrics(run)[-1]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["world_size"] == n
        assert summary["per_device_batch"] == 128 / n
    for n in (2, 4):
        assert runs[n]["val_loss"] == pytest.approx(runs[1]["val_loss"], abs=1e-4)
        assert runs[n]["train_loss"] == pytest.approx(runs[1]["train_loss"], abs=1e-4)


def test_gradient_accumulation_follows_device_cap(launch_training, tmp_path: Path) -> None:
    plain, capped = tmp_path / "plain", tmp_path / "capped"
    common = ["tracking.wandb=false", "trainer.epochs=1", "model.fc1=128", "model.dropout=0"]
    launch_training("recipes/mlp.yaml", f"output_dir={plain}", *common)
    out = launch_training("recipes/mlp.yaml", f"output_dir={capped}", *common, "trainer.max_device_batch=32",
                          num_processes=2)
    assert "2 x 2 micro-batches of ~32" in out.stdout
    assert json.loads((capped / "summary.json").read_text())["grad_accum"] == 2
    assert _metrics(capped)[-1]["val_loss"] == pytest.approx(_metrics(plain)[-1]["val_loss"], abs=1e-4)


def test_two_machines_on_localhost(mnist_path: str, tmp_path: Path) -> None:
    run = tmp_path / "multinode"
    port = str(29400 + os.getpid() % 500)
    procs = []
    for machine_rank in (1, 0):
        # Both "machines" are this one: two processes here, whatever each launcher thinks.
        cmd = [*cpu_launch_prefix(2), ACCELERATE, "launch", "--multi_gpu", "--num_machines", "2",
               "--num_processes", "2", "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
               "--main_process_port", port,
               "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO / "launch" / "train.py"), "recipes/mlp.yaml", f"data.path={mnist_path}",
               f"output_dir={run}", "tracking.wandb=false", "trainer.epochs=1", "model.fc1=128"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[-1][-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(_metrics(run)) == 2


def test_corrupt_latest_checkpoint_falls_back(launch_training, tmp_path: Path) -> None:
    from zoo.checkpoint import find_checkpoint

    run = tmp_path / "run"
    launch_training("recipes/mlp.yaml", f"output_dir={run}", "tracking.wandb=false", "trainer.epochs=2",
                    "model.fc1=64", "checkpoint.keep=3")
    root = run / "checkpoints"
    steps = sorted(root.glob("step-*"))
    assert [p.name for p in steps] == ["step-00000057", "step-00000114"]
    # A half-written checkpoint (the temporary folder of a killed save) is never picked.
    (root / ".tmp-step-00000200").mkdir()
    assert find_checkpoint(run, "auto") == steps[-1]
    # A truncated newest checkpoint is reported and the previous one used.
    weights = steps[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert find_checkpoint(run, "auto") == steps[0]


def test_resume_never_refuses_to_discard_checkpoints(tmp_path: Path) -> None:
    from zoo.checkpoint import find_checkpoint
    from zoo.errors import ZooError

    (tmp_path / "checkpoints" / "step-00000005").mkdir(parents=True)
    with pytest.raises(ZooError, match=r"trainer\.resume=auto"):
        find_checkpoint(tmp_path, "never")
    with pytest.raises(ZooError, match="not a usable checkpoint"):
        find_checkpoint(tmp_path, str(tmp_path / "checkpoints" / "step-00000005"))


# A checkpoint after every optimizer step of a tiny model (15 steps an epoch): the run spends most of
# its time writing them. One thread: two would wait on each other on a busy 2-core machine.
WRITES = ["model.fc1=16", "model.fc2=16", "data.batch_size=512", "trainer.epochs=2", "checkpoint.every_steps=1",
          "trainer.cpu_threads=1", "tracking.wandb=false"]


def _process_state(pid: int) -> str:
    """``R``, ``S``, ``T`` (stopped), ``Z`` (ended, not yet reaped), ... from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _being_written(root: Path, from_step: int, files: int) -> tuple[Path, list[str]] | None:
    """A checkpoint of a step >= ``from_step`` being written, once it holds at least ``files`` files:
    its temporary folder, or a step folder still without the ``state.json`` written last (as a
    checkpoint written in place, not renamed into place whole, would be)."""
    for folder in root.glob("*step-*") if root.is_dir() else []:
        try:
            found = sorted(os.listdir(folder))
        except FileNotFoundError:  # renamed or pruned meanwhile
            continue
        if (int(folder.name.rsplit("-", 1)[1]) >= from_step and len(found) >= files
                and (folder.name.startswith(".tmp-") or "state.json" not in found)):
            return folder, found
    return None


def _kill_mid_write(pid: int, root: Path, from_step: int, files: int, timeout: float = 120) -> list[str]:
    """``kill -9`` the run while it writes the checkpoint of a step >= ``from_step``, once at least
    ``files`` of its files are there; returns the files there at the kill.

    The run is stopped (SIGSTOP) first and the write looked at again, so the moment is pinned: the
    kill lands inside the write. When the write ended meanwhile, the run goes on to the next one.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = _being_written(root, from_step, files)
        if seen is not None:
            os.kill(pid, signal.SIGSTOP)
            while _process_state(pid) not in "tTZ":
                time.sleep(0.0005)
            still = _being_written(root, from_step, files)
            if still is not None and still[0] == seen[0]:
                os.kill(pid, signal.SIGKILL)
                return still[1]
            os.kill(pid, signal.SIGCONT)
        assert _process_state(pid) != "Z", f"the run ended before a checkpoint of step >= {from_step}"
        time.sleep(0.001)
    pytest.fail(f"no checkpoint of step >= {from_step} was written within {timeout}s")


def _assert_every_checkpoint_complete(run: Path) -> None:
    """Each ``step-*`` folder is a complete checkpoint, and ``latest``, when there, names one of them."""
    from zoo.checkpoint import find_checkpoint

    root = run / "checkpoints"
    complete = sorted(p.name for p in root.glob("step-*"))
    for name in complete:
        find_checkpoint(run, str(root / name))  # raises when anything in it is missing or damaged
    if (root / "latest").exists():
        assert (root / "latest").read_text().strip() in complete


def test_kill_9_during_checkpoint_writes_ten_times_resumes_bit_identical(
    forked_runs: ForkedRuns, tmp_path: Path, mnist_path: str
) -> None:
    """Ten ``kill -9`` at seeded random moments, each inside a checkpoint write, on one run folder
    (kill, resume, kill again, ...): no kill leaves ``latest`` or any ``step-*`` folder broken, and
    the run resumed to the end has the weights and metrics of a run never killed, bit for bit."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = [str(REPO / "recipes" / "mlp.yaml"), f"data.path={mnist_path}", *WRITES]
    rng = random.Random(12)
    assert forked_runs.run([*args, f"output_dir={full}"], tmp_path / "full.log") == 0
    steps = _metrics(full)[-1]["global_step"]
    # Ten moments: a step to kill at (or after), and how far its checkpoint's files have got.
    moments = [(step, rng.randrange(4)) for step in sorted(rng.sample(range(1, steps + 1), 10))]
    for step, files in moments:
        pid = forked_runs.start([*args, f"output_dir={killed}"], tmp_path / "killed.log")
        _kill_mid_write(pid, killed / "checkpoints", step, files)  # returns once the write is under way
        assert forked_runs.wait() == -signal.SIGKILL
        _assert_every_checkpoint_complete(killed)
    assert forked_runs.run([*args, f"output_dir={killed}"], tmp_path / "killed.log") == 0

    log = (tmp_path / "killed.log").read_text()
    assert log.count("resuming from") >= 9 and "Traceback" not in log, log[-3000:]
    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in _metrics(killed)] == \
        [{k: v for k, v in r.items() if k != "train_seconds"} for r in _metrics(full)]
    assert json.loads((killed / "summary.json").read_text()) == json.loads((full / "summary.json").read_text())


@pytest.mark.parametrize("damaged", ["model.safetensors", "ema.safetensors", "optimizer.pt", "scheduler.pt",
                                     "rank-0.pt", "state.json"])
def test_a_checkpoint_with_any_damaged_file_falls_back_to_the_one_before(
    damaged: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two real checkpoints of a small model; the newest one's ``damaged`` file cut in half, as a crash
    or a bad disk would leave it."""
    from accelerate import Accelerator

    from zoo.checkpoint import find_checkpoint, save_checkpoint
    from zoo.fit_state import FitState

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(8, 3)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    for step in (1, 2):
        model(torch.randn(4, 8)).sum().backward()
        optimizer.step()
        scheduler.step()
        ema = {name: value.detach().clone() for name, value in model.state_dict().items()}
        save_checkpoint(accelerator, tmp_path, model, optimizer, scheduler, FitState(global_step=step), {},
                        keep=2, tensors={"ema": ema})
    previous, newest = sorted((tmp_path / "checkpoints").glob("step-*"))
    assert find_checkpoint(tmp_path, "auto") == newest
    path = newest / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert find_checkpoint(tmp_path, "auto") == previous
    assert f"warning: checkpoint {newest} is corrupt" in capsys.readouterr().err
