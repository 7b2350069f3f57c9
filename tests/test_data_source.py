"""Encoded images straight from Arrow: packed in Arrow's own buffer for a pass over headers, or as bytes."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
from PIL import Image

from zoo.data_source import image_bytes, pack, packed_images


def png(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (3, 2), value).save(out, format="PNG")
    return out.getvalue()


def test_packed_images_are_the_rows_of_a_selection_whether_bytes_or_files(tmp_path: Path) -> None:
    (tmp_path / "file.png").write_bytes(png(99))
    rows = [{"bytes": png(value), "path": None} for value in range(6)]
    rows[4] = {"bytes": None, "path": str(tmp_path / "file.png")}  # an image stored as its file
    features = datasets.Features({"image": datasets.Image()})
    dataset = datasets.Dataset.from_dict({"image": rows}, features=features).select(range(2, 6))
    packed = packed_images(dataset, "image")
    sources = [packed.source(row) for row in range(len(dataset))]
    assert sources == [png(2), png(3), tmp_path / "file.png", png(5)]
    assert image_bytes(dataset, "image") == [png(2), png(3), png(99), png(5)]
    repacked = pack([png(7), b"", png(8)])
    assert [repacked.source(row) for row in range(3)] == [png(7), b"", png(8)]
