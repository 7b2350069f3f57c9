"""Image columns of a ``datasets`` set decoded into one uint8 array (N, C, H, W).

The encoded bytes are read straight from Arrow, then decoded together: same-sized 8-bit PNGs by
the batched decoder of :mod:`zoo._png`, anything else by Pillow in threads. With ``data.image_size``
every image is resized here, once, by :mod:`zoo.resize`, and the cache holds the resized pixels.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from zoo._png import decode_png_batch
from zoo.data_checks import find_undecodable
from zoo.data_source import image_bytes
from zoo.errors import ZooError
from zoo.resize import resize_batch, resized


def _decode_pillow(blob: bytes, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as image:
        converted = image.convert(mode) if image.mode != mode else image
        return np.asarray(resized(converted, size) if size is not None else converted)


def decode_pillow_batch(blobs: list[bytes], size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode any images Pillow reads, grey ones as "L" and the rest as "RGB", in threads.

    Each thread takes one interleaved share (one task per image would cost more than a small
    image's decode). With ``size`` (height, width) each image is resized as it is decoded, so
    images of different sizes can make one array.
    """
    from PIL import Image

    with Image.open(io.BytesIO(blobs[0])) as probe:
        mode = "L" if probe.mode in ("L", "1", "I", "I;16", "F") else "RGB"
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


def decode_images(dataset: Any, column: str, split: str = "train", size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an Image column into one uint8 array (N, C, H, W), at ``size`` (height, width) if given.

    Same-sized 8-bit PNGs (MNIST, CIFAR as the Hub stores them) take the batched decoder, then
    one resize of the batch; everything else goes through Pillow, resized image by image. An
    image that cannot be decoded is named by split and row.
    """
    blobs = image_bytes(dataset, column)
    if not blobs:
        raise ZooError(f"split '{split}': column '{column}' is empty")
    try:
        stacked = decode_png_batch(blobs)
        if stacked is None:
            stacked = decode_pillow_batch(blobs, size)
        elif size is not None:
            stacked = resize_batch(stacked, size)
    except Exception as exc:  # find the row to blame, then say what it was
        undecodable = find_undecodable(blobs, split, column)
        if undecodable is not None:
            raise undecodable from None
        if isinstance(exc, ZooError):
            raise ZooError(f"split '{split}': column '{column}': {exc}") from None
        raise
    return stacked[:, None] if stacked.ndim == 3 else np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))
