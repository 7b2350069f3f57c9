"""Checks on a data set before any training: class list, label range, empty splits, undecodable images.

Each failure is one ZooError that names the split and the row, so the bad example can be found;
they run while the data is prepared, before the run folder is written.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zoo.errors import ZooError


def class_names(feature: Any, column: str) -> list[str] | None:
    """The class list of a ClassLabel column; None for plain integer labels (derived from them later)."""
    names = getattr(feature, "names", None)
    if names is not None:
        return [str(name) for name in names]
    dtype = str(getattr(feature, "dtype", type(feature).__name__))
    if not dtype.startswith(("int", "uint")):
        raise ZooError(f"data.label_column '{column}' holds {dtype} values; labels must be a ClassLabel column "
                       "or integer class ids 0, 1, ... N-1")
    return None


def derived_class_names(labels: Mapping[str, np.ndarray]) -> list[str]:
    """"0" .. "N-1" for integer labels without a class list, N from the largest label of any split."""
    top = max((int(values.max()) for values in labels.values() if len(values)), default=-1)
    return [str(i) for i in range(top + 1)]


def check_labels(split: str, labels: np.ndarray, mapping: Sequence[str]) -> None:
    """Every label of ``split`` must index the class list (-1, "no label", included in the refusal)."""
    bad = np.flatnonzero((labels < 0) | (labels >= len(mapping)))
    if bad.size:
        row = int(bad[0])
        more = f" (and {bad.size - 1} more rows)" if bad.size > 1 else ""
        raise ZooError(f"split '{split}' row {row} has label {int(labels[row])}, outside the "
                       f"{len(mapping)} classes 0-{len(mapping) - 1}{more}; fix the labels or the class list")


def check_not_empty(sizes: Mapping[str, int], val_fraction: float, train_rows: int) -> None:
    """Refuse a split with no examples: its loss would be NaN and its accuracy meaningless."""
    if sizes["train"] == 0:
        raise ZooError(f"the training split is empty: data.val_fraction={val_fraction} of its {train_rows} rows went "
                       "to validation (and test); lower data.val_fraction")
    for split, size in sizes.items():
        if size == 0:
            raise ZooError(f"split '{split}' has no examples; give it some or remove it")


def find_undecodable(blobs: Sequence[bytes], split: str, column: str) -> ZooError | None:
    """The first image Pillow cannot decode, as an error naming its split and row; None if all decode."""
    from PIL import Image

    for row, blob in enumerate(blobs):
        try:
            with Image.open(io.BytesIO(blob)) as image:
                image.load()
        except Exception as exc:  # Pillow raises many kinds (OSError, SyntaxError, zlib.error, ...)
            reason = (str(exc).strip().splitlines() or [""])[0]
            return ZooError(f"split '{split}' row {row}: the image in column '{column}' cannot be decoded "
                            f"({type(exc).__name__}: {reason}); fix or drop that row")
    return None
