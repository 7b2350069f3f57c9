"""Which decoded arrays answer for a local data folder, found without importing ``datasets``.

Importing ``datasets`` (and the pandas and pyarrow it pulls in) costs about 1.5 s on a 2-core
machine, more than training a small model for an epoch. For a data set on the Hub only
``datasets`` can say whether it changed, but a local folder is its files: their paths, sizes and
modification times, with the config name, the column choices, ``data.image_size`` and the
decoding rules (:data:`zoo.decode.PIXEL_RULES`), key the decoded arrays. The index file maps that
key to the cached pairs ``prepare_data`` wrote; a changed file changes the key, and the data set is
loaded and checked again.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path


def local_folder_key(path: str, name: str | None, image_column: str | None, label_column: str | None,
                     image_size: tuple[int, int] | None = None, rules: str = "") -> str | None:
    """A key for a local data folder's current contents, the column choices, the image size
    (None: the set's own) and the decoding ``rules`` (an index written under others points at
    pixels decoded by them), or None for a Hub id."""
    root = Path(path)
    if not root.is_dir():
        return None
    size = "" if image_size is None else f"\0{image_size[0]}x{image_size[1]}"
    digest = hashlib.sha1(f"{root.resolve()}\0{name}\0{image_column}\0{label_column}{size}\0{rules}".encode())
    for folder, subfolders, files in os.walk(root):  # top-down: pruning and sorting subfolders steers it
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))  # no .cache or .git
        for file in sorted(f for f in files if not f.startswith(".")):
            stat = (Path(folder) / file).stat()
            relative = os.path.relpath(Path(folder) / file, root)
            digest.update(f"\0{relative}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def index_folder(cache_dir: Path | None) -> Path:
    """Where the index lives: ``data.cache_dir``, else the ``datasets`` cache folder."""
    if cache_dir is not None:
        return cache_dir
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "datasets"


def index_path(folder: Path, key: str) -> Path:
    return folder / f"zoo-decoded-index-{key}.json"


def read_index(path: Path) -> dict[str, tuple[Path, Path]] | None:
    """The split -> (images, metadata) paths an index records, or None when there is none."""
    try:
        recorded = json.loads(path.read_text())
        return {split: (Path(pair[0]), Path(pair[1])) for split, pair in recorded["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def write_index(path: Path, decoded: dict[str, tuple[Path, Path]]) -> None:
    """Record where each split's decoded pair is; written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps({"splits": {s: [str(a), str(b)] for s, (a, b) in decoded.items()}}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
