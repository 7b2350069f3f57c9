"""Signals: the stop flag they set, and Ctrl-C sent to real training processes as a terminal sends it.

A terminal's Ctrl-C goes to every process of the foreground process group, so the runs here start in
a session of their own and get the signal through ``os.killpg``. Each is resumed by the same command
run in a forked process (tests/forked_runs.py, which runs what ``python -m zoo.train`` runs without
its start-up) and compared with a run never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from tests.conftest import launch_args
from tests.forked_runs import ForkedRuns
from zoo.checkpoint import find_checkpoint
from zoo.preemption import EXIT_INTERRUPTED, EXIT_PREEMPTED, INTERRUPTED, StopFlag

REPO = Path(__file__).resolve().parents[1]
MLP_RECIPE = str(REPO / "recipes" / "mlp.yaml")
# 2 epochs of 57 steps of a tiny model, a checkpoint every 5: about a second of training.
TINY = ["model.fc1=16", "model.fc2=16", "trainer.epochs=2", "trainer.cpu_threads=1", "tracking.wandb=false",
        "checkpoint.every_steps=5"]
NOTICE = "[zoo] Ctrl-C: stopping at the next step with a checkpoint; Ctrl-C again stops at once"


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_only_sets_the_flag_and_handlers_are_restored(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    stop = StopFlag(Accelerator(cpu=True))
    with stop:
        assert not stop.agreed(global_step=1)
        os.kill(os.getpid(), sig)  # would end the process without the handler
        assert stop.requested
        assert stop.agreed(global_step=1)
    assert signal.getsignal(sig) is before


def test_ctrl_c_sets_the_flag_and_says_what_a_second_one_does(capfd: pytest.CaptureFixture[str]) -> None:
    """The second Ctrl-C ends the process, so it is tested on a real run below."""
    before = signal.getsignal(signal.SIGINT)
    stop = StopFlag(Accelerator(cpu=True))
    with stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first: a checkpoint at the next step boundary
        assert stop.requested and stop.agreed(global_step=1)
        assert capfd.readouterr().err == ("[zoo] Ctrl-C: stopping at the next step with a checkpoint; "
                                          "Ctrl-C again stops at once\n")
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(("checkpointed", "code", "line"), [
    (False, EXIT_INTERRUPTED, f"error: {INTERRUPTED}"),
    (True, EXIT_PREEMPTED, "[zoo] Ctrl-C again: stopping now, the checkpoint is written; exiting with code 3, "
                           "start the same command again to resume"),
])
def test_a_second_ctrl_c_ends_the_process_at_once_with_one_line(checkpointed: bool, code: int, line: str) -> None:
    """Before the first Ctrl-C's checkpoint is written (no new checkpoint), and after it (only the wrap-up
    is cut short). The process ends, so it is one of its own; real runs get it below."""
    script = (
        "import os, signal, time\n"
        "from zoo.preemption import StopFlag\n"
        "with StopFlag(None) as stop:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        f"    stop.checkpointed = {checkpointed}\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr.splitlines()) == (code, "", [NOTICE, line])


def test_a_ctrl_c_after_the_stop_flag_on_the_way_out_keeps_the_preempted_exit() -> None:
    """The stopped run's checkpoint is written and Preempted is on its way up to main: a Ctrl-C after
    the flag's block ends must not turn that into 130 "without a new checkpoint"."""
    script = (
        "import os, signal, time\n"
        "from zoo.preemption import Preempted, StopFlag\n"
        "try:\n"
        "    with StopFlag(None) as stop:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        stop.checkpointed = True\n"
        "        raise Preempted\n"
        "except Preempted:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr.splitlines()) == (EXIT_PREEMPTED, "", [
        NOTICE, "[zoo] Ctrl-C again: stopping now, the checkpoint is written; exiting with code 3, "
                "start the same command again to resume"])


