"""``zoo export``: the output file is claimed before the export writes it, and never left half written.

The run folder is an untrained small MLP's, written the way a run writes it (``model.json`` and
``model.safetensors``): exporting it takes well under a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file

from zoo import inference
from zoo.cli import main as zoo
from zoo.registry import create_model

DATA_CONFIG = {"input_dims": [1, 28, 28], "mapping": [str(d) for d in range(10)]}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    model = create_model("mlp", DATA_CONFIG, fc1=8, fc2=8)
    save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    spec = {"name": "mlp", "hparams": {"fc1": 8, "fc2": 8}, "data_config": DATA_CONFIG,
            "normalization": {"mean": [33.3], "std": [78.6]}}
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


def test_an_output_that_cannot_be_created_is_one_line(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo(["export", str(run), "--format", "torchscript", "-o", "/proc/zoo-model.pt"]) == 2
    assert capsys.readouterr() == ("", "error: cannot write '/proc/zoo-model.pt': No such file or directory; "
                                       "pass another -o PATH\n")


def test_an_export_stopped_midway_leaves_no_file(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the exporter writes: the half-written file is removed, so the next export is not refused."""
    def interrupted(model: object, fmt: str, output: Path) -> Path:
        Path(output).write_bytes(b"half an ONNX file")
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zoo(["export", str(run), "--format", "onnx"])
    assert sorted(p.name for p in run.iterdir()) == ["model.json", "model.safetensors"]
    monkeypatch.undo()
    assert zoo(["export", str(run), "--format", "onnx"]) == 0 and (run / "model.onnx").stat().st_size > 1000


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_export_prints_no_deprecation_notices(run: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """torch.jit and the TorchScript-based ONNX exporter were chosen on purpose (see zoo.inference):
    their notices (FutureWarning since torch 2.14) would only repeat that on every export."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert zoo(["export", str(run), "--format", fmt, "-o", str(run / f"model.{fmt}")]) == 0
    assert [str(w.message) for w in caught if "deprecated" in str(w.message)] == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_onnx_without_the_export_extra_is_one_line(run: Path, missing: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`pip install zoo_launch-*.whl` has no [export] extra: say how to get it, leave no file behind."""
    monkeypatch.setitem(sys.modules, missing, None)  # what `import` meets when the package is not installed
    assert zoo(["export", str(run), "--format", "onnx"]) == 2
    assert capsys.readouterr().err == (f"error: --format onnx needs the {missing} package, which is not installed "
                                       "here: pip install 'zoo-launch[export]' (or: pip install onnx onnxruntime)\n")
    assert not (run / "model.onnx").exists()
