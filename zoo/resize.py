"""``data.image_size``: the one resize that training images (once, at decode time) and prediction inputs share.

The filter is Pillow's bilinear. When it shrinks an image its support widens with the reduction
factor, so every source pixel is averaged in (antialiased, no aliasing of thin strokes); when it
enlarges it is plain bilinear interpolation. Bicubic is a little sharper but overshoots at hard
edges such as a digit's ink on its background, and the overshoot is clipped at 0 and 255. Pillow
rather than ``torch.nn.functional.interpolate(antialias=True)``: prediction reads image files
through Pillow anyway, and one implementation for both means a file of a training image gives the
model exactly the pixels it was trained on, not pixels rounded differently.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def resized(image: Any, size: tuple[int, int]) -> Any:
    """A Pillow image at ``size`` = (height, width); the same image when it already is that size."""
    from PIL import Image

    height, width = size
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)


def resize_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 3) at ``size`` = (height, width), resized in threads.

    Pillow releases the GIL while it resamples; each thread takes an interleaved share of the images.
    """
    from PIL import Image

    if images.shape[1:3] == size:
        return images
    out = np.empty((len(images), *size, *images.shape[3:]), dtype=np.uint8)
    workers = max(1, min(os.cpu_count() or 1, len(images) // 256))

    def work(first: int) -> None:
        for i in range(first, len(images), workers):
            out[i] = np.asarray(resized(Image.fromarray(images[i]), size))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(workers)))
    return out
