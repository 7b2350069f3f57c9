"""Slurm batch jobs: render the job template ``zoo/templates/train.sbatch`` for a recipe, submit it, run a sweep.

One template serves every job. Rendering fills its ``#SBATCH`` header (nodes, GPUs, CPUs, log
path, job array) and its settings block (absolute paths, the recipe and overrides), so the job
does not depend on the directory or environment it is started from. A sweep (``zoo.sweep``: a
grid of ``--sweep`` values, or an Optuna ``--search``) is one job array whose tasks each run the
sweep worker (``python -m zoo.sweep.worker``): a grid gives task ``i`` point ``i``; an Optuna search
gives every task trials from the one study until its budget is spent. The sweep's spec is written
to ``<output_dir>/sweep.json``; each point trains into a run folder inside ``<output_dir>``. The
recipe and every point are validated before anything is written or submitted.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from zoo.errors import ZooError
from zoo.recipe import Recipe, find_recipe, load_recipe
from zoo.sweep.spec import SweepSpec, build_spec

TEMPLATE = Path(__file__).resolve().parent / "templates" / "train.sbatch"  # package data: ships in the wheel
SETTINGS_BEGIN = "# >>> job settings"
SETTINGS_END = "# <<< job settings"


@dataclass(frozen=True)
class Resources:
    """What every node of the job gets. ``gpus_per_node=0`` trains on CPUs with
    ``procs_per_node`` processes (gloo); otherwise one process per GPU unless ``procs_per_node`` says."""

    nodes: int = 1
    gpus_per_node: int = 0
    procs_per_node: int | None = None
    cpus_per_task: int | None = None
    partition: str | None = None
    time: str | None = None
    job_name: str | None = None
    sbatch_args: tuple[str, ...] = ()

    @property
    def processes_per_node(self) -> int:
        return self.procs_per_node or self.gpus_per_node or 1


@dataclass
class Submission:
    """Everything one ``sbatch`` call needs, computed and validated before anything is written."""

    script: str
    job_dir: Path
    sweep: SweepSpec | None = None
    tasks: int = 0  # array tasks of a sweep
    point_dirs: list[Path] = field(default_factory=list)  # a grid's run folders, task i's at [i]

    @property
    def script_path(self) -> Path:
        return self.job_dir / "train.sbatch"

    def sbatch_command(self) -> list[str]:
        return ["sbatch", "--parsable", str(self.script_path)]


def _check_overrides(overrides: Sequence[str]) -> None:
    for override in overrides:
        if "\t" in override or "\n" in override:
            raise ZooError(f"override {override!r} holds a tab or newline, which a Slurm job cannot pass on")


def _validate(recipe_path: Path, overrides: Sequence[str], resources: Resources, where: str) -> Recipe:
    from zoo.batching import check_batch
    from zoo.run import check_output_dir
    from zoo.run_folder import check_run_folder

    try:
        recipe = load_recipe(recipe_path, overrides)
    except ZooError as exc:
        raise ZooError(f"{where}: {exc}" if where else str(exc)) from None
    check_output_dir(recipe)
    check_run_folder(Path(recipe.output_dir))  # before the job script is written into it
    world_size = resources.nodes * resources.processes_per_node
    check_batch(recipe, world_size, recipe.trainer.grad_accum)
    return recipe


def render(resources: Resources, args: Sequence[str], job_dir: Path, *, array: str | None = None,
           sweep_worker: Sequence[str] = (), accelerate: str | None = None) -> str:
    """The template with its ``#SBATCH`` header and settings block filled in for this job."""
    lines = TEMPLATE.read_text().splitlines()
    header = {line.split()[1].split("=")[0]: line for line in lines if line.startswith("#SBATCH ")}

    def put(option: str, value: object) -> None:
        header[option] = f"#SBATCH {option}={value}"

    r = resources
    put("--job-name", r.job_name or "zoo")
    put("--nodes", r.nodes)
    put("--ntasks-per-node", 1)
    put("--output", job_dir / ("%x-%A_%a.out" if array else "%x-%j.out"))
    if r.gpus_per_node:
        put("--gpus-per-node", r.gpus_per_node)
    cpus = r.cpus_per_task or (None if r.gpus_per_node else r.processes_per_node)
    if cpus:
        put("--cpus-per-task", cpus)
    if array:
        put("--array", array)
    if r.partition:
        put("--partition", r.partition)
    if r.time:
        put("--time", r.time)
    for extra in r.sbatch_args:
        header[extra.split("=")[0]] = f"#SBATCH {extra}"

    accelerate = accelerate or str(Path(sys.executable).with_name("accelerate"))
    settings = [
        f"{SETTINGS_BEGIN}: written by `zoo slurm submit`",
        f"ZOO_ACCELERATE={shlex.quote(accelerate)}",
        f"ZOO_PROCS_PER_NODE={r.processes_per_node}",
        f"ZOO_SWEEP_WORKER=({' '.join(shlex.quote(a) for a in sweep_worker)})",
        f"ZOO_RANK_LOGS={shlex.quote(str(job_dir / 'rank-logs'))}",
        f"ZOO_ARGS=({' '.join(shlex.quote(a) for a in args)})",
        SETTINGS_END,
    ]
    out: list[str] = []
    in_settings = header_written = False
    for line in lines:
        if line.startswith("#SBATCH "):
            if not header_written:
                out.extend(header.values())
                header_written = True
        elif line.startswith(SETTINGS_BEGIN):
            in_settings = True
            out.extend(settings)
        elif line.startswith(SETTINGS_END):
            in_settings = False
        elif not in_settings:
            out.append(line)
    return "\n".join(out) + "\n"