def test_interrupted_run_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C that raises (the second one, or one before training started) ends in one line, code 130."""
    import zoo.run

    def interrupted(recipe: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.run, "build_data", interrupted)
    code = zoo.run.main([str(REPO / "recipes" / "mlp.yaml"), f"output_dir={tmp_path / 'run'}", "tracking.wandb=false"])
    assert code == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip()
    assert err == f"error: {INTERRUPTED}"
    assert INTERRUPTED == ("interrupted by Ctrl-C without a new checkpoint; start the same command again to "
                           "continue from the last one")
    assert not (tmp_path / "run").exists()


# --- Ctrl-C to real runs ------------------------------------------------------------------------


def args(mnist_path: str, run: Path, *settings: str) -> list[str]:
    return [MLP_RECIPE, f"data.path={mnist_path}", f"output_dir={run}", *settings]


@pytest.fixture(scope="module")
def reference(forked_runs: ForkedRuns, mnist_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run, never interrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert forked_runs.run(args(mnist_path, run, *TINY), run.parent / "log") == 0
    return run


def start(command: list[str], log: Path) -> subprocess.Popen:
    """A session of its own: the test signals its whole process group, as a terminal's Ctrl-C does."""
    return subprocess.Popen(command, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.001)


def latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def assert_same_run(run: Path, reference: Path) -> None:
    """Bit-identical weights, and the same epoch records (all but their timings)."""
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)

    def epochs(folder: Path) -> list[dict]:
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records if r["kind"] == "epoch"]

    assert epochs(run) == epochs(reference)


@pytest.mark.slow
def test_ctrl_c_checkpoints_at_the_next_step_and_the_same_command_resumes_bit_identical(
    forked_runs: ForkedRuns, reference: Path, mnist_path: str, tmp_path: Path
) -> None:
    run, log = tmp_path / "run", tmp_path / "log"
    proc = start([sys.executable, "-m", "zoo.train", *args(mnist_path, run, *TINY)], log)
    wait_for(proc, (run / "checkpoints" / "latest").exists, "its first checkpoint")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == EXIT_PREEMPTED
    out = log.read_text()
    assert "Traceback" not in out and "warning" not in out and "error" not in out, out[-2000:]
    # The notice at once; at the next step boundary, a checkpoint of that very step and one line.
    stopped = latest(run)
    state = json.loads((stopped / "state.json").read_text())["state"]
    assert out.count(NOTICE) == 1 and out.splitlines()[-1] == (
        f"[zoo] preempted: checkpointed at epoch {state['epoch']} step {state['step']}; exiting with code 3, "
        "start the same command again to resume"), out[-2000:]
    assert not (run / "summary.json").exists()

    assert forked_runs.run(args(mnist_path, run, *TINY), tmp_path / "resumed.log") == 0
    assert f"resuming from {stopped} " in (tmp_path / "resumed.log").read_text()
    assert_same_run(run, reference)


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_in_one_line_and_loses_nothing(
    forked_runs: ForkedRuns, mnist_path: str, tmp_path: Path
) -> None:
    """The second Ctrl-C comes while the first one's checkpoint is still to be written: the default
    model's steps and checkpoints take tens of milliseconds, and the first Ctrl-C comes a moment after
    the step-20 checkpoint (not at its step boundary, which would stop on that checkpoint at once).
    Should it come after that checkpoint all the same, it cuts the stop's wrap-up short, saying so."""
    run, log = tmp_path / "run", tmp_path / "log"
    settings = ["trainer.epochs=1", "trainer.cpu_threads=1", "tracking.wandb=false", "checkpoint.every_steps=20"]
    proc = start([sys.executable, "-m", "zoo.train", *args(mnist_path, run, *settings)], log)
    wait_for(proc, (run / "checkpoints" / "latest").exists, "the step-20 checkpoint")
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(proc, lambda: NOTICE in log.read_text(), "the first Ctrl-C's notice")
    os.killpg(proc.pid, signal.SIGINT)
    code, out = proc.wait(timeout=60), log.read_text()
    assert "Traceback" not in out, out[-2000:]
    if code == EXIT_INTERRUPTED:  # as meant: before the first one's checkpoint
        assert out.splitlines()[-2:] == [NOTICE, f"error: {INTERRUPTED}"], out[-2000:]
        assert "preempted" not in out
    else:  # the test was slower than that checkpoint (a busy machine): the stop's wrap-up is cut short
        assert code == EXIT_PREEMPTED and out.splitlines()[-1] == (
            "[zoo] Ctrl-C again: stopping now, the checkpoint is written; exiting with code 3, start the same "
            "command again to resume"), out[-2000:]
    # Whatever the second Ctrl-C cut short, `latest` names a good checkpoint, and the run goes on from it.
    last = latest(run)
    assert find_checkpoint(run, "auto") == last

    assert forked_runs.run(args(mnist_path, run, *settings), tmp_path / "resumed.log") == 0
    assert f"resuming from {last} " in (tmp_path / "resumed.log").read_text()
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1


