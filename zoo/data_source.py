"""Where the images come from: a ``datasets`` set from the Hub or a local folder, and its columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import HubUnreachable, ZooError


def load_dataset_dict(path: str, name: str | None = None) -> Any:
    """``datasets.load_dataset(path, name)``; what goes wrong is one ZooError naming ``data.path``."""
    import logging

    import datasets

    # An unreachable Hub makes huggingface_hub log every retry; the one line below says it all.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        return datasets.load_dataset(path, name)
    except FileNotFoundError as exc:
        raise ZooError(
            f"data.path '{path}': no such local folder or Hub data set; point data.path at a local copy "
            "(a folder datasets.load_dataset reads, e.g. parquet files per split) or a Hub name such as ylecun/mnist"
        ) from exc
    except (ConnectionError, OSError) as exc:
        raise HubUnreachable(
            f"data.path '{path}': the Hugging Face Hub cannot be reached ({type(exc).__name__}); "
            "download the set elsewhere and point data.path at the local folder"
        ) from exc
    except ValueError as exc:
        raise ZooError(f"data.path '{path}' (data.name={name!r}): {str(exc).splitlines()[0]}") from exc
    finally:
        hub_logger.setLevel(level)


def find_columns(features: Any, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """The image and label columns: the ones named, else the first Image and ClassLabel features."""
    from datasets import ClassLabel, Image

    def pick(wanted: str | None, kind: type, what: str) -> str:
        if wanted is not None:
            if wanted not in features:
                raise ZooError(f"data.{what}_column '{wanted}' is not a column; columns: {', '.join(features)}")
            return wanted
        found = [name for name, feature in features.items() if isinstance(feature, kind)]
        if not found:
            raise ZooError(
                f"no {kind.__name__} column among {', '.join(features)}; set data.{what}_column=NAME"
            )
        return found[0]

    return pick(image_column, Image, "image"), pick(label_column, ClassLabel, "label")


@dataclass
class PackedImages:
    """A column's encoded images as Arrow packs them, copied nowhere: row ``i`` is the bytes
    ``data[starts[i]:ends[i]]``, or, where those are empty, the file at ``paths[i]``."""

    data: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    paths: list[str | None]

    def source(self, row: int) -> bytes | Path:
        """One row's encoded bytes, or the path of its file."""
        start, end, path = int(self.starts[row]), int(self.ends[row]), self.paths[row]
        return self.data[start:end].tobytes() if end > start or path is None else Path(path)


def pack(blobs: list[bytes]) -> PackedImages:
    """Encoded images already read, packed as Arrow would hold them (one copy of their bytes)."""
    lengths = np.fromiter((len(blob) for blob in blobs), dtype=np.int64, count=len(blobs))
    ends = np.cumsum(lengths)
    return PackedImages(np.frombuffer(b"".join(blobs), np.uint8), ends - lengths, ends, [None] * len(blobs))


def _image_column(dataset: Any, column: str) -> Any:
    """``column`` as one Arrow array of ``{"bytes", "path"}`` structs, never decoded."""
    from datasets import Image

    return dataset.cast_column(column, Image(decode=False)).with_format("arrow")[column].combine_chunks()


def packed_images(dataset: Any, column: str) -> PackedImages:
    """The encoded images of ``column`` in Arrow's own buffer, for a pass over their headers.

    No bytes object per row: building 70,000 of them costs about as much as reading every MNIST
    digit's header from the shared buffer in one numpy gather.
    """
    import pyarrow as pa

    blobs = _image_column(dataset, column).flatten()  # flatten: the fields with the struct's offset applied
    encoded, paths = blobs[0], blobs[1].to_pylist()
    width = np.int64 if pa.types.is_large_binary(encoded.type) else np.int32
    _, offsets_buffer, data_buffer = encoded.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=width)[encoded.offset : encoded.offset + len(encoded) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
    stored = encoded.is_valid().to_numpy(zero_copy_only=False)  # a null's offsets may still span bytes
    starts = offsets[:-1].astype(np.int64)
    return PackedImages(data, starts, np.where(stored, offsets[1:], offsets[:-1]).astype(np.int64), paths)


def image_bytes(dataset: Any, column: str) -> list[bytes]:
    """The encoded bytes of every image in ``column``, read straight from Arrow.

    Going through Arrow skips building one ``{"bytes", "path"}`` dict per row; images stored as
    file paths instead of bytes are read from disk.
    """
    blobs = _image_column(dataset, column)
    data, paths = blobs.field("bytes").to_pylist(), blobs.field("path").to_pylist()
    return [blob if blob is not None else Path(path).read_bytes() for blob, path in zip(data, paths, strict=True)]
