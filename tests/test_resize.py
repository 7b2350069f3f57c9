"""``data.image_size``: images resized once, as they are decoded, into a cache entry of their own size;
models, statistics and prediction follow the resized images.

Real data throughout: the bundled MNIST digits, decoded into a fresh cache folder, and one short
training run in process at 32 x 32 whose folder ``zoo predict`` then reads.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from zoo import data as zoo_data
from zoo.cli import main as zoo
from zoo.data import ImageClassificationData
from zoo.data_cache import cache_paths
from zoo.decode import decode_pillow_batch
from zoo.errors import ZooError
from zoo.inference import load_images, load_run
from zoo.local_index import local_folder_key
from zoo.resize import resize_batch
from zoo.run import main as train

REPO = Path(__file__).resolve().parents[1]
MLP_RECIPE = str(REPO / "recipes" / "mlp.yaml")
SIZES = (None, (28, 28), (32, 32), (28, 32), (32, 28))


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_the_resize_is_pillows_antialiased_bilinear_on_grey_and_colour() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)  # over 256 images: shared among threads
    colour = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    for images, (height, width) in ((grey, (32, 32)), (grey, (14, 21)), (colour, (40, 16))):
        expected = np.stack([np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
                             for image in images])
        np.testing.assert_array_equal(resize_batch(images, (height, width)), expected)
    assert resize_batch(grey, (28, 28)) is grey  # already that size: not even copied
    # Shrinking averages every source pixel: a one-pixel checkerboard becomes even grey, not stripes.
    checkerboard = (np.indices((28, 28)).sum(0) % 2 * 255).astype(np.uint8)[None]
    assert np.abs(resize_batch(checkerboard, (7, 7)).astype(int) - 127).max() <= 2


def test_decoding_resizes_images_of_any_size_into_one_array() -> None:
    blobs = [png(Image.new("L", (4, 3), 10)), png(Image.new("L", (5, 6), 200)), png(Image.new("RGBA", (9, 9)))]
    with pytest.raises(ZooError, match=r"different sizes; set data\.image_size"):
        decode_pillow_batch(blobs[:2])
    grey = decode_pillow_batch(blobs[:2], (8, 6))
    assert grey.shape == (2, 8, 6) and (grey[0] == 10).all() and (grey[1] == 200).all()
    assert decode_pillow_batch(blobs[:0:-1], (8, 6)).shape == (2, 8, 6, 3)  # a colour set: all RGB


def test_the_image_size_is_part_of_both_decoded_cache_keys(tmp_path: Path) -> None:
    dataset = SimpleNamespace(_fingerprint="abc123", cache_files=[])
    pairs = {cache_paths(dataset, "train", tmp_path, None, None, size) for size in SIZES}
    keys = {local_folder_key(str(tmp_path), None, None, None, size) for size in SIZES}
    assert len(pairs) == len(keys) == len(SIZES)  # the set's own size and every (H, W): each its own entry


def refuse_decoding(*args: object) -> None:
    raise AssertionError("decoded again although the cache holds this size")


def refuse_loading(self: ImageClassificationData) -> None:
    raise AssertionError("datasets was asked although the local index holds this size")


def test_each_size_is_decoded_once_into_its_own_cache_entry(
    mnist_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    native = ImageClassificationData(mnist_path, cache_dir=str(cache))
    native.setup()
    resized = ImageClassificationData(mnist_path, cache_dir=str(cache), image_size=32)
    resized.setup()
    assert native.data_config["input_dims"] == (1, 28, 28)
    assert resized.data_config["input_dims"] == (1, 32, 32)
    assert resized.splits["test"].images.shape == (2000, 1, 32, 32)
    np.testing.assert_array_equal(resized.splits["test"].images[:100, 0],
                                  resize_batch(np.asarray(native.splits["test"].images[:100, 0]), (32, 32)))
    assert not torch.equal(resized.std, native.std)  # the statistics are the resized images' own
    names = [path.name for path in cache.iterdir()]
    assert sum(name.endswith(".images.npy") for name in names) == 4, names  # two splits at two sizes
    assert sum("-index-" in name for name in names) == 2, names

    # Served again, each size from its own entry: first through the local folder's index alone...
    monkeypatch.setattr(zoo_data, "decode_images", refuse_decoding)
    monkeypatch.setattr(ImageClassificationData, "_load", refuse_loading)
    for size, side in ((None, 28), (32, 32), (None, 28)):
        again = ImageClassificationData(mnist_path, cache_dir=str(cache), image_size=size)
        again.setup()
        assert again.data_config["input_dims"] == (1, side, side)
    # ...then, the index gone (as for a Hub set, which has none), through the datasets cache's key.
    monkeypatch.undo()
    monkeypatch.setattr(zoo_data, "decode_images", refuse_decoding)
    for index in cache.glob("zoo-decoded-index-*"):
        index.unlink()
    for size, side in ((32, 32), (None, 28)):
        again = ImageClassificationData(mnist_path, cache_dir=str(cache), image_size=size)
        again.setup()
        assert again.splits["test"].images.shape == (2000, 1, side, side)


def test_a_run_at_32_pixels_is_built_for_them_and_predicts_through_the_same_resize(
    mnist_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datasets

    run = tmp_path / "run"
    assert train([MLP_RECIPE, f"data.path={mnist_path}", f"output_dir={run}", "data.image_size=32",
                  "model.fc1=64", "model.dropout=0", "trainer.epochs=1", "trainer.lr=2e-3",
                  "trainer.cpu_threads=1", "tracking.wandb=false"]) == 0  # one thread: a tiny MLP on a busy machine
    assert yaml.safe_load((run / "recipe.yaml").read_text())["data"]["image_size"] == [32, 32]
    spec = json.loads((run / "model.json").read_text())
    assert spec["data_config"]["input_dims"] == [1, 32, 32]
    assert load_file(str(run / "model.safetensors"))["fc1.weight"].shape == (64, 32 * 32)
    assert json.loads((run / "summary.json").read_text())["test_acc"] >= 0.85

    # The first test digits as the files a user would have: 28 x 28 PNGs, as the set stores them.
    test = datasets.load_dataset(mnist_path, split="test").cast_column("image", datasets.Image(decode=False))
    paths, labels = [], []
    for i, row in enumerate(test.select(range(20))):
        paths.append(tmp_path / f"digit{i}.png")
        paths[-1].write_bytes(row["image"]["bytes"])
        labels.append(str(row["label"]))
    # Prediction reads them into exactly the pixels the run trained and tested on.
    trained_on = ImageClassificationData(mnist_path, image_size=32)  # the run's cache: decoded once already
    trained_on.setup()
    np.testing.assert_array_equal(load_images(paths, load_run(run).input_dims), trained_on.splits["test"].images[:20])
    capsys.readouterr()  # the training run's own output
    assert zoo(["predict", str(run), *map(str, paths), "--json"]) == 0
    top1 = [record["predictions"][0]["label"] for record in json.loads(capsys.readouterr().out)]
    assert sum(p == t for p, t in zip(top1, labels, strict=True)) >= 17, (top1, labels)