def _child_running(parent: int, word: str) -> int:
    """The pid of ``parent``'s child process whose command line holds ``word``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent and \
                    word in (stat.parent / "cmdline").read_text().split("\0"):
                return int(stat.parent.name)
        except (OSError, ValueError):
            continue
    raise AssertionError(f"no child of {parent} runs {word}")


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_ctrl_c_under_accelerate_launch_checkpoints_but_the_launcher_prints_its_own_traceback(
    forked_runs: ForkedRuns, reference: Path, mnist_path: str, tmp_path: Path
) -> None:
    """``accelerate launch`` (one process) starts the run as its child and waits for it; a terminal's
    Ctrl-C reaches both. The run checkpoints and ends as it does alone, and resumes bit-identical.
    The launcher does not handle the signal: ``Popen.wait`` gives the child 0.25 s, then accelerate
    dies of its own KeyboardInterrupt, traceback included, while the run finishes its checkpoint as
    an orphan (README, "Checkpoints, resume and preemption"); when the checkpoint ends the run within
    those 0.25 s (a quiet machine), accelerate raises CalledProcessError on its exit code 3 instead.
    Either traceback is accelerate's alone."""
    run, log = tmp_path / "run", tmp_path / "log"
    proc = start([*launch_args(1, accelerate=True), "-m", "zoo.train", *args(mnist_path, run, *TINY)], log)
    wait_for(proc, (run / "checkpoints" / "latest").exists, "its first checkpoint")
    child = _child_running(proc.pid, "zoo.train")
    os.killpg(proc.pid, signal.SIGINT)
    # accelerate's launcher, killed by its KeyboardInterrupt; or, when the run's checkpoint ends it within
    # the 0.25 s Popen.wait grants, reporting the child's exit code 3 as its own failure (1).
    launcher_code = proc.wait(timeout=60)
    assert launcher_code in (-signal.SIGINT, 1)
    deadline = time.monotonic() + 120
    while not _ended(child):
        assert time.monotonic() < deadline, "the run did not end after Ctrl-C"
        time.sleep(0.01)
    out = log.read_text()
    stopped = latest(run)
    state = json.loads((stopped / "state.json").read_text())["state"]
    assert out.count(NOTICE) == 1 and (
        f"[zoo] preempted: checkpointed at epoch {state['epoch']} step {state['step']}; exiting with code 3"
    ) in out, out[-3000:]
    traceback = out[out.index("Traceback (most recent call last):"):]
    files = [line.split('"')[1] for line in traceback.splitlines() if line.strip().startswith("File ")]
    assert files and all("/zoo/" not in file for file in files), traceback
    assert any(file.endswith("accelerate/commands/launch.py") for file in files), traceback
    assert out.count("Traceback") == 1
    assert ("KeyboardInterrupt" if launcher_code == -signal.SIGINT else "exit status 3") in traceback

    assert forked_runs.run(args(mnist_path, run, *TINY), tmp_path / "resumed.log") == 0
    assert f"resuming from {stopped} " in (tmp_path / "resumed.log").read_text()
    assert_same_run(run, reference)
