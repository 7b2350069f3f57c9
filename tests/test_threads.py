"""CPU threads per process: the share of the node's cores, unless the user set a number."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from zoo import threads
from zoo.threads import choose_threads, local_process_count, node_cores, user_omp_threads

ACCELERATE_CHILD = {"ACCELERATE_DYNAMO_BACKEND": "NO", "OMP_NUM_THREADS": "1"}
SHELL: dict[str, str] = {"PATH": "/usr/bin"}
ACCELERATE_CMD = "/venv/bin/python /venv/bin/accelerate launch --num_processes 1 train.py"


def test_the_launchers_own_omp_setting_is_not_the_users() -> None:
    # accelerate launch set OMP_NUM_THREADS=1 itself: its own environment had none.
    assert user_omp_threads(ACCELERATE_CHILD, (SHELL, ACCELERATE_CMD)) is None
    # torchrun does the same.
    assert user_omp_threads({"TORCHELASTIC_RUN_ID": "x", "OMP_NUM_THREADS": "1"}, (SHELL, "torchrun x")) is None
    assert choose_threads(None, 1, ACCELERATE_CHILD, (SHELL, ACCELERATE_CMD), cores=16) == (
        16, "16 cores / 1 process(es) on this node")
    assert choose_threads(None, 4, ACCELERATE_CHILD, (SHELL, ACCELERATE_CMD), cores=16)[0] == 4
    assert choose_threads(None, 32, ACCELERATE_CHILD, (SHELL, ACCELERATE_CMD), cores=16)[0] == 1


def test_a_user_setting_wins() -> None:
    # Exported in the shell that started the launcher, or passed to it as its option.
    assert user_omp_threads({**ACCELERATE_CHILD, "OMP_NUM_THREADS": "3"}, ({"OMP_NUM_THREADS": "3"}, "accelerate")) == 3
    cmd = ACCELERATE_CMD.replace("launch", "launch --num_cpu_threads_per_process 3")
    assert user_omp_threads({**ACCELERATE_CHILD, "OMP_NUM_THREADS": "3"}, (SHELL, cmd)) == 3
    # No launcher at all (python launch/train.py), or a parent that cannot be read.
    assert user_omp_threads({"OMP_NUM_THREADS": "2"}, (SHELL, "bash")) == 2
    assert user_omp_threads(ACCELERATE_CHILD, None) == 1
    assert user_omp_threads({"OMP_NUM_THREADS": "many"}, None) is None
    assert choose_threads(None, 1, {"OMP_NUM_THREADS": "2"}, (SHELL, "bash"), cores=16) == (2, "OMP_NUM_THREADS")
    # The recipe beats everything.
    assert choose_threads(5, 4, {"OMP_NUM_THREADS": "2"}, (SHELL, "bash"), cores=16) == (5, "trainer.cpu_threads")


def test_processes_on_the_node_come_from_the_launcher() -> None:
    assert local_process_count(8, {"LOCAL_WORLD_SIZE": "4"}) == 4  # 2 nodes of 4
    assert local_process_count(2, {}) == 2


def test_the_real_parent_is_read() -> None:
    """A child of this process, given OMP_NUM_THREADS by it: seen as a launcher's choice only
    when this process's own environment (as it started) lacked it."""
    # The module alone, loaded from its file: importing the zoo package would import torch.
    code = ("import importlib.util, os, sys; spec = importlib.util.spec_from_file_location('t', sys.argv[1]); "
            "t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t); "
            "print(t.user_omp_threads(os.environ, t._parent_launch()))")
    env = {**os.environ, **ACCELERATE_CHILD}
    out = subprocess.run([sys.executable, "-c", code, threads.__file__], env=env, capture_output=True, text=True,
                         check=True).stdout
    started_with_omp = b"OMP_NUM_THREADS=" in Path(f"/proc/{os.getpid()}/environ").read_bytes()
    assert out.strip() == ("1" if started_with_omp else "None")
    assert 1 <= node_cores() <= (os.cpu_count() or 1)
