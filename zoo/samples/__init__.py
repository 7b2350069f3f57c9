"""Data that ships inside the package, so a lone clone or an installed wheel can train and test offline.

``mnist/``: 10,000 real MNIST digits (train 8,000, test 2,000) in the Hub layout of ``ylecun/mnist``
(parquet shards and the dataset card), loadable with ``datasets.load_dataset(str(mnist_path()))``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def mnist_path() -> Path:
    """The folder of the bundled MNIST sample (a real directory: the wheel installs it unzipped)."""
    return Path(str(files(__name__) / "mnist"))