def _check_resources(resources: Resources) -> None:
    if resources.nodes < 1:
        raise ZooError(f"--nodes must be at least 1, got {resources.nodes}")
    if resources.gpus_per_node < 0:
        raise ZooError(f"--gpus-per-node must be 0 (CPU) or more, got {resources.gpus_per_node}")
    for name in ("procs_per_node", "cpus_per_task"):
        value = getattr(resources, name)
        if value is not None and value < 1:
            raise ZooError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def plan(recipe: str | Path, overrides: Sequence[str], resources: Resources, sweeps: Sequence[str] = (), *,
         sweep: SweepSpec | None = None, tasks: int | None = None, retry_failed: bool = False) -> Submission:
    """Validate the recipe, the sweep and the resources; return the job to submit.

    ``sweeps`` is a grid (``["model.fc1=256,512"]``); ``sweep`` any spec from ``zoo.sweep.spec``.
    A grid runs one array task per point, at most ``tasks`` at once; an Optuna search runs ``tasks``
    array tasks (default: up to 4) sharing one study. Nothing is written; a ZooError names the first
    bad input.
    """
    _check_resources(resources)
    _check_overrides(overrides)
    recipe_path = find_recipe(recipe).resolve()
    if resources.job_name is None:
        resources = replace(resources, job_name=f"zoo-{recipe_path.stem}")
    if sweeps and sweep is None:
        sweep, _ = build_spec(recipe_path, overrides, grid=sweeps)
    if tasks is not None and tasks < 1:
        raise ZooError(f"--parallel must be at least 1, got {tasks}")
    if sweep is None:
        base = _validate(recipe_path, overrides, resources, "")
        base_dir = Path(base.output_dir).resolve()
        args = [str(recipe_path), *(o for o in overrides if o.partition("=")[0].strip() != "output_dir")]
        script = render(resources, [*args, f"output_dir={base_dir}"], base_dir / "slurm")
        return Submission(script=script, job_dir=base_dir / "slurm")
    return _plan_sweep(recipe_path, sweep, resources, tasks, retry_failed)


def _plan_sweep(recipe_path: Path, sweep: SweepSpec, resources: Resources, tasks: int | None,
                retry_failed: bool) -> Submission:
    from zoo.batching import check_batch
    from zoo.sweep.grid import grid

    world_size = resources.nodes * resources.processes_per_node
    points = grid(sweep) if sweep.engine == "grid" else []
    # Points may differ in batch size; a finished point is skipped by its task, not refused here.
    for varied in [point.varied for point in points] or [[]]:
        recipe = load_recipe(recipe_path, [*sweep.overrides, *varied])
        check_batch(recipe, world_size, recipe.trainer.grad_accum)
    if sweep.engine == "grid":
        count = len(points)
        array = f"0-{count - 1}" + (f"%{tasks}" if tasks else "")
    else:
        count = tasks or min(sweep.trials, 4)
        array = f"0-{count - 1}"
    job_dir = sweep.folder / "slurm"
    worker = [sys.executable, "-m", "zoo.sweep.worker", str(sweep.folder)]
    worker += ["--retry-failed"] if retry_failed else []
    script = render(resources, [str(recipe_path)], job_dir, array=array, sweep_worker=worker)
    return Submission(script=script, job_dir=job_dir, sweep=sweep, tasks=count,
                      point_dirs=[point.folder for point in points])


def write(submission: Submission, retry_failed: bool = False) -> None:
    """Write the job script, and for a sweep its spec (and an Optuna search's study)."""
    if submission.sweep is not None:
        from zoo.sweep.spec import write_spec

        write_spec(submission.sweep)  # refuses a folder that holds a different sweep
        if submission.sweep.engine == "optuna":
            from zoo.sweep.search import enqueue_retries, open_study

            study = open_study(submission.sweep)  # created once here, not raced for by the tasks
            if retry_failed:
                enqueue_retries(study)
    submission.job_dir.mkdir(parents=True, exist_ok=True)
    submission.script_path.write_text(submission.script)


def submit(submission: Submission, retry_failed: bool = False) -> str:
    """Write the job files and hand them to ``sbatch``; returns the job id."""
    if shutil.which("sbatch") is None:
        raise ZooError("sbatch not found: submit from a Slurm login node, start a local one-node cluster with "
                       "`bash scripts/slurm-cluster.sh`, or look at the job with --dry-run")
    write(submission, retry_failed)
    proc = subprocess.run(submission.sbatch_command(), capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ZooError(f"sbatch refused the job ({submission.script_path}): {reason}")
    return proc.stdout.strip().split(";")[0]
