"""``zoo export RUN_DIR --format onnx|torchscript``: write a trained run's model for deployment."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

EXAMPLE = """\
examples:
  zoo export runs/mlp --format onnx                 writes runs/mlp/model.onnx
  zoo export runs/cnn --format torchscript -o cnn.pt

The exported model takes raw pixels, float32 (N, C, H, W) on the 0-255 scale, normalizes them
itself and returns logits; the batch size is dynamic. The class names and normalization travel
with it (ONNX metadata property 'zoo.model', TorchScript extra file 'model.json')."""


def register(subparsers: Any) -> None:
    from zoo.inference import EXPORT_FORMATS

    parser = subparsers.add_parser(
        "export", help="export a trained run's model to ONNX or TorchScript",
        description="Export the model of a finished run to ONNX or TorchScript, then check that the file's "
        "logits match PyTorch's on a random batch. An existing file is never overwritten.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's output_dir, e.g. runs/mlp")
    parser.add_argument("--format", "-f", required=True, choices=EXPORT_FORMATS, dest="fmt")
    parser.add_argument("-o", "--output", help="file to write (default RUN_DIR/model.onnx or RUN_DIR/model.pt)")
    parser.set_defaults(func=run)


# How far the exported file's logits may be from PyTorch's before the export is reported broken.
TOLERANCE = 1e-4


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from zoo.inference import EXPORT_SUFFIX, export, load_run, run_exported

    model = load_run(args.run_dir)
    output = Path(args.output) if args.output else Path(args.run_dir) / f"model{EXPORT_SUFFIX[args.fmt]}"
    if output.exists():
        raise _already_exists(output)
    if not output.parent.is_dir():
        raise ZooError(f"cannot write '{output}': folder '{output.parent}' does not exist")
    pixels = np.random.default_rng(0).integers(0, 256, (3, *model.input_dims)).astype(np.float32)
    expected = model.logits(pixels).numpy()  # refuses a model whose logits are not finite, before writing
    _claim(output)
    try:
        export(model, args.fmt, output)
        difference = float(np.abs(run_exported(output, args.fmt, pixels) - expected).max())
    except BaseException:
        output.unlink(missing_ok=True)  # a half-written export is no export: the name stays free
        raise
    if not difference <= TOLERANCE:  # NaN compares false: it must fail, not pass
        output.unlink()
        raise ZooError(f"the {args.fmt} export's logits differ from PyTorch's by {difference:.2e}; nothing written")
    print(f"wrote {output} ({args.fmt}; logits within {difference:.1e} of PyTorch on a check batch)")
    return 0


def _claim(output: Path) -> None:
    """Create ``output`` empty, or refuse: "x" fails rather than overwrite a file that appeared since the check."""
    try:
        output.open("x").close()
    except FileExistsError:
        raise _already_exists(output) from None
    except OSError as exc:
        raise ZooError(f"cannot write '{output}': {exc.strerror}; pass another -o PATH") from None


def _already_exists(output: Path) -> ZooError:
    return ZooError(f"'{output}' already exists and is never overwritten; pass another -o PATH or delete it")
