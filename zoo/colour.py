"""Grey or colour: the mode a data set's images are read in, and the conversion decoding and prediction share.

A model takes one channel count, so a whole data set is read either as grey ("L", one channel) or as
"RGB" (three), never image by image: one colour image anywhere in the set makes the set RGB and its
grey images three equal channels. That loses nothing, where reading a colour image as grey would
lose its colour. The decision reads image headers only: for PNGs the colour type in their first 26
bytes, read for a whole column at once, for other formats what ``Image.open`` reads before the
pixels (for a small image that open costs more than the batched PNG decoder takes to decode it
whole, hence the PNG shortcut).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from zoo._png import png_colour_types
from zoo.data_source import PackedImages
from zoo.errors import ZooError

# Modes with one channel of information once alpha is dropped; "I", "I;16*" and "F" are deeper than 8 bits.
HIGH_DEPTH_GREY = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
GREY_MODES = frozenset({"1", "L", "LA", "La"}) | HIGH_DEPTH_GREY
PNG_GREY, PNG_COLOUR = [0, 4], [2, 6]  # PNG colour types; 3 (palette) is as grey as its palette


def channel_mode(mode: str) -> str:
    """"L" or "RGB": what a set whose images are (or are declared) of Pillow mode ``mode`` is read as."""
    return "L" if mode in GREY_MODES else "RGB"


def is_colour(image: Any) -> bool:
    """Whether an opened Pillow image holds colour, from its mode (and palette): its pixels are not read.

    An RGB image whose pixels happen to be grey still counts as colour: telling would mean decoding
    every image twice, and a grey set read as RGB costs memory, never information.
    """
    if image.mode in ("P", "PA"):
        # As grey as its palette. Every entry counts, used or not: finding the used ones means
        # decoding the pixels, and erring towards colour again loses nothing.
        palette = image.getpalette() or []
        return any(palette[i] != palette[i + 1] or palette[i] != palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return image.mode not in GREY_MODES


def source_is_colour(source: bytes | Path) -> bool:
    """Whether an encoded image (its bytes, or its file) holds colour, from its header alone.

    An image Pillow cannot open counts as grey here: the decode that follows names its row.
    """
    from PIL import Image

    try:
        if isinstance(source, Path):  # a PNG file's colour type is in its first bytes: no need to open it
            with open(source, "rb") as file:
                header = np.frombuffer(file.read(26), np.uint8)
            colour_type = png_colour_types(header, np.zeros(1, np.int64), np.array([header.size]))[0]
            if colour_type in PNG_GREY + PNG_COLOUR:
                return bool(colour_type in PNG_COLOUR)
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return is_colour(image)
    except Exception:  # Pillow raises many kinds (OSError, SyntaxError, ...); decoding reports them
        return False


def packed_mode(images: PackedImages) -> str:
    """"RGB" when any image of a column holds colour, else "L".

    PNGs stored as bytes answer from their header's colour type, all at once; palette PNGs, other
    formats and images stored as files are opened one by one.
    """
    types = png_colour_types(images.data, images.starts, images.ends)
    if np.isin(types, PNG_COLOUR).any():
        return "RGB"
    others = np.flatnonzero(~np.isin(types, PNG_GREY))
    return "RGB" if any(source_is_colour(images.source(int(row))) for row in others) else "L"


def to_mode(image: Any, mode: str) -> Any:
    """A Pillow image as ``mode`` ("L" or "RGB"), the same way for training images and prediction inputs.

    Alpha is dropped, not composited onto a background: the set does not say which background, and
    dropping it is what ``datasets``' own ``Image(mode=...)`` does, so a set declared RGB gives the
    same pixels either way. Grey deeper than 8 bits is scaled onto 0-255 first: Pillow's
    ``convert`` clips it, which turns a 16-bit image nearly all white.
    """
    if image.mode in HIGH_DEPTH_GREY:
        image = _to_8bit(image)
    if image.mode == mode:
        return image
    try:
        return image.convert(mode)
    except ValueError as exc:  # e.g. LAB, which Pillow converts to RGB only
        raise ZooError(f"an image of mode {image.mode} cannot be converted to {mode} ({exc}); "
                       "convert the images to RGB or L first") from None


def _to_8bit(image: Any) -> Any:
    """16-bit and float grey images scaled onto 0-255."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and values.max() <= 1.0:
        top = 1.0  # float images in [0, 1]
    elif image.mode.startswith("I;16") or values.max() > 255:
        top = 65535.0
    else:
        top = 255.0
    return Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8))
