"""``zoo predict RUN_DIR IMAGE...``: classify image files with a trained run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from zoo.commands.table import print_table
from zoo.errors import ZooError

EXAMPLE = """\
examples:
  zoo predict runs/mlp digit.png
  zoo predict runs/cnn a.png b.jpg --top-k 3 --json

Images of any size and mode Pillow reads are converted like the training data: to grey or RGB
(the run's channel count) and resized to its height and width."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict", help="classify image files with a trained run",
        description="Classify image files with the model of a finished run (its model.safetensors and "
        "model.json): the top-k labels with their probabilities.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's output_dir, e.g. runs/mlp")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, BMP, ...)")
    parser.add_argument("--top-k", "-k", type=int, default=1, metavar="K", help="labels per image (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zoo.inference import load_images, load_run, top_k

    if args.top_k < 1:
        raise ZooError(f"--top-k must be at least 1, got {args.top_k}")
    model = load_run(args.run_dir)
    pixels = load_images(args.images, model.input_dims)
    ranked = top_k(model.predict(pixels), model.labels, args.top_k)
    if args.json:
        records = [{"image": image, "predictions": [{"label": label, "probability": p} for label, p in best]}
                   for image, best in zip(args.images, ranked, strict=True)]
        print(json.dumps(records, indent=2))
        return 0
    rows = [("IMAGE", "RANK", "LABEL", "PROBABILITY")]
    for image, best in zip(args.images, ranked, strict=True):
        rows += [(image if rank == 1 else "", str(rank), label, f"{p:.4f}") for rank, (label, p) in enumerate(best, 1)]
    print_table(rows)
    return 0
