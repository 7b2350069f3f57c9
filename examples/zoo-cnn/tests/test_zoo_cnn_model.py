"""The zoo-cnn plugin's own tests: what its CI runs once the package is installed.

    pip install -e examples/zoo-cnn && pytest examples/zoo-cnn/tests
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import torch
from zoo_cnn import SmallCNN

from zoo import create_model, list_models, model_info
from zoo.cli import main as zoo


def test_registered_through_the_entry_point() -> None:
    assert "cnn" in list_models()
    info = model_info("cnn")
    assert info["source"] == f"zoo-cnn=={metadata.version('zoo-cnn')}"
    assert info["builder"] == "zoo_cnn.model.SmallCNN"
    assert set(info["hyperparameters"]) == {"channels", "hidden", "dropout"}


@pytest.mark.parametrize(
    ("input_dims", "classes"),
    [((1, 28, 28), 10), ((3, 32, 32), 5), ((3, 7, 9), 3), ((1, 1, 1), 2), ((28, 28), 10)],
)
def test_any_image_shape_and_class_count(input_dims: tuple[int, ...], classes: int) -> None:
    model = create_model("cnn", {"input_dims": input_dims, "mapping": [str(i) for i in range(classes)]})
    assert isinstance(model, SmallCNN)
    channels = 1 if len(input_dims) == 2 else input_dims[0]
    x = torch.randn(3, channels, *input_dims[-2:])
    assert model(x).shape == (3, classes)


def test_hyperparameters_change_the_network() -> None:
    config = {"input_dims": (1, 28, 28), "mapping": [str(i) for i in range(10)]}
    small = create_model("cnn", config, channels=[8], hidden=0)
    assert [m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)] == [8]
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 64 for m in small.modules())
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in create_model("cnn", config).parameters())


def test_zoo_models_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo(["models", "check", "cnn"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("PASS  cnn  zoo-cnn==")


@pytest.mark.parametrize(("override", "expected"), [
    ("model.channels=[]", "got [] (Tuple should have at least 1 item"),
    ("model.channels=[16,0]", "expects tuple[int >= 1, ...]"),
    ("model.hidden=-1", "expects int >= 0, got -1"),
    ("model.dropout=1", "expects float >= 0, < 1, got 1"),
])
def test_out_of_range_hyperparameters_are_refused_before_work(
    override: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line when the recipe is loaded: no data read, no run folder made."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "cnn.yaml"
    run = tmp_path / "run"
    assert zoo(["train", str(recipe), override, f"output_dir={run}", "data.path=/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: override '{override}': model 'cnn' hyperparameter") and err.count("\n") == 1, err
    assert expected in err, err
    assert not run.exists()
