"""Slurm batch jobs: render the job template ``zoo/templates/train.sbatch`` for a recipe, submit it, sweep a grid.

One template serves every job. Rendering fills its ``#SBATCH`` header (nodes, GPUs, CPUs, log
path, job array) and its settings block (absolute paths, the recipe and overrides), so the job
does not depend on the directory or environment it is started from. A sweep is one job array:
``--sweep model.fc1=256,512 --sweep trainer.lr=1e-3,3e-4`` gives 4 points, written one line per
array task (tab-separated overrides) to ``<output_dir>/slurm/sweep.tsv``; task ``i`` trains point
``i`` into ``<output_dir>/<key=value,...>``, listed in ``<output_dir>/slurm/sweep.json``. The recipe
and every point are validated before anything is written or submitted.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from zoo.errors import ZooError
from zoo.recipe import Recipe, find_recipe, load_recipe, parse_override

TEMPLATE = Path(__file__).resolve().parent / "templates" / "train.sbatch"  # package data: ships in the wheel
SETTINGS_BEGIN = "# >>> job settings"
SETTINGS_END = "# <<< job settings"
_SAFE_DIRNAME = re.compile(r"^[A-Za-z0-9._=,+-]{1,200}$")


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
    points: list[list[str]] = field(default_factory=list)  # one override list per array task
    point_dirs: list[Path] = field(default_factory=list)

    @property
    def script_path(self) -> Path:
        return self.job_dir / "train.sbatch"

    @property
    def sweep_path(self) -> Path:
        return self.job_dir / "sweep.tsv"

    def sweep_text(self) -> str:
        return "".join("\t".join(point) + "\n" for point in self.points)

    def sbatch_command(self) -> list[str]:
        return ["sbatch", "--parsable", str(self.script_path)]


def parse_sweeps(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["model.fc1=256,512", "trainer.lr=1e-3"]`` -> ``[("model.fc1", ["256", "512"]), ...]``.

    Values are split on commas, so a value cannot itself hold a comma (a YAML list, for one).
    """
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        values = [v.strip() for v in raw.split(",")]
        if not sep or not key or not all(values):
            raise ZooError(f"malformed --sweep '{spec}': write section.key=v1,v2,... "
                           "e.g. --sweep trainer.lr=1e-3,3e-4")
        parse_override(f"{key}={values[0]}")  # the key's shape; the values are checked with the recipe
        if any(key == seen for seen, _ in axes):
            raise ZooError(f"--sweep '{key}' is given twice; put all its values in one --sweep {key}=v1,v2")
        if len(set(values)) != len(values):
            raise ZooError(f"--sweep '{spec}' repeats a value; each point must differ")
        axes.append((key, values))
    return axes


def sweep_points(axes: Sequence[tuple[str, Sequence[str]]]) -> list[list[str]]:
    """Every combination of the sweep values, the last axis varying fastest; ``[[]]`` without axes."""
    return [[f"{key}={value}" for (key, _), value in zip(axes, combo, strict=True)]
            for combo in itertools.product(*(values for _, values in axes))]


def point_dirname(point: Sequence[str], index: int) -> str:
    """``model.fc1=256,trainer.lr=1e-3`` when that is a safe file name, else ``point-<index>``."""
    name = ",".join(point)
    return name if _SAFE_DIRNAME.match(name) else f"point-{index}"


def _check_overrides(overrides: Sequence[str]) -> None:
    for override in overrides:
        if "\t" in override or "\n" in override:
            raise ZooError(f"override {override!r} holds a tab or newline, which a Slurm job cannot pass on")


def _validate(recipe_path: Path, overrides: Sequence[str], resources: Resources, where: str) -> Recipe:
    from zoo.run import check_batch, check_output_dir

    try:
        recipe = load_recipe(recipe_path, overrides)
    except ZooError as exc:
        raise ZooError(f"{where}: {exc}" if where else str(exc)) from None
    check_output_dir(recipe)
    world_size = resources.nodes * resources.processes_per_node
    check_batch(recipe, world_size, recipe.trainer.grad_accum)
    return recipe


