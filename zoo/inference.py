"""Use a trained run: load its model, turn image files into inputs, classify, export.

A run folder (see zoo/run.py) holds ``model.safetensors`` and ``model.json``; the JSON has what
rebuilds the model (registry name, hyperparameters, ``data_config``) and the training split's
per-channel ``normalization`` on the 0-255 scale. Nothing else about the run is needed here::

    run = load_run("runs/mlp")
    pixels = load_images(["seven.png"], run.input_dims)      # uint8 (N, C, H, W)
    probabilities = run.predict(pixels)                        # (N, classes)

Exported models take raw pixels (float32, 0-255, N x C x H x W) and do the normalization
themselves, so a deployment needs only the exported file and the class names.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from zoo.colour import to_mode
from zoo.errors import ZooError
from zoo.resize import resized

EXPORT_FORMATS = ("onnx", "torchscript")
EXPORT_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class Classifier(nn.Module):
    """A trained model with its input normalization in front: raw pixels in, logits out.

    Keeping the normalization inside the module means PyTorch, ONNX and TorchScript all take the
    same input, and the statistics cannot drift away from the weights they were trained with.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


@dataclass
class Run:
    """A trained model loaded from a run folder, in eval mode on the CPU."""

    path: Path
    spec: dict[str, Any]
    classifier: Classifier

    @property
    def input_dims(self) -> tuple[int, int, int]:
        dims = tuple(int(d) for d in self.spec["data_config"]["input_dims"])
        return dims if len(dims) == 3 else (1, *dims)  # type: ignore[return-value]

    @property
    def labels(self) -> list[str]:
        return [str(label) for label in self.spec["data_config"]["mapping"]]

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Logits for raw pixels (uint8 or float on the 0-255 scale, N x C x H x W)."""
        if isinstance(pixels, np.ndarray):
            pixels = np.array(pixels, dtype=np.float32)  # a writable copy (memory-mapped splits are read-only)
        logits = self.classifier(torch.as_tensor(pixels).float())
        if not bool(torch.isfinite(logits).all()):  # finite weights can still overflow
            raise ZooError(f"the model of '{self.path}' gives logits that are not finite; its weights are out of "
                           "range (the run diverged): train again with a lower trainer.lr or trainer.grad_clip")
        return logits

    def predict(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Class probabilities (N x classes) for raw pixels."""
        return torch.softmax(self.logits(pixels), dim=1)


def load_run(run_dir: str | Path) -> Run:
    """Rebuild the model a run trained (see :func:`zoo.model_file.read_model`), ready to classify.

    The model's name is looked up in the registry, so a run trained with a plugin model needs
    that plugin installed; every problem is a one-line ZooError that names the file.
    """
    from zoo.model_file import WEIGHTS_FILE, read_model

    spec, model = read_model(run_dir)
    _refuse_non_finite(model, Path(run_dir) / WEIGHTS_FILE)
    normalization = spec["normalization"]
    if not np.isfinite(np.asarray([*normalization["mean"], *normalization["std"]], dtype=np.float64)).all():
        raise ZooError(f"{Path(run_dir) / 'model.json'} has normalization statistics that are not finite; "
                       "retrain the run")
    classifier = Classifier(model, normalization["mean"], normalization["std"]).eval()
    return Run(Path(run_dir), spec, classifier)


def _refuse_non_finite(model: nn.Module, weights_path: Path) -> None:
    """A diverged run's NaN or infinite weights would answer every question with ``nan``."""
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ZooError(f"{weights_path} holds weights that are not finite ('{bad[0]}'{more}): the run diverged; "
                       "train again with a lower trainer.lr or with trainer.grad_clip set")


