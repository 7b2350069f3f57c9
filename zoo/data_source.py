"""Where the images come from: a ``datasets`` set from the Hub or a local folder, and its columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def image_sources(dataset: Any, column: str) -> list[bytes | Path]:
    """Every image of ``column`` as Arrow holds it: its encoded bytes, or the path of its file.

    Going through Arrow skips building one ``{"bytes", "path"}`` dict per row; the files of images
    stored as paths are not read here, so a pass over headers alone reads only their first bytes.
    """
    from datasets import Image

    column_data = dataset.cast_column(column, Image(decode=False)).with_format("arrow")[column]
    blobs = column_data.combine_chunks()
    data, paths = blobs.field("bytes").to_pylist(), blobs.field("path").to_pylist()
    return [blob if blob is not None else Path(path) for blob, path in zip(data, paths, strict=True)]


def image_bytes(dataset: Any, column: str) -> list[bytes]:
    """The encoded bytes of every image in ``column``; images stored as file paths are read from disk."""
    return [source if isinstance(source, bytes) else source.read_bytes() for source in image_sources(dataset, column)]
