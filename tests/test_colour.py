"""Grey or colour from an image's header, as the opened image would say, and the shared conversion."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.colour import is_colour, packed_mode, source_is_colour, to_mode
from zoo.data_source import pack
from zoo.errors import ZooError

SIZE = (5, 4)


def palette(entries: list[tuple[int, int, int]]) -> Image.Image:
    image = Image.new("P", SIZE, 0)
    image.putpalette([value for entry in entries for value in entry])
    return image


CASES = [  # name, image, format, holds colour
    ("bilevel", Image.new("1", SIZE, 1), "PNG", False),
    ("grey", Image.new("L", SIZE, 50), "PNG", False),
    ("grey-alpha", Image.new("LA", SIZE, (50, 9)), "PNG", False),
    ("deep-grey", Image.fromarray(np.full((4, 5), 40000, dtype=np.uint16)), "PNG", False),
    ("grey-palette", palette([(v, v, v) for v in range(256)]), "PNG", False),
    ("colour-palette", palette([(0, 0, 0), (200, 0, 100)]), "PNG", True),  # an unused coloured entry counts
    ("colour", Image.new("RGB", SIZE, (10, 200, 30)), "PNG", True),
    ("colour-alpha", Image.new("RGBA", SIZE, (10, 200, 30, 9)), "PNG", True),
    ("grey-jpeg", Image.new("L", SIZE, 50), "JPEG", False),
    ("colour-jpeg", Image.new("RGB", SIZE, (10, 200, 30)), "JPEG", True),
    ("cmyk-jpeg", Image.new("CMYK", SIZE, (10, 20, 30, 40)), "JPEG", True),
    ("grey-palette-gif", palette([(v, v, v) for v in range(256)]), "GIF", False),
    ("grey-bmp", Image.new("L", SIZE, 50), "BMP", False),
]


@pytest.mark.parametrize(("name", "image", "fmt", "colour"), CASES, ids=[case[0] for case in CASES])
def test_the_header_tells_grey_from_colour_as_the_opened_image_does(
    tmp_path: Path, name: str, image: Image.Image, fmt: str, colour: bool
) -> None:
    out = io.BytesIO()
    image.save(out, format=fmt)
    blob = out.getvalue()
    with Image.open(io.BytesIO(blob)) as opened:
        assert is_colour(opened) is colour  # the PNG shortcut below must agree with Pillow's own reading
    assert source_is_colour(blob) is colour
    (tmp_path / name).write_bytes(blob)
    assert source_is_colour(tmp_path / name) is colour  # an image stored as a file: only its header is read
    grey_first = io.BytesIO()
    Image.new("L", SIZE).save(grey_first, format="PNG")
    assert packed_mode(pack([grey_first.getvalue(), blob])) == ("RGB" if colour else "L")  # the set, not its first


def test_what_pillow_cannot_open_is_left_to_the_decoder_and_lab_converts_only_to_rgb() -> None:
    assert source_is_colour(b"not an image") is False  # the decode that follows names the row
    with pytest.raises(ZooError, match="an image of mode LAB cannot be converted to L"):
        to_mode(Image.new("LAB", SIZE), "L")
    assert to_mode(Image.new("LAB", SIZE), "RGB").mode == "RGB"
