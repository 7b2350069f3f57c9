"""``zoo plot RUN_DIR [RUN_DIR ...] [-o FILE]``: overlay the learning curves of several runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plot", help="plot learning curves of one or more runs",
        description="Draw train/validation loss and validation accuracy per epoch from the runs' "
                    "metrics.jsonl, one colour per run, labelled by tracking.name (else the folder name).",
        epilog="example: zoo plot runs/mlp runs/bn_mlp -o compare.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run's output_dir")
    parser.add_argument("-o", "--output", default="curves.png",
                        help="image to write; the suffix picks the format (default: curves.png). An existing "
                        "file is overwritten only if it is a plot zoo drew")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zoo.errors import ZooError
    from zoo.plot import is_zoo_plot, load_curves, save_curves

    output = Path(args.output)
    if output.exists() and not is_zoo_plot(output):  # a plot of its own is redrawn, as a rerun expects
        raise ZooError(f"'{output}' already exists and is not a plot zoo drew, so it is never overwritten; "
                       "pass another -o PATH or delete it")
    runs = [load_curves(run_dir) for run_dir in args.run_dirs]
    save_curves(runs, args.output)
    print(f"wrote {args.output} ({', '.join(run.name for run in runs)})")
    return 0
