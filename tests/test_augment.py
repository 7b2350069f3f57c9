"""``data.augment``: what the crops and flips do, and that they depend on (seed, epoch, step) alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.augment import apply, augment_share, draw


def test_a_crop_shifts_the_image_and_a_flip_mirrors_it() -> None:
    image = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) + 1
    # dy=0, dx=2 on a padding of 1: one row of padding on top, columns shifted left by one.
    shifted = apply(image, torch.tensor([[0, 2, 0]]), crop_padding=1)[0, 0]
    assert shifted[0].tolist() == [0, 0, 0, 0]
    assert shifted[1].tolist() == [2, 3, 4, 0]
    mirrored = apply(image, torch.tensor([[1, 1, 1]]), crop_padding=1)[0, 0]  # no shift, flipped
    assert torch.equal(mirrored, image[0, 0].flip(1))
    assert torch.equal(apply(image, torch.tensor([[1, 1, 0]]), crop_padding=1), image)


def test_choices_depend_on_seed_epoch_and_step_only() -> None:
    a = draw(0, 1, 5, 64, crop_padding=2, flip=True)
    assert torch.equal(a, draw(0, 1, 5, 64, crop_padding=2, flip=True))
    assert not torch.equal(a, draw(0, 1, 6, 64, crop_padding=2, flip=True))
    assert not torch.equal(a, draw(0, 2, 5, 64, crop_padding=2, flip=True))
    assert not torch.equal(a, draw(1, 1, 5, 64, crop_padding=2, flip=True))
    assert a[:, :2].min() >= 0 and a[:, :2].max() <= 4 and set(a[:, 2].tolist()) == {0, 1}
    assert draw(0, 1, 5, 64, crop_padding=2, flip=False)[:, 2].eq(0).all()


def test_shares_of_a_global_batch_are_augmented_as_the_whole_batch() -> None:
    images = torch.randn(10, 3, 8, 8)
    whole = augment_share(images, 3, 2, 7, offset=0, global_size=10, crop_padding=2, flip=True)
    halves = [augment_share(images[:5], 3, 2, 7, offset=0, global_size=10, crop_padding=2, flip=True),
              augment_share(images[5:], 3, 2, 7, offset=5, global_size=10, crop_padding=2, flip=True)]
    assert torch.equal(torch.cat(halves), whole)


@pytest.fixture(scope="module")
def coloured_digits(mnist_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """800 training and 200 test digits of the bundled sample, each drawn in a random colour on a
    random background, as RGB PNGs in a local parquet data set."""
    import datasets

    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("coloured-digits")
    source = datasets.load_dataset(mnist_path)
    for split, count in (("train", 800), ("test", 200)):
        part = source[split].select(range(count))
        images = []
        for image in part["image"]:
            ink = np.asarray(image, dtype=np.float32)[..., None] / 255
            colour, background = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            images.append(Image.fromarray((ink * colour + (1 - ink) * background).astype(np.uint8), "RGB"))
        coloured = datasets.Dataset.from_dict(
            {"image": images, "label": part["label"]},
            features=datasets.Features({"image": datasets.Image(), "label": part.features["label"]}))
        coloured.to_parquet(str(folder / f"{split}.parquet"))
    return folder


def _epochs(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records if r.get("kind") == "epoch"]


def test_colour_digits_train_with_augmentation_reproducibly_at_any_scale(
    launch_training, coloured_digits: Path, tmp_path: Path
) -> None:
    settings = [f"data.path={coloured_digits}", "tracking.wandb=false", "trainer.epochs=2", "model.fc1=64",
                "model.dropout=0", "data.batch_size=64", "data.augment.crop_padding=2"]
    for name, processes in (("a", 1), ("b", 1), ("two", 2)):
        launch_training("recipes/mlp.yaml", f"output_dir={tmp_path / name}", *settings, num_processes=processes)
    spec = json.loads((tmp_path / "a" / "model.json").read_text())
    assert spec["data_config"]["input_dims"] == [3, 28, 28] and len(spec["normalization"]["mean"]) == 3
    assert _epochs(tmp_path / "a") == _epochs(tmp_path / "b")  # the same seed: identical metrics
    one, two = _epochs(tmp_path / "a")[-1], _epochs(tmp_path / "two")[-1]
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
    first, last = _epochs(tmp_path / "a")[1:]
    assert last["train_loss"] < first["train_loss"]  # it learns (a small MLP on 800 coloured digits)