def load_images(paths: Sequence[str | Path], input_dims: Sequence[int]) -> np.ndarray:
    """Read image files as uint8 (N, C, H, W) shaped like the training data.

    Any file Pillow reads works: it is converted to grey ("L") for one channel or "RGB" for
    three as the training images were (:func:`zoo.colour.to_mode`), and resized to (H, W) when
    its size differs, by the resize that ``data.image_size`` applied to the training images
    (:mod:`zoo.resize`), so a run trained at another size than its set's reads files as it read
    its training data. Anything else is a one-line ZooError naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    channels, height, width = (1, *input_dims) if len(input_dims) == 2 else tuple(input_dims)
    if channels not in (1, 3):
        raise ZooError(f"the model takes {channels}-channel images; only 1 (grey) and 3 (RGB) can be read from files")
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                converted = to_mode(image, mode)
        except FileNotFoundError as exc:
            raise ZooError(f"image '{path}' does not exist") from exc
        except IsADirectoryError as exc:
            raise ZooError(f"image '{path}' is a folder; pass image files") from exc
        except UnidentifiedImageError as exc:
            raise ZooError(f"image '{path}' is not an image Pillow can read (PNG, JPEG, BMP, ...)") from exc
        except (OSError, ValueError) as exc:
            raise ZooError(f"image '{path}' cannot be read: {exc}") from exc
        except ZooError as exc:
            raise ZooError(f"image '{path}': {exc}") from None
        array = np.asarray(resized(converted, (height, width)), dtype=np.uint8)
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    return np.stack(arrays)


def top_k(probabilities: torch.Tensor, labels: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable (label, probability) pairs of each row, most probable first."""
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [[(labels[i], float(p)) for p, i in zip(row_p, row_i, strict=True)]
            for row_p, row_i in zip(values.tolist(), indices.tolist(), strict=True)]


def export(run: Run, fmt: Literal["onnx", "torchscript"], output: str | Path) -> Path:
    """Write the run's classifier as ONNX or TorchScript: float pixels (N, C, H, W) -> logits.

    The batch size is dynamic. The class names and the normalization travel with the file:
    ONNX metadata properties, or TorchScript ``_extra_files`` entry ``model.json``.
    """
    output = Path(output)
    example = torch.zeros(2, *run.input_dims)
    spec = json.dumps(run.spec)
    if fmt == "onnx":
        _require_onnx()
        _export_onnx(run.classifier, example, output, spec)
    elif fmt == "torchscript":
        with _torchscript_deprecation_quiet(), torch.no_grad():
            traced = torch.jit.trace(run.classifier, example)
            torch.jit.save(traced, str(output), _extra_files={"model.json": spec})
    else:
        raise ZooError(f"unknown export format '{fmt}'; choose one of {', '.join(EXPORT_FORMATS)}")
    return output


def _require_onnx() -> None:
    """ONNX export and its check need the ``export`` extra, which a plain install of the wheel lacks."""
    for name in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ZooError(f"--format onnx needs the {name} package, which is not installed here: "
                           "pip install 'zoo-launch[export]' (or: pip install onnx onnxruntime)") from exc


def _export_onnx(model: nn.Module, example: torch.Tensor, output: Path, spec: str) -> None:
    import onnx

    # The TorchScript-based exporter (dynamo=False) handles every model in the zoo in under a
    # second. The torch.export-based one (dynamo=True, torch's default since 2.9) also works
    # offline with onnxscript and gives the same logits, but took ~20 s for the small CNN on CPU
    # and logs every stage; switch to it when torch drops the legacy exporter.
    with _torchscript_deprecation_quiet():
        torch.onnx.export(
            model, (example,), str(output), input_names=["pixels"], output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
    proto = onnx.load(str(output))
    onnx.helper.set_model_props(proto, {"zoo.model": spec})
    onnx.save(proto, str(output))


def run_exported(path: str | Path, fmt: Literal["onnx", "torchscript"], pixels: np.ndarray) -> np.ndarray:
    """Logits from an exported file (onnxruntime for ONNX), to check it against PyTorch."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"pixels": pixels})[0]
    with _torchscript_deprecation_quiet(), torch.no_grad():
        module = torch.jit.load(str(path))
        return module(torch.from_numpy(pixels)).numpy()


@contextlib.contextmanager
def _torchscript_deprecation_quiet() -> Iterator[None]:
    """Silence the deprecation notices of torch.jit and of the TorchScript-based ONNX exporter.

    Both still work in torch 2.13 and were chosen on purpose (see :func:`_export_onnx`); the
    notices would only repeat that on every export.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)  # what torch 2.14 raises them as
        yield
