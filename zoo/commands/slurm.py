"""``zoo slurm submit RECIPE [overrides] --nodes N --gpus-per-node G [--sweep k=v1,v2 | --search ...] [--dry-run]``."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from zoo.commands.sweep import add_sweep_options

EPILOG = """examples:
  zoo slurm submit recipes/mlp.yaml trainer.epochs=3 --nodes 2 --gpus-per-node 8 --time 4:00:00
  zoo slurm submit recipes/mlp.yaml --gpus-per-node 0 --procs-per-node 2 --dry-run
  zoo slurm submit recipes/mlp.yaml --sweep model.fc1=256,512,1024 --sweep trainer.lr=1e-3,3e-4
  zoo slurm submit recipes/mlp.yaml --search trainer.lr=log:1e-4..1e-2 --trials 40 --parallel 8
extra sbatch options go in --sbatch-arg, written with '=': --sbatch-arg=--account=myproject"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("slurm", help="submit training as a Slurm batch job or job-array sweep",
                                   description="Run recipes on a Slurm cluster.")
    commands = parser.add_subparsers(dest="slurm_command", metavar="SLURM_COMMAND", required=True)
    submit = commands.add_parser(
        "submit", help="render the job template zoo/templates/train.sbatch for a recipe and submit it with sbatch",
        description="Render the job template zoo/templates/train.sbatch for a recipe and submit it with sbatch. "
        "The job checkpoints and requeues itself on SIGUSR1 (sent 120 s before its time limit) and resumes "
        "from its checkpoint. Each --sweep multiplies the grid; the grid becomes one job array, one run folder "
        "per point.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit.add_argument("recipe", help="path to a YAML recipe, e.g. recipes/mlp.yaml")
    submit.add_argument("overrides", nargs="*", default=[], help="section.key=value, applied to every point")
    submit.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    submit.add_argument("--gpus-per-node", type=int, default=0,
                        help="GPUs per node, one process each; 0 trains on CPUs (default 0)")
    submit.add_argument("--procs-per-node", type=int, default=None,
                        help="processes per node (default: one per GPU, or 1 on CPUs)")
    submit.add_argument("--cpus-per-task", type=int, default=None,
                        help="CPUs per node's launcher (default: one per process on CPUs, the site's on GPUs)")
    submit.add_argument("--partition", help="Slurm partition")
    submit.add_argument("--time", help="time limit, e.g. 4:00:00; preemption warning comes 120 s before it")
    submit.add_argument("--job-name", help="job name (default zoo-<recipe name>)")
    submit.add_argument("--sbatch-arg", action="append", default=[], metavar="OPTION",
                        help="another #SBATCH option, e.g. --sbatch-arg=--account=proj (repeatable)")
    add_sweep_options(submit, grid_help="sweep a key over values; several --sweep make a grid, one array task "
                      "per point (repeatable)")
    submit.add_argument("--parallel", type=int, default=None,
                        help="a sweep's array tasks running at once (grid) or in all (Optuna; default 4)")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the job script and sbatch command; submit nothing")
    submit.set_defaults(func=run_submit)


def run_submit(args: argparse.Namespace) -> int:
    from zoo.commands.sweep import spec_from_args
    from zoo.slurm import Resources, plan, submit

    resources = Resources(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, procs_per_node=args.procs_per_node,
        cpus_per_task=args.cpus_per_task, partition=args.partition, time=args.time, job_name=args.job_name,
        sbatch_args=tuple(args.sbatch_arg),
    )
    sweep = spec_from_args(args) if args.sweep or args.search else None
    job = plan(args.recipe, args.overrides, resources, sweep=sweep, tasks=args.parallel, retry_failed=args.retry_failed)
    if args.dry_run:
        print(f"# {job.script_path}\n{job.script}", end="")
        if job.sweep is not None:
            print(f"# {job.sweep.folder / 'sweep.json'} (the sweep every array task reads)\n"
                  f"{json.dumps(job.sweep.to_dict(), indent=2)}")
        print(f"# submit with\n{shlex.join(job.sbatch_command())}")
        return 0
    job_id = submit(job, args.retry_failed)
    if job.sweep is not None:
        print(f"submitted job array {job_id} ({job.tasks} tasks): runs in {job.sweep.folder}/<point>, "
              f"logs in {job.job_dir}; sum it up with: zoo sweep report {job.sweep.folder}")
    else:
        print(f"submitted job {job_id}: run in {job.job_dir.parent}, log in {job.job_dir}")
    return 0
