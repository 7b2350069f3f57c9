"""``zoo.offline``: which data.path the bundled sample may stand in for when the Hub cannot be reached.

The fallback itself, end to end (one line, trains, the run records the sample), is in
tests/test_quickstart.py and tests/test_wheel.py.
"""

from __future__ import annotations

import datasets

from zoo.offline import DEFAULT_DATA_PATH, offline_substitute
from zoo.recipe import Recipe
from zoo.samples import mnist_path


def test_only_the_default_set_falls_back_to_the_bundled_sample() -> None:
    assert DEFAULT_DATA_PATH == Recipe().data.path == "ylecun/mnist"
    assert offline_substitute("ylecun/mnist", None) == str(mnist_path())
    assert offline_substitute("ylecun/mnist", "mnist") == str(mnist_path())  # the Hub set's own config name
    assert offline_substitute("ylecun/mnist", "other") is None
    assert offline_substitute("fashion_mnist", None) is None
    assert offline_substitute("/data/mnist", None) is None


def test_the_bundled_sample_has_the_hub_sets_layout_and_card() -> None:
    sample = datasets.load_dataset(str(mnist_path()), "mnist")
    assert {split: len(rows) for split, rows in sample.items()} == {"train": 8000, "test": 2000}
    assert sample["train"].features["label"].names == [str(d) for d in range(10)]
    card = (mnist_path() / "README.md").read_text()
    assert "license: mit" in card and "Creative Commons Attribution-Share Alike 3.0" in card