def render(resources: Resources, args: Sequence[str], job_dir: Path, *, array_size: int = 0,
           accelerate: str | None = None) -> str:
    """The template with its ``#SBATCH`` header and settings block filled in for this job."""
    lines = TEMPLATE.read_text().splitlines()
    header = {line.split()[1].split("=")[0]: line for line in lines if line.startswith("#SBATCH ")}

    def put(option: str, value: object) -> None:
        header[option] = f"#SBATCH {option}={value}"

    r = resources
    put("--job-name", r.job_name or "zoo")
    put("--nodes", r.nodes)
    put("--ntasks-per-node", 1)
    put("--output", job_dir / ("%x-%A_%a.out" if array_size else "%x-%j.out"))
    if r.gpus_per_node:
        put("--gpus-per-node", r.gpus_per_node)
    cpus = r.cpus_per_task or (None if r.gpus_per_node else r.processes_per_node)
    if cpus:
        put("--cpus-per-task", cpus)
    if array_size:
        put("--array", f"0-{array_size - 1}")
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
        f"ZOO_SWEEP_FILE={shlex.quote(str(job_dir / 'sweep.tsv')) if array_size else ''}",
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


def plan(recipe: str | Path, overrides: Sequence[str], resources: Resources,
         sweeps: Sequence[str] = ()) -> Submission:
    """Validate the recipe, every sweep point and the resources; return the job to submit.

    Nothing is written. Raises ZooError naming the first bad input.
    """
    if resources.nodes < 1:
        raise ZooError(f"--nodes must be at least 1, got {resources.nodes}")
    if resources.gpus_per_node < 0:
        raise ZooError(f"--gpus-per-node must be 0 (CPU) or more, got {resources.gpus_per_node}")
    for name in ("procs_per_node", "cpus_per_task"):
        value = getattr(resources, name)
        if value is not None and value < 1:
            raise ZooError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    _check_overrides(overrides)
    recipe_path = find_recipe(recipe).resolve()
    if resources.job_name is None:
        resources = replace(resources, job_name=f"zoo-{recipe_path.stem}")
    base = _validate(recipe_path, overrides, resources, "")
    base_dir = Path(base.output_dir).resolve()
    job_dir = base_dir / "slurm"
    # The job runs wherever Slurm starts it: the output folder goes in last, as an absolute path.
    args = [str(recipe_path), *(o for o in overrides if o.partition("=")[0].strip() != "output_dir")]

    axes = parse_sweeps(sweeps)
    if not axes:
        script = render(resources, [*args, f"output_dir={base_dir}"], job_dir)
        return Submission(script=script, job_dir=job_dir)

    points, dirs = [], []
    for index, point in enumerate(sweep_points(axes)):
        _check_overrides(point)
        point_dir = base_dir / point_dirname(point, index)
        _validate(recipe_path, [*overrides, *point, f"output_dir={point_dir}"], resources,
                  f"sweep point {index} ({' '.join(point)})")
        points.append([*point, f"output_dir={point_dir}"])
        dirs.append(point_dir)
    script = render(resources, args, job_dir, array_size=len(points))
    submission = Submission(script=script, job_dir=job_dir, points=points, point_dirs=dirs)
    if submission.sweep_path.is_file() and submission.sweep_path.read_text() != submission.sweep_text():
        raise ZooError(f"{base_dir} already holds a different sweep ({submission.sweep_path}); "
                       f"pick another output_dir=...")
    return submission


def write(submission: Submission) -> None:
    """Write the job script, and for a sweep its points and manifest, into the job folder."""
    submission.job_dir.mkdir(parents=True, exist_ok=True)
    submission.script_path.write_text(submission.script)
    if submission.points:
        submission.sweep_path.write_text(submission.sweep_text())
        manifest = [{"task": i, "overrides": point[:-1], "output_dir": str(path)}
                    for i, (point, path) in enumerate(zip(submission.points, submission.point_dirs, strict=True))]
        (submission.job_dir / "sweep.json").write_text(json.dumps(manifest, indent=2) + "\n")


def submit(submission: Submission) -> str:
    """Write the job files and hand them to ``sbatch``; returns the job id."""
    if shutil.which("sbatch") is None:
        raise ZooError("sbatch not found: submit from a Slurm login node, start a local one-node cluster with "
                       "`bash scripts/slurm-cluster.sh`, or look at the job with --dry-run")
    write(submission)
    proc = subprocess.run(submission.sbatch_command(), capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ZooError(f"sbatch refused the job ({submission.script_path}): {reason}")
    return proc.stdout.strip().split(";")[0]
