"""The run-folder lock and the checks on ``output_dir`` made before any work.

The holder of a lock is a real second process (``python -c`` taking the lock as a run does), so
the tests see what the kernel does when two processes want one folder, and when the holder dies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.run import main
from zoo.run_folder import LOCK_NAME, RunFolderLock

REPO = Path(__file__).resolve().parents[1]
MLP_RECIPE = str(REPO / "recipes" / "mlp.yaml")
HOLD = (
    "import sys, time\nfrom pathlib import Path\nfrom zoo.run_folder import RunFolderLock\n"
    "with RunFolderLock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n"
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A second process holding ``tmp_path / 'run'``, as a running training would."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def run_main(capsys: pytest.CaptureFixture[str], output_dir: Path, *overrides: str) -> tuple[int, str]:
    code = main([MLP_RECIPE, f"output_dir={output_dir}", "data.path=/nonexistent-never-read",
                 "tracking.wandb=false", *overrides])
    return code, capsys.readouterr().err


def test_second_run_into_a_held_folder_stops_at_once_naming_the_holder(
    holder: subprocess.Popen, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    before = sorted(p.name for p in run.iterdir())
    started = time.monotonic()
    code, err = run_main(capsys, run)
    assert code == 2
    assert err.strip() == (f"error: output_dir '{run}' is in use by another run (pid {holder.pid} on "
                           f"{socket.gethostname()}, since {err.split('since ')[1].split(')')[0]}); "
                           "wait for it to end or pick another output_dir")
    assert time.monotonic() - started < 30  # refused before the data is even looked at
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written beside the holder's lock


def test_a_killed_holder_never_leaves_the_folder_stuck(holder: subprocess.Popen, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ZooError, match="in use by another run"), RunFolderLock(run):
        pass
    holder.send_signal(signal.SIGKILL)  # no chance to clean up
    holder.wait()
    assert (run / LOCK_NAME).is_file()  # the file stays; the kernel dropped the lock with the process
    with RunFolderLock(run):
        assert f'"pid": {os.getpid()}' in (run / LOCK_NAME).read_text()


def test_someone_elses_files_are_refused_and_never_touched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"not": "a zoo run"}\n')
    code, err = run_main(capsys, folder)
    assert code == 2
    assert err.strip() == (f"error: output_dir '{folder}' holds files that are not a zoo run's (metrics.jsonl); "
                           "nothing there is touched: pick an empty or new folder")
    assert [p.name for p in folder.iterdir()] == ["metrics.jsonl"]
    assert (folder / "metrics.jsonl").read_text() == '{"not": "a zoo run"}\n'


def test_output_dir_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n")
    code, err = run_main(capsys, existing)
    assert code == 2
    assert err.strip() == f"error: output_dir '{existing}' is an existing file, not a folder; pick another output_dir"
    assert existing.read_text() == "keep me\n"


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write: a read-only tmpfs as root (root ignores modes), mode 0500 otherwise."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("root without permission to mount a read-only tmpfs")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_output_dir_that_cannot_be_written_is_refused_before_work(
    read_only_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = read_only_folder / "run"
    code, err = run_main(capsys, run)
    assert code == 2
    assert err.startswith(f"error: cannot write output_dir '{run}': "), err
    assert err.strip().endswith("pick a folder you can write to")
    assert not run.exists()


def test_a_run_that_stops_before_writing_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "never-made"
    code, err = run_main(capsys, run)  # the data path does not exist
    assert code == 2 and err.startswith("error: ")
    assert not run.exists()


def test_a_slurm_sweeps_folder_is_not_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It holds a job script (slurm/train.sbatch) as a Slurm run's folder does; its sweep.json tells them apart."""
    from zoo.cli import main as zoo
    from zoo.slurm import Resources, plan, write

    sweep = tmp_path / "sweep"
    write(plan(MLP_RECIPE, [f"output_dir={sweep}"], Resources(), ["model.fc1=32,64"]))  # what a submit writes
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    line = (f"error: output_dir '{sweep}' holds a zoo sweep (sweep.json), not a run; nothing there is touched: "
            "pick an empty or new folder\n")
    assert zoo(["slurm", "submit", MLP_RECIPE, f"output_dir={sweep}", "--dry-run"]) == 2
    assert capsys.readouterr() == ("", line)
    code, err = run_main(capsys, sweep)
    assert code == 2 and err == line
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before
