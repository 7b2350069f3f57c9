"""``zoo predict`` and ``zoo export`` refuse a diverged run instead of answering ``nan``.

The run folders are written the way a run writes them (``model.json`` + ``model.safetensors``),
with the weights a diverged run leaves: NaN, or finite but so large that the logits overflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from zoo.cli import main
from zoo.registry import create_model

DATA_CONFIG = {"input_dims": [1, 28, 28], "mapping": [str(d) for d in range(10)]}


def diverged_run(folder: Path, poison: float) -> Path:
    """A small MLP's run folder whose first layer's weights were replaced by ``poison``."""
    folder.mkdir()
    model = create_model("mlp", DATA_CONFIG, fc1=8, fc2=8)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weights["fc1.weight"].fill_(poison)
    save_file(weights, str(folder / "model.safetensors"))
    spec = {"name": "mlp", "hparams": {"fc1": 8, "fc2": 8}, "data_config": DATA_CONFIG,
            "normalization": {"mean": [33.3], "std": [78.6]}}
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture
def digit(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("command", ["predict", "export"])
def test_nan_weights_are_refused(command: str, tmp_path: Path, digit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = diverged_run(tmp_path / "run", float("nan"))
    args = ["predict", str(run), str(digit)] if command == "predict" else ["export", str(run), "--format", "onnx"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"error: {run / 'model.safetensors'} holds weights that are not finite ('fc1.weight'): the run diverged; "
        "train again with a lower trainer.lr or with trainer.grad_clip set")
    assert "nan" not in captured.out
    assert not (run / "model.onnx").exists()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_overflowing_logits_are_refused(
    command: str, tmp_path: Path, digit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = diverged_run(tmp_path / "run", 3e38)  # finite, but the logits overflow to inf
    args = ["predict", str(run), str(digit)] if command == "predict" else ["export", str(run), "--format", "onnx"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: the model of '{run}' gives logits that are not finite"), captured.err
    assert "nan" not in captured.out
    assert not (run / "model.onnx").exists()


def test_export_parity_check_fails_on_nan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An exported file that answers NaN is a broken export, not one "within nan of PyTorch"."""
    import zoo.inference

    run = diverged_run(tmp_path / "run", 0.01)
    real = zoo.inference.run_exported
    monkeypatch.setattr(zoo.inference, "run_exported", lambda *a: real(*a) * np.float32("nan"))
    assert main(["export", str(run), "--format", "torchscript"]) == 2
    assert "logits differ from PyTorch's by nan; nothing written" in capsys.readouterr().err
    assert not (run / "model.pt").exists()
