"""Common test setup: the bundled MNIST sample, an isolated cache, and a way to launch training."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.forked_runs import ForkedRuns
from zoo.samples import mnist_path as bundled_mnist_path

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))

# W&B never reaches a server in tests, and the Hub is never asked.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


# Modules that wait on a service, then those that train for real, start first: scripts/test.sh hands
# whole modules to two pytest-xdist workers in this order (--dist loadscope --no-loadscope-reorder),
# so a long module left for the end cannot keep one worker busy while the other has nothing to do.
FIRST = ("slurm", "docker", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return min((FIRST.index(mark.name) for mark in item.iter_markers() if mark.name in FIRST), default=len(FIRST))

    modules: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        modules[module] = min(modules.get(module, len(FIRST)), rank(item))
    order = {module: position for position, module in enumerate(modules)}
    # Sorted module by module, never splitting one: a module's shared fixtures are set up once.
    items.sort(key=lambda item: (modules[item.nodeid.split("::", 1)[0]], order[item.nodeid.split("::", 1)[0]]))


@pytest.fixture(scope="session", autouse=True)
def isolated_hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh datasets cache per session, so decode-once behaviour is tested from scratch."""
    cache = tmp_path_factory.mktemp("hf-home")
    os.environ["HF_HOME"] = str(cache)
    os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
    return cache


@pytest.fixture(scope="session")
def mnist_path() -> str:
    """The 10,000 real MNIST digits the package ships (zoo/samples/mnist)."""
    path = bundled_mnist_path()
    if not (path / "mnist").is_dir():
        pytest.fail(f"the bundled MNIST sample is missing at {path}; reinstall zoo-launch")
    return str(path)


@pytest.fixture(autouse=True)
def fresh_accelerate_state() -> Iterator[None]:
    """Accelerate keeps its device, process group and mixed precision in process-wide singletons: an
    ``Accelerator(cpu=True)`` built by one test would make the next test's ``Accelerator()`` a CPU one."""
    yield
    if "accelerate.state" in sys.modules:  # never import accelerate just to reset it
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def cpu_launch_prefix(processes_here: int) -> list[str]:
    """What goes before ``accelerate launch`` so ``processes_here`` processes on this machine fit it.

    With fewer GPUs than processes they run on CPUs (gloo), as on a machine without GPUs; a GPU
    each otherwise. ``accelerate launch`` has no flag for several CPU processes (``--cpu`` starts
    one), so ACCELERATE_USE_CPU goes into the ranks' environment, where zoo reads it.
    """
    if processes_here > 1 and visible_gpus() < processes_here:
        return ["env", "ACCELERATE_USE_CPU=true"]
    return []


def launch_args(num_processes: int = 1, extra: Sequence[str] = (), accelerate: bool = False) -> list[str]:
    """``accelerate launch`` with every option given, so it prints no defaults warning.

    One process is started by ``python`` itself unless ``accelerate`` is asked for: the launcher is a
    second interpreter that imports torch and accelerate, about as much CPU time again as a small
    training run. ``accelerate launch`` with one process is tested where it is the subject
    (tests/test_run.py's end-to-end run, the quiet-launcher tests, the wheel, scripts/train.sh);
    several processes always go through it.
    """
    if num_processes == 1 and not accelerate and not extra:  # extra: options of accelerate launch
        return [sys.executable, "-u", *extra]  # -u: unbuffered, as accelerate launch starts its ranks
    args = [*cpu_launch_prefix(num_processes), ACCELERATE, "launch", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        args += ["--multi_gpu", "--num_processes", str(num_processes), "--main_process_port", "0"]
    else:
        args += ["--num_processes", "1"]
    return [*args, *extra]


LaunchTraining = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def launch_training(mnist_path: str, forked_runs: ForkedRuns, tmp_path_factory: pytest.TempPathFactory
                    ) -> LaunchTraining:
    """Train ``RECIPE ...`` on the real slice to the end; returns the finished process.

    One process in the test's own environment is a fork of the session's fork server, which runs
    ``zoo.run.main`` as ``python launch/train.py`` does without importing torch, accelerate and
    datasets again (most of a small run's CPU time); its output is both ``stdout`` and ``stderr``.
    ``accelerate=True``, several processes or another environment go through :func:`launch_args`.
    """
    logs = tmp_path_factory.mktemp("launch-logs")

    def run(recipe: str, *overrides: str, num_processes: int = 1, accelerate: bool = False, timeout: float = 300,
            env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
        argv = [recipe, f"data.path={mnist_path}", *overrides]
        if num_processes == 1 and not accelerate and env is None:
            log = logs / f"run-{len(list(logs.iterdir()))}.log"
            code = forked_runs.run(argv, log)
            output = log.read_text()
            proc = subprocess.CompletedProcess(["zoo.run.main", *argv], code, output, output)
        else:
            cmd = [*launch_args(num_processes, accelerate=accelerate), str(REPO / "launch" / "train.py"), *argv]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, **(env or {})})
        if check and proc.returncode != 0:
            raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    return run


@pytest.fixture(scope="session")
def forked_runs() -> Iterator[ForkedRuns]:
    """One fork server for the session (tests/forked_runs.py): real training processes, each forked
    from a process that imported torch once, so a test can start, kill and resume many cheaply."""
    with ForkedRuns() as runs:
        yield runs
