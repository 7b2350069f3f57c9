"""A Slurm array task of a sweep: ``python -m zoo.sweep.worker SWEEP_DIR --task I -- COMMAND...``.

The job script runs this in place of one training: it takes the task's grid point, or Optuna
trials until the study's budget is spent, and trains each with COMMAND (the job's ``srun`` of the
training) followed by the point's overrides. A trial is pruned, and a point stopped, by signalling
the job's steps with ``scancel --signal=USR1``, the same way the job script passes preemption on;
SIGUSR1 to this process (from the job script) stops the sweep after its point has checkpointed,
and the exit code 3 makes the job requeue itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

from zoo.errors import ZooError


def _scancel_steps(process: subprocess.Popen) -> None:
    """Ask the training step of this job to checkpoint and stop (the batch shell is not signalled)."""
    if process.poll() is None:
        subprocess.run(["scancel", "--signal=USR1", os.environ["SLURM_JOB_ID"]], check=False)


def main(argv: Sequence[str] | None = None) -> int:
    from zoo.sweep.point import Launch
    from zoo.sweep.runner import run_sweep, say
    from zoo.sweep.spec import read_spec

    parser = argparse.ArgumentParser(prog="python -m zoo.sweep.worker", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--task", type=int, required=True, help="this array task's index")
    parser.add_argument("--retry-failed", action="store_true", help="train this task's failed grid point again")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]  # after --: the training command
    try:
        if not command:
            raise ZooError("no training command after --")
        spec = read_spec(args.sweep_dir)
        if spec.engine == "grid":
            from zoo.sweep.grid import GridEngine

            engine: object = GridEngine(spec, retry_failed=args.retry_failed, only=args.task)
        else:
            from zoo.sweep.search import SearchEngine

            seed = int(os.environ.get("ZOO_SWEEP_SEED", "0")) + args.task  # tasks sample different points
            engine = SearchEngine(spec, worker=f"slurm-task-{args.task}", seed=seed)
        stop = _scancel_steps if "SLURM_JOB_ID" in os.environ else None
        launch = Launch(command=command, echo=sys.stdout, **({"stop": stop} if stop else {}))
        result = run_sweep(spec, engine, launch, parallel=1)  # type: ignore[arg-type]
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    say(f"task {args.task}: {result.count('finished')} finished, {result.count('pruned')} pruned, "
        f"{result.count('failed')} failed" + ("; stopped" if result.stopped else ""))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
