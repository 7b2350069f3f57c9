"""Image columns of a ``datasets`` set decoded into one uint8 array (N, C, H, W).

The encoded bytes are read straight from Arrow, then decoded together: same-sized 8-bit PNGs by
the batched decoder of :mod:`zoo._png`, anything else by Pillow in threads. With ``data.image_size``
every image is resized here, once, by :mod:`zoo.resize`, and the cache holds the resized pixels.
Every split of a set is read in one colour mode, grey or RGB, decided once for the whole set
(:func:`dataset_mode`, the rules in :mod:`zoo.colour`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from zoo._png import decode_png_batch
from zoo.colour import channel_mode, packed_mode, to_mode
from zoo.data_checks import find_undecodable
from zoo.data_source import image_bytes, pack, packed_images
from zoo.errors import ZooError
from zoo.resize import resize_batch, resized

# Part of every decoded cache key: a new version when a change here gives any image other pixels,
# so that no cache decoded by the old rules is served (v2: the colour mode decided by the whole set,
# 16-bit grey scaled rather than clipped).
PIXEL_RULES = "pixels-v2"


def decoding_key(splits: Mapping[str, Any]) -> str:
    """What each split's decoded pixels depend on beyond its own rows: the rules, and every split.

    A colour image added to the test split makes the training split RGB too, so each split's
    cache entry is keyed by all the splits' fingerprints; a Hub set's splits rarely change alone.
    """
    fingerprints = ",".join(f"{split}={dataset._fingerprint}" for split, dataset in sorted(splits.items()))
    return f"{PIXEL_RULES}:{fingerprints}"


def dataset_mode(splits: Mapping[str, Any], column: str) -> str:
    """"L" or "RGB" for every split of a set: the mode its features declare, else "RGB" when any
    image of any split holds colour.

    One mode for all splits, because a model trained on three channels cannot take one-channel
    test images, and grey read as RGB loses nothing. Only image headers are read; a colour set
    stops at its first colour image.
    """
    declared = {split: mode for split, dataset in splits.items()
                if (mode := getattr(dataset.features.get(column), "mode", None))}
    modes = {channel_mode(mode) for mode in declared.values()}
    if len(modes) > 1:
        listed = ", ".join(f"{split} {mode}" for split, mode in declared.items())
        raise ZooError(f"the splits declare different image modes ({listed}) for column '{column}'; cast every "
                       f"split to one, e.g. dataset_dict.cast_column('{column}', datasets.Image(mode='RGB'))")
    if modes:
        return modes.pop()
    return "RGB" if any(packed_mode(packed_images(dataset, column)) == "RGB" for dataset in splits.values()) else "L"


def _decode_pillow(blob: bytes, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as image:
        converted = to_mode(image, mode)
        return np.asarray(resized(converted, size) if size is not None else converted)


def decode_pillow_batch(blobs: list[bytes], size: tuple[int, int] | None = None, mode: str | None = None) -> np.ndarray:
    """Decode any images Pillow reads as ``mode`` ("L" or "RGB"), in threads; uint8 (N, H, W[, 3]).

    Without ``mode`` the images decide it: "RGB" when any holds colour, else "L". Each thread
    takes one interleaved share (one task per image would cost more than a small image's
    decode). With ``size`` (height, width) each image is resized as it is decoded, so images of
    different sizes can make one array.
    """
    mode = mode or packed_mode(pack(blobs))
    workers = max(1, min(os.cpu_count() or 1, len(blobs) // 256))
    chunks = [blobs[i::workers] for i in range(workers)]  # interleaved: equal work per thread
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(lambda chunk: [_decode_pillow(b, mode, size) for b in chunk], chunks))
    arrays: list[np.ndarray] = [np.empty(0)] * len(blobs)
    for i, chunk in enumerate(decoded):
        arrays[i::workers] = chunk
    if len({a.shape for a in arrays}) != 1:
        raise ZooError("the images have different sizes; set data.image_size (e.g. data.image_size=32) "
                       "to resize them to one")
    return np.stack(arrays)


def decode_images(dataset: Any, column: str, split: str = "train", size: tuple[int, int] | None = None,
                  mode: str | None = None) -> np.ndarray:
    """Decode an Image column into one uint8 array (N, C, H, W), at ``size`` (height, width) if given.

    ``mode`` ("L" or "RGB") is the whole set's (:func:`dataset_mode`); without it this split
    decides alone. Same-sized 8-bit PNGs (MNIST, CIFAR as the Hub stores them) take the batched
    decoder, then one resize of the batch; everything else goes through Pillow, resized image by
    image. An image that cannot be decoded is named by split and row.
    """
    mode = mode or dataset_mode({split: dataset}, column)
    blobs = image_bytes(dataset, column)
    if not blobs:
        raise ZooError(f"split '{split}': column '{column}' is empty")
    try:
        stacked = decode_png_batch(blobs)
        if stacked is not None and stacked.ndim == 4 and mode == "L":
            stacked = None  # colour PNGs in a set declared grey: Pillow's own RGB-to-grey weights
        if stacked is None:
            stacked = decode_pillow_batch(blobs, size, mode)
        elif size is not None:
            stacked = resize_batch(stacked, size)
    except Exception as exc:  # find the row to blame, then say what it was
        undecodable = find_undecodable(blobs, split, column)
        if undecodable is not None:
            raise undecodable from None
        if isinstance(exc, ZooError):
            raise ZooError(f"split '{split}': column '{column}': {exc}") from None
        raise
    if stacked.ndim == 3 and mode == "RGB":  # grey PNGs of a colour set: the grey on all three channels,
        return np.repeat(stacked[:, None], 3, axis=1)  # as convert("RGB") gives (resizing commutes with it)
    return stacked[:, None] if stacked.ndim == 3 else np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))
