"""The example plugin end to end: install it, train its CNN, then predict and export with the run.

One training run (module scope) serves every test here: the example package is pip-installed
into this environment if it is not already, its recipe is trained with ``accelerate launch`` on
the real MNIST slice, and the run folder it leaves is what ``zoo predict`` and ``zoo export`` use.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.forked_runs import ForkedRuns
from zoo.cli import main as zoo
from zoo.inference import load_images, load_run

pytestmark = pytest.mark.slow  # the module's run trains the CNN to 98%

EXAMPLE = REPO / "examples" / "zoo-cnn"


def ensure_installed() -> None:
    """Install examples/zoo-cnn as a user would, unless scripts/setup.sh already did."""
    try:
        importlib.metadata.distribution("zoo-cnn")
    except importlib.metadata.PackageNotFoundError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(EXAMPLE)], check=True, timeout=300)
        from zoo.registry import reset_plugins

        reset_plugins()


@pytest.fixture(scope="module")
def cnn_run(mnist_path: str, forked_runs: ForkedRuns, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_installed()
    run = tmp_path_factory.mktemp("cnn") / "run"
    argv = [str(EXAMPLE / "recipes" / "cnn.yaml"), f"data.path={mnist_path}", f"output_dir={run}",
            "tracking.wandb=false"]
    log = run.parent / "train.log"
    assert forked_runs.run(argv, log) == 0, log.read_text()[-5000:]  # python launch/train.py, forked
    return run


@pytest.fixture(scope="module")
def test_split(cnn_run: Path, mnist_path: str) -> tuple[np.ndarray, np.ndarray]:
    """The slice's test split as the training run saw it: uint8 (N, 1, 28, 28) and labels."""
    from zoo.data import ImageClassificationData

    data = ImageClassificationData(mnist_path)
    data.setup()
    split = data.splits["test"]
    return np.asarray(split.images), split.labels


def test_cnn_plugin_trains_to_98_percent(cnn_run: Path, test_split: tuple[np.ndarray, np.ndarray]) -> None:
    summary = json.loads((cnn_run / "summary.json").read_text())
    assert summary["test_acc"] >= 0.98, summary
    spec = json.loads((cnn_run / "model.json").read_text())
    assert spec["name"] == "cnn"
    # The run folder alone rebuilds the model: its accuracy on the test split is the run's.
    images, labels = test_split
    run = load_run(cnn_run)
    accuracy = float((run.logits(images).argmax(1).numpy() == labels).mean())
    assert accuracy == pytest.approx(summary["test_acc"], abs=1e-9)


def write_digits(mnist_path: str, folder: Path, count: int) -> tuple[list[Path], list[str]]:
    """The first ``count`` test images of the slice as PNG files, exactly as the data set stores them."""
    import datasets

    test = datasets.load_dataset(mnist_path, split="test").cast_column("image", datasets.Image(decode=False))
    paths, labels = [], []
    for i, row in enumerate(test.select(range(count))):
        path = folder / f"digit{i}.png"
        path.write_bytes(row["image"]["bytes"])
        paths.append(path)
        labels.append(str(row["label"]))
    return paths, labels


def test_predict_real_digits_in_any_mode_and_size(
    cnn_run: Path, mnist_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    paths, labels = write_digits(mnist_path, tmp_path, 20)
    assert zoo(["predict", str(cnn_run), *map(str, paths), "--top-k", "3", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in records] == list(map(str, paths))
    top1 = [r["predictions"][0]["label"] for r in records]
    assert sum(p == t for p, t in zip(top1, labels, strict=True)) >= 19, (top1, labels)
    for record in records:
        probabilities = [p["probability"] for p in record["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6

    # The same digit as RGBA at twice the size and as an RGB JPEG: converted, resized, same answer.
    with Image.open(paths[0]) as digit:
        digit.convert("RGBA").resize((56, 56)).save(tmp_path / "big.png")
        digit.convert("RGB").save(tmp_path / "colour.jpg", quality=95)
    assert zoo(["predict", str(cnn_run), str(tmp_path / "big.png"), str(tmp_path / "colour.jpg")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["IMAGE", "RANK", "LABEL", "PROBABILITY"]
    assert [line.split()[2] for line in out[1:]] == [top1[0], top1[0]]


def test_images_are_shaped_like_the_training_data(mnist_path: str, tmp_path: Path) -> None:
    paths, _ = write_digits(mnist_path, tmp_path, 2)
    grey = load_images(paths, (1, 28, 28))
    assert grey.shape == (2, 1, 28, 28) and grey.dtype == np.uint8
    from PIL import Image

    with Image.open(paths[0]) as digit:
        assert np.array_equal(grey[0, 0], np.asarray(digit))  # already the right mode and size: untouched
    colour = load_images(paths, (3, 16, 20))
    assert colour.shape == (2, 3, 16, 20)
    assert np.array_equal(colour[:, 0], colour[:, 2])  # grey to RGB: three equal channels


def test_predict_bad_inputs_are_one_line_errors(
    cnn_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = {
        (str(tmp_path / "missing-run"), str(text)): f"error: run folder '{tmp_path / 'missing-run'}' does not exist",
        (str(tmp_path), str(text)): f"error: '{tmp_path}' has no model.json",
        (str(cnn_run), str(text)): f"error: image '{text}' is not an image Pillow can read",
        (str(cnn_run), str(tmp_path / "gone.png")): f"error: image '{tmp_path / 'gone.png'}' does not exist",
    }
    for args, expected in cases.items():
        assert zoo(["predict", *args]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith(expected) and captured.err.count("\n") == 1, captured.err
    assert zoo(["predict", str(cnn_run), str(text), "--top-k", "0"]) == 2
    assert capsys.readouterr().err == "error: --top-k must be at least 1, got 0\n"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_the_test_split(
    fmt: str, cnn_run: Path, test_split: tuple[np.ndarray, np.ndarray], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / f"cnn.{fmt}"
    assert zoo(["export", str(cnn_run), "--format", fmt, "-o", str(output)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {output} ({fmt};")
    images, labels = test_split
    pixels = images.astype(np.float32)
    expected = load_run(cnn_run).logits(pixels).numpy()
    if fmt == "onnx":
        import onnx
        import onnxruntime

        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        got = session.run(None, {"pixels": pixels})[0]
        spec = json.loads({p.key: p.value for p in onnx.load(str(output)).metadata_props}["zoo.model"])
    else:
        files = {"model.json": ""}
        module = torch.jit.load(str(output), _extra_files=files)
        with torch.no_grad():
            got = module(torch.from_numpy(pixels)).numpy()
        spec = json.loads(files["model.json"])
    assert got.shape == (len(labels), 10)
    assert float(np.abs(got - expected).max()) <= 1e-5
    assert spec["data_config"]["mapping"] == [str(d) for d in range(10)]

    before = output.read_bytes()
    assert zoo(["export", str(cnn_run), "--format", fmt, "-o", str(output)]) == 2
    assert "already exists and is never overwritten" in capsys.readouterr().err
    assert output.read_bytes() == before


