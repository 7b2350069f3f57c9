"""The decoded cache: one split's uint8 images and its labels, written atomically, read memory-mapped.

Each split is a pair beside the ``datasets`` cache (or in ``data.cache_dir``), keyed by the data
set's fingerprint, the chosen columns, ``data.image_size`` (the pixels are stored resized) and what
else the pixels depend on (:func:`zoo.decode.decoding_key`: the decoding rules and the other splits):
``zoo-decoded-<split>-<key>.images.npy`` and ``.meta.json`` (labels, shape, class names, source).
Later runs memory-map the images.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Split:
    """One split, decoded: uint8 images (N, C, H, W) and int64 labels, on the host."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def cache_paths(dataset: Any, split: str, cache_dir: Path | None, image_column: str | None,
                label_column: str | None, image_size: tuple[int, int] | None = None,
                decoding: str = "") -> tuple[Path, Path]:
    """Where one split's decoded pair lives: ``cache_dir``, else beside the ``datasets`` cache.

    ``decoding`` is what else its pixels depend on (:func:`zoo.decode.decoding_key`)."""
    cache_files = getattr(dataset, "cache_files", None)
    if cache_dir is not None:
        folder = cache_dir
    elif cache_files:
        folder = Path(cache_files[0]["filename"]).parent
    else:
        folder = Path(os.environ.get("HF_DATASETS_CACHE", Path.home() / ".cache/huggingface/datasets"))
    size = "" if image_size is None else f":{image_size[0]}x{image_size[1]}"
    named = f"{dataset._fingerprint}:{image_column}:{label_column}{size}:{decoding}"
    key = hashlib.sha1(named.encode()).hexdigest()[:16]
    stem = folder / f"zoo-decoded-{split}-{key}"
    return stem.with_suffix(".images.npy"), stem.with_suffix(".meta.json")


def write_cached(images_path: Path, meta_path: Path, images: np.ndarray, meta: dict[str, Any]) -> None:
    """Write one split's decoded pair so that no reader ever sees half of it.

    Each file goes to a name unique to this writer and is renamed into place (atomic on one
    file system), images first: the metadata is what marks the pair complete, and it records
    the array's shape, which readers check. Two writers racing (say, two machines sharing a
    cache folder) decode the same fingerprint to the same bytes, so either's rename wins.
    """
    images_path.parent.mkdir(parents=True, exist_ok=True)
    token = f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_images = images_path.with_name(f"{images_path.name}.{token}.npy")
    tmp_meta = meta_path.with_name(f"{meta_path.name}.{token}")
    try:
        np.save(tmp_images, images)
        os.replace(tmp_images, images_path)
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, meta_path)
    finally:
        tmp_images.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)


def read_cached(images_path: Path, meta_path: Path) -> tuple[Split, list[str]] | None:
    """One split's decoded pair, the images memory-mapped; ``None`` if missing or inconsistent."""
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(images_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    labels = np.asarray(meta.get("labels", []), dtype=np.int64)
    if list(images.shape) != meta.get("shape") or len(labels) != len(images):
        return None
    return Split(images, labels), meta["mapping"]
