"""``zoo sweep RECIPE [overrides] --sweep KEY=V1,V2 | --search KEY=LOW..HIGH [...]`` and ``zoo sweep report DIR``."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

EPILOG = """examples:
  zoo sweep recipes/mlp.yaml trainer.epochs=3 output_dir=runs/fc --sweep model.fc1=256,512 --sweep trainer.lr=1e-3,3e-4
  zoo sweep recipes/mlp.yaml output_dir=runs/search --search trainer.lr=log:1e-4..1e-2 --trials 20 --prune
  zoo sweep report runs/search
search spaces: KEY=LOW..HIGH (a float range; two integers make an integer range), KEY=log:LOW..HIGH
(sampled on a log scale), KEY=A,B,C (a choice). Running the same command again skips finished
points, resumes unfinished ones from their checkpoints and starts the rest."""


def add_sweep_options(parser: argparse.ArgumentParser, *, grid_help: str) -> None:
    """The options that say what a sweep varies and optimises; `zoo slurm submit` takes them too."""
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2", help=grid_help)
    parser.add_argument("--search", action="append", default=[], metavar="KEY=SPACE",
                        help="an Optuna search over KEY: LOW..HIGH, log:LOW..HIGH or A,B,C (repeatable)")
    parser.add_argument("--trials", type=int, default=20, help="Optuna: how many points to try (default 20)")
    parser.add_argument("--metric", default="best_val_acc",
                        help="what picks the best point (and a search optimises): best_val_acc (default), "
                        "test_acc, test_loss, val_acc, val_loss or train_loss")
    parser.add_argument("--direction", choices=("maximize", "minimize"),
                        help="default: maximize accuracies, minimize losses")
    parser.add_argument("--storage", help="Optuna storage URL shared by every worker "
                        "(default: sqlite:///<output_dir>/optuna.db)")
    parser.add_argument("--prune", action="store_true",
                        help="Optuna: stop trials whose per-epoch validation is below the median of earlier ones")
    parser.add_argument("--retry-failed", action="store_true", help="train points that failed before again")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sweep", help="train a recipe at many points (a grid or an Optuna search) on this machine",
        description="Train a recipe at every point of a grid, or at the points an Optuna search picks, N at a "
        "time on this machine; each point is a run folder inside the recipe's output_dir. "
        "`zoo sweep report DIR` sums a sweep up. `zoo slurm submit` runs the same sweeps as a job array.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="path to a YAML recipe (or `report`, then a sweep folder)")
    parser.add_argument("overrides", nargs="*", default=[], help="section.key=value, applied to every point")
    add_sweep_options(parser, grid_help="sweep KEY over values; several --sweep make a grid (repeatable)")
    parser.add_argument("--parallel", type=int, default=1, help="points trained at once (default 1)")
    parser.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace) -> Any:
    from zoo.sweep.spec import build_spec

    spec, _ = build_spec(args.recipe, args.overrides, args.sweep, args.search, metric=args.metric,
                         direction=args.direction, trials=args.trials, prune=args.prune, storage=args.storage)
    return spec


def run(args: argparse.Namespace) -> int:
    from zoo.errors import ZooError

    if args.recipe == "report":
        if len(args.overrides) != 1:
            raise ZooError("write: zoo sweep report SWEEP_DIR")
        from zoo.sweep.report import report

        print(report(args.overrides[0]))
        return 0
    if args.parallel < 1:
        raise ZooError(f"--parallel must be at least 1, got {args.parallel}")
    return sweep_here(spec_from_args(args), args.parallel, args.retry_failed)


def sweep_here(spec: Any, parallel: int, retry_failed: bool) -> int:
    """Run the sweep on this machine; one sweep at a time in a folder."""
    import fcntl

    from zoo.errors import ZooError
    from zoo.sweep.runner import local_launch, run_sweep, say
    from zoo.sweep.spec import write_spec

    write_spec(spec)
    with (spec.folder / ".sweep.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ZooError(f"another `zoo sweep` is running in {spec.folder}; wait for it, or stop it "
                           "and run this again") from None
        engine = _engine(spec, retry_failed)
        say(f"{spec.engine} sweep in {spec.folder}, {parallel} point(s) at a time")
        result = run_sweep(spec, engine, local_launch(spec, parallel), parallel)
    say(f"{result.count('finished')} finished, {result.count('pruned')} pruned, {result.count('failed')} failed"
        + (" (stopped: run the same command again to go on)" if result.stopped else ""))
    if not result.stopped:
        from zoo.sweep.report import report

        print(report(spec.folder))
    if result.count("failed"):
        say(f"failed points are listed above; rerun with --retry-failed, or see `zoo sweep report "
            f"{shlex.quote(str(spec.folder))}`")
    return result.exit_code


def _engine(spec: Any, retry_failed: bool) -> Any:
    if spec.engine == "grid":
        from zoo.sweep.grid import GridEngine

        return GridEngine(spec, retry_failed=retry_failed)
    from zoo.sweep.search import SearchEngine, enqueue_retries, open_study

    if retry_failed:
        enqueue_retries(open_study(spec))
    from zoo.recipe import load_recipe

    return SearchEngine(spec, worker="local", seed=load_recipe(spec.recipe, spec.overrides).seed)
