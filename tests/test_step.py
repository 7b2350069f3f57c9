"""trainer.compile: where it can run, and the clean CPU fallback (the GPU path needs a lent GPU)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from zoo.data import ImageClassificationData
from zoo.fit import fit, step_mode
from zoo.recipe import TrainerSection
from zoo.registry import create_model
from zoo.step import compile_fallback_reason

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_fallback_reasons_name_what_blocks_capture() -> None:
    assert compile_fallback_reason("none", CPU, 1, True, 1, "no", None) is None
    assert "needs a CUDA device" in compile_fallback_reason("graph", CPU, 1, True, 1, "no", None)
    assert "needs a CUDA device" in compile_fallback_reason("torch", CPU, 1, True, 1, "no", None)
    assert compile_fallback_reason("graph", CUDA, 1, True, 1, "no", None) is None
    assert compile_fallback_reason("torch", CUDA, 4, False, 2, "bf16", 1.0) is None
    reason = compile_fallback_reason("graph", CUDA, 2, False, 1, "no", 1.0, "cosine")
    assert "several processes" in reason and "streamed batches" in reason
    assert "gradient clipping" in reason and "an LR schedule" in reason


@pytest.fixture(scope="module")
def slice_data(mnist_path: str) -> ImageClassificationData:
    data = ImageClassificationData(mnist_path, batch_size=256, seed=0)
    data.prepare_data()
    data.setup()
    return data


@pytest.mark.parametrize("mode", ["graph", "torch"])
def test_cpu_falls_back_to_the_plain_step_with_one_line(
    mode: str, slice_data: ImageClassificationData, capsys: pytest.CaptureFixture[str]
) -> None:
    accelerator = Accelerator(cpu=True)
    results = {}
    for compile_mode in ("none", mode):
        trainer = TrainerSection(epochs=1, compile=compile_mode)
        torch.manual_seed(0)
        model = create_model("mlp", slice_data.data_config, fc1=64, dropout=0.0)
        capsys.readouterr()
        assert step_mode(trainer, accelerator, resident=True) == "none"
        said = [line for line in capsys.readouterr().out.splitlines() if line]
        assert said == ([] if compile_mode == "none" else
                        [f"[zoo] trainer.compile={mode} needs a CUDA device; running the plain step on cpu"])
        results[compile_mode] = fit(model, slice_data, trainer, accelerator, seed=0, resident=True).history[-1]
    assert results[mode]["val_loss"] == results["none"]["val_loss"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on one)")
def test_captured_and_compiled_steps_match_the_plain_step_on_gpu(slice_data: ImageClassificationData) -> None:
    accelerator = Accelerator()
    results = {}
    for compile_mode in ("none", "graph", "torch"):
        trainer = TrainerSection(epochs=2, compile=compile_mode)
        torch.manual_seed(0)
        model = create_model("mlp", slice_data.data_config, fc1=64, dropout=0.0)
        mode = step_mode(trainer, accelerator, resident=True)
        assert mode == compile_mode  # nothing here forces a fallback on a GPU
        # 7,200 / 256 leaves a partial last batch: the eager path runs beside the captured one.
        results[compile_mode] = fit(model, slice_data, trainer, accelerator, seed=0, resident=True,
                                    mode=mode).history[-1]
    for compile_mode in ("graph", "torch"):
        assert results[compile_mode]["val_loss"] == pytest.approx(results["none"]["val_loss"], abs=1e-4)
        assert results[compile_mode]["train_loss"] == pytest.approx(results["none"]["train_loss"], abs=1e-4)
