"""How many CPU threads each process gives torch: its share of the node's cores, unless the user said.

Launchers set ``OMP_NUM_THREADS`` themselves: ``accelerate launch`` passes on the user's value or
else sets it (to 1, or on ``--cpu`` to the physical cores / processes), and torchrun sets 1 when
it is unset. A single CPU process under ``accelerate launch`` would then train with one thread on a
many-core machine. So a value in the environment counts as the user's only when the process that
launched this one already had it, or was given ``--num_cpu_threads_per_process``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Set in every process that accelerate launch or torchrun starts, never by a user's shell.
LAUNCHER_MARKERS = ("ACCELERATE_DYNAMO_BACKEND", "TORCHELASTIC_RUN_ID")


def node_cores() -> int:
    """The cores this process may run on: its CPU affinity, at most the physical cores."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS or Windows
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(usable, physical))


def _parent_launch() -> tuple[dict[str, str], str] | None:
    """The environment the launching process started with, and its command line (Linux only)."""
    try:
        proc = Path("/proc") / str(os.getppid())
        environ = (proc / "environ").read_bytes().split(b"\0")
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    pairs = (entry.decode(errors="replace").partition("=") for entry in environ if entry)
    return {key: value for key, _, value in pairs}, cmdline


def user_omp_threads(env: Mapping[str, str],
                     parent: tuple[Mapping[str, str], str] | None) -> int | None:
    """``OMP_NUM_THREADS`` when the user set it (directly or through the launcher's option), else None.

    ``parent`` is what :func:`_parent_launch` reads; when it cannot be read, a value in the
    environment is taken as the user's.
    """
    value = env.get("OMP_NUM_THREADS", "").strip()
    if not value.isdigit() or int(value) < 1:
        return None
    launched = any(marker in env for marker in LAUNCHER_MARKERS)
    if launched and parent is not None:
        parent_env, parent_cmdline = parent
        if "OMP_NUM_THREADS" not in parent_env and "--num_cpu_threads_per_process" not in parent_cmdline:
            return None  # the launcher's own choice
    return int(value)


def choose_threads(cpu_threads: int | None, local_processes: int, env: Mapping[str, str] | None = None,
                   parent: tuple[Mapping[str, str], str] | None = None, cores: int | None = None) -> tuple[int, str]:
    """Threads per process and where the number comes from (said on the start line).

    ``trainer.cpu_threads`` wins, then a user-set ``OMP_NUM_THREADS``, then the process's share
    of the node's cores.
    """
    if cpu_threads is not None:
        return cpu_threads, "trainer.cpu_threads"
    env = os.environ if env is None else env
    user = user_omp_threads(env, parent if parent is not None else _parent_launch())
    if user is not None:
        return user, "OMP_NUM_THREADS"
    cores = cores or node_cores()
    processes = max(1, local_processes)
    return max(1, cores // processes), f"{cores} cores / {processes} process(es) on this node"


def local_process_count(world_size: int, env: Mapping[str, str] | None = None) -> int:
    """Processes on this node: torchrun's LOCAL_WORLD_SIZE, else all of them (one node)."""
    env = os.environ if env is None else env
    value = env.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else world_size
