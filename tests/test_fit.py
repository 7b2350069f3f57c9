"""The fit loop, in process, on the real MNIST slice.

The loop promises one model per seed whatever the batching: gradient accumulation cuts each
global batch into micro-batches and the loss is scaled so the accumulated gradient is the global
batch's mean; the streamed (DataLoader) path feeds the same batches as the resident one. A small
model and one epoch make both checks cheap; dropout is off so the comparison is exact up to
float summation order.
"""

from __future__ import annotations

from typing import Any

import pytest
from accelerate import Accelerator
from accelerate.utils import set_seed

from zoo.data import ImageClassificationData
from zoo.fit import FitHooks, fit, prepare_training
from zoo.recipe import TrainerSection
from zoo.registry import create_model
from zoo.step import step_mode
from zoo.validation import evaluate_test


@pytest.fixture(scope="module")
def data(mnist_path: str) -> ImageClassificationData:
    data = ImageClassificationData(mnist_path, batch_size=128, num_workers=0)
    data.prepare_data()
    data.setup()
    return data


def train_once(data: ImageClassificationData, resident: bool, **trainer: Any) -> tuple[list[dict], dict]:
    accelerator = Accelerator(cpu=True)
    set_seed(0)
    model = create_model("mlp", data.data_config, fc1=64, fc2=32, dropout=0.0)
    records: list[dict] = []
    settings = TrainerSection(epochs=1, lr=1e-3, **trainer)
    data.place(accelerator.device, "device" if resident else "stream")
    training = prepare_training(model, data, settings, accelerator, seed=0,
                                mode=step_mode(settings, accelerator, data))
    fit(training, data, accelerator, hooks=FitHooks(on_epoch=records.append))
    return records, evaluate_test(training.model, data, accelerator)


def test_accumulation_and_streaming_train_the_same_model(data: ImageClassificationData) -> None:
    base, base_test = train_once(data, resident=True)
    assert [r["epoch"] for r in base] == [0, 1]
    assert base[1]["val_loss"] < base[0]["val_loss"]  # one epoch of training helped

    for label, resident, trainer in [("grad_accum=4", True, {"grad_accum": 4}), ("streamed", False, {})]:
        other, other_test = train_once(data, resident=resident, **trainer)
        assert other[1]["val_loss"] == pytest.approx(base[1]["val_loss"], abs=1e-4), label
        assert other[1]["train_loss"] == pytest.approx(base[1]["train_loss"], abs=1e-4), label
        assert other_test["test_acc"] == pytest.approx(base_test["test_acc"], abs=1e-3), label
