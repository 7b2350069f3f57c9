"""The data module: an image-classification set from Hugging Face ``datasets``, decoded once.

The seed notes' shape, kept: ``prepare_data()`` downloads and decodes (once per machine),
``setup()`` builds the splits and ``data_config``, and the ``*_dataloader()`` methods give plain
PyTorch loaders for use outside the launcher. What changes is the data path:

* Images are decoded once into a compact uint8 array stored beside the ``datasets`` cache, keyed
  by the data set's fingerprint; later runs memory-map it.
* :meth:`ImageClassificationData.batches` feeds the fit loop. When a split fits on the device it
  lives there, normalized, and every batch is an ``index_select`` over a seeded permutation: no
  per-sample ``__getitem__``, no collate, no per-batch host-to-device copy. Otherwise a
  DataLoader with workers and pinned memory streams the same batches.

Batches follow one plan whatever the number of processes: the permutation depends only on the
seed and the epoch, each global batch is cut into ``grad_accum`` micro-batches, and each process
takes its own contiguous share of every micro-batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import uuid
import warnings
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import HubUnreachable, ZooError
from zoo.local_index import index_folder, index_path, local_folder_key, read_index, write_index

VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")


@dataclass
class Split:
    """One split, decoded: uint8 images (N, C, H, W) and int64 labels, on the host."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _find_columns(features: Any, image_column: str | None, label_column: str | None) -> tuple[str, str]:
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_bytes(dataset: Any, column: str) -> list[bytes]:
    """The encoded bytes of every image in ``column``, read straight from Arrow.

    Going through Arrow skips building one ``{"bytes", "path"}`` dict per row; images stored as
    file paths instead of bytes are read from disk.
    """
    from datasets import Image

    column_data = dataset.cast_column(column, Image(decode=False)).with_format("arrow")[column]
    blobs = column_data.combine_chunks()
    data, paths = blobs.field("bytes").to_pylist(), blobs.field("path").to_pylist()
    return [blob if blob is not None else Path(path).read_bytes() for blob, path in zip(data, paths, strict=True)]


def decode_png_batch(blobs: list[bytes]) -> np.ndarray | None:
    """Decode same-sized 8-bit, non-interlaced grey or RGB PNGs together: uint8 (N, H, W[, 3]).

    Returns ``None`` when the images are anything else (other formats, sizes, bit depths,
    palettes, alpha), and the caller falls back to Pillow. Why not Pillow for these too: on
    small images such as MNIST its per-image Python overhead dominates (about 60 us per
    28x28 digit), while here each image costs one ``zlib`` call and the row filters are undone
    for all images at once, row by row.
    """
    header = blobs[0][8:33]  # IHDR: length, type, width, height, depth, colour, method, filter, interlace
    if blobs[0][:8] != PNG_SIGNATURE or header[4:8] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header[8:21])
    if depth != 8 or interlace or colour not in (0, 2):
        return None
    channels = 1 if colour == 0 else 3
    stride = width * channels + 1  # one filter-type byte per row, then the pixels
    pixels = []
    for blob in blobs:
        if blob[8:33] != header or blob[:8] != PNG_SIGNATURE:
            return None
        position, idat = 33, []
        while position < len(blob):
            (length,) = struct.unpack_from(">I", blob, position)
            kind = blob[position + 4 : position + 8]
            if kind == b"IDAT":
                idat.append(blob[position + 8 : position + 8 + length])
            elif kind == b"IEND":
                break
            position += 12 + length
        pixels.append(zlib.decompress(idat[0] if len(idat) == 1 else b"".join(idat)))
    raw = np.frombuffer(b"".join(pixels), dtype=np.uint8)
    if raw.size != len(blobs) * height * stride:
        return None
    raw = raw.reshape(len(blobs), height, stride)
    if raw[:, :, 0].max() > 4:
        raise ZooError("a PNG image has an invalid row filter; the data set's images are corrupt")
    out = np.empty((len(blobs), height, width * channels), dtype=np.uint8)
    prior = np.zeros((len(blobs), width * channels), dtype=np.uint8)
    for row in range(height):
        kinds, line = raw[:, row, 0], raw[:, row, 1:]
        current = line.copy()
        sub, up, average, paeth = (np.flatnonzero(kinds == k) for k in (1, 2, 3, 4))
        if sub.size:  # each byte adds the reconstructed byte one pixel to its left
            current[sub] = np.cumsum(line[sub].reshape(len(sub), width, channels), axis=1,
                                     dtype=np.uint8).reshape(len(sub), -1)
        if up.size:
            current[up] = line[up] + prior[up]
        for chosen, predict in ((average, _average), (paeth, _paeth)):
            if chosen.size:  # left-to-right dependency: one column at a time, all images at once
                x, above = line[chosen].astype(np.int16), prior[chosen].astype(np.int16)
                done = np.zeros_like(x)
                for col in range(width * channels):
                    left = done[:, col - channels] if col >= channels else np.zeros(len(chosen), np.int16)
                    corner = above[:, col - channels] if col >= channels else np.zeros(len(chosen), np.int16)
                    done[:, col] = (x[:, col] + predict(left, above[:, col], corner)) & 0xFF
                current[chosen] = done.astype(np.uint8)
        out[:, row] = current
        prior = current
    return out.reshape(len(blobs), height, width, channels) if channels == 3 else out


def _average(left: np.ndarray, above: np.ndarray, corner: np.ndarray) -> np.ndarray:
    return (left + above) >> 1


def _paeth(left: np.ndarray, above: np.ndarray, corner: np.ndarray) -> np.ndarray:
    estimate = left + above - corner
    to_left, to_above, to_corner = np.abs(estimate - left), np.abs(estimate - above), np.abs(estimate - corner)
    return np.where((to_left <= to_above) & (to_left <= to_corner), left,
                    np.where(to_above <= to_corner, above, corner))


def _decode_pillow(blob: bytes, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as image:
        return np.asarray(image.convert(mode) if image.mode != mode else image)


def decode_pillow_batch(blobs: list[bytes]) -> np.ndarray:
    """Decode any images Pillow reads, grey ones as "L" and the rest as "RGB", in threads.

    Each thread takes one contiguous chunk (one task per image would cost more than a small
    image's decode).
    """
    from PIL import Image

    with Image.open(io.BytesIO(blobs[0])) as probe:
        mode = "L" if probe.mode in ("L", "1", "I", "I;16", "F") else "RGB"
    workers = max(1, min(os.cpu_count() or 1, len(blobs) // 256))
    chunks = [blobs[i::workers] for i in range(workers)]  # interleaved: equal work per thread
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(lambda chunk: [_decode_pillow(b, mode) for b in chunk], chunks))
    arrays: list[np.ndarray] = [np.empty(0)] * len(blobs)
    for i, chunk in enumerate(decoded):
        arrays[i::workers] = chunk
    if len({a.shape for a in arrays}) != 1:
        raise ZooError("the images have different sizes; resize them to one size first")
    return np.stack(arrays)


def decode_images(dataset: Any, column: str) -> np.ndarray:
    """Decode an Image column into one uint8 array (N, C, H, W).

    Same-sized 8-bit PNGs (MNIST, CIFAR as the Hub stores them) take the batched decoder;
    everything else goes through Pillow.
    """
    blobs = image_bytes(dataset, column)
    if not blobs:
        raise ZooError(f"column '{column}' is empty")
    try:
        stacked = decode_png_batch(blobs)
    except ZooError as exc:
        raise ZooError(f"column '{column}': {exc}") from exc
    if stacked is None:
        try:
            stacked = decode_pillow_batch(blobs)
        except ZooError as exc:
            raise ZooError(f"column '{column}': {exc}") from exc
    return stacked[:, None] if stacked.ndim == 3 else np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


def _write_cached(images_path: Path, meta_path: Path, images: np.ndarray, meta: dict[str, Any]) -> None:
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


def _read_cached(images_path: Path, meta_path: Path) -> tuple[Split, list[str]] | None:
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


class ImageClassificationData:
    """MNIST-like image classification from the Hub or a local folder.

    Example (outside the launcher)::

        data = ImageClassificationData("ylecun/mnist", batch_size=128)
        data.prepare_data()
        data.setup()
        model = zoo.create_model("mlp", data.data_config)
        for images, labels in data.train_dataloader(): ...
    """

    def __init__(
        self,
        path: str = "ylecun/mnist",
        name: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        val_fraction: float = 0.1,
        seed: int = 0,
        image_column: str | None = None,
        label_column: str | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        self.path, self.name = path, name
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.seed = val_fraction, seed
        self.image_column, self.label_column = image_column, label_column
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.num_workers = num_workers
        self.splits: dict[str, Split] = {}
        self.data_config: dict[str, Any] = {}
        self.mean = torch.zeros(1)
        self.std = torch.ones(1)

    # -- preparation -------------------------------------------------------------------------

    def _load(self) -> Any:
        import logging

        import datasets

        # An unreachable Hub makes huggingface_hub log every retry; the one line below says it all.
        hub_logger = logging.getLogger("huggingface_hub")
        level = hub_logger.level
        hub_logger.setLevel(logging.ERROR)
        try:
            return datasets.load_dataset(self.path, self.name)
        except FileNotFoundError as exc:
            raise ZooError(
                f"data.path '{self.path}': no such local folder or Hub data set ({exc.__class__.__name__}); "
                "point data.path at a local copy, e.g. data.path=/data/mnist"
            ) from exc
        except (ConnectionError, OSError) as exc:
            raise HubUnreachable(
                f"data.path '{self.path}': the Hugging Face Hub cannot be reached ({type(exc).__name__}); "
                "download the set elsewhere and point data.path at the local folder"
            ) from exc
        except ValueError as exc:
            raise ZooError(f"data.path '{self.path}' (data.name={self.name!r}): {str(exc).splitlines()[0]}") from exc
        finally:
            hub_logger.setLevel(level)

    def _cache_paths(self, dataset: Any, split: str) -> tuple[Path, Path]:
        cache_files = getattr(dataset, "cache_files", None)
        if self.cache_dir is not None:
            folder = self.cache_dir
        elif cache_files:
            folder = Path(cache_files[0]["filename"]).parent
        else:
            folder = Path(os.environ.get("HF_DATASETS_CACHE", Path.home() / ".cache/huggingface/datasets"))
        key = hashlib.sha1(f"{dataset._fingerprint}:{self.image_column}:{self.label_column}".encode()).hexdigest()[:16]
        stem = folder / f"zoo-decoded-{split}-{key}"
        return stem.with_suffix(".images.npy"), stem.with_suffix(".meta.json")

    def prepare_data(self) -> None:
        """Load the data set and decode every split once into uint8 arrays in the cache.

        Run it on one process per machine (the launcher does); it is a no-op when the decoded
        arrays are already there.
        """
        self._decoded: dict[str, tuple[Path, Path]] = {}
        key = local_folder_key(self.path, self.name, self.image_column, self.label_column)
        index = index_path(index_folder(self.cache_dir), key) if key is not None else None
        recorded = read_index(index) if index is not None else None
        if recorded and all(_read_cached(*pair) is not None for pair in recorded.values()):
            self._decoded = recorded  # a local folder unchanged since it was decoded: no datasets import
            return
        dataset_dict = self._load()
        first = next(iter(dataset_dict.values()))
        image_col, label_col = _find_columns(first.features, self.image_column, self.label_column)
        for split, dataset in dataset_dict.items():
            images_path, meta_path = self._cache_paths(dataset, split)
            self._decoded[split] = (images_path, meta_path)
            if _read_cached(images_path, meta_path) is not None:
                continue
            images = decode_images(dataset, image_col)
            labels = dataset.with_format("arrow")[label_col].to_numpy().astype(np.int64)
            meta = {
                "labels": labels.tolist(),
                "shape": list(images.shape),
                "mapping": list(dataset.features[label_col].names),
                "source": f"{self.path}:{self.name or ''}:{split}",
            }
            _write_cached(images_path, meta_path, images, meta)
        if index is not None:
            write_index(index, self._decoded)

    # -- setup -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Build train, validation and test splits, ``data_config`` and the normalization."""
        if not getattr(self, "_decoded", None):
            self.prepare_data()
        raw: dict[str, Split] = {}
        mapping: list[str] = []
        for split, (images_path, meta_path) in self._decoded.items():
            cached = _read_cached(images_path, meta_path)
            if cached is None:
                raise ZooError(f"the decoded cache {images_path} is missing or damaged; run prepare_data() again")
            raw[split], mapping = cached
        if "train" not in raw:
            raise ZooError(f"data.path '{self.path}' has no 'train' split (splits: {', '.join(raw)})")
        train = raw["train"]
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(train))
        carve = max(1, round(self.val_fraction * len(train)))
        val_split = next((raw[s] for s in VALIDATION_SPLIT_NAMES if s in raw), None)
        test_split = raw.get("test")
        taken = 0
        if val_split is None:
            val_split = _subset(train, order[taken : taken + carve])
            taken += carve
        if test_split is None:
            test_split = _subset(train, order[taken : taken + carve])
            taken += carve
        if taken:
            train = _subset(train, np.sort(order[taken:]))
        else:
            train = Split(np.ascontiguousarray(train.images), train.labels)
        self.splits = {"train": train, "validation": val_split, "test": test_split}
        # Statistics of the training split only: validation and test never leak into training.
        self.mean, self.std = channel_statistics(train.images)
        self.data_config = {"input_dims": tuple(train.images.shape[1:]), "mapping": mapping}

    def normalization(self) -> dict[str, list[float]]:
        """Per-channel mean and std on the 0-255 scale, as recorded with a trained model."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) on any device -> float32, normalized with the training statistics."""
        shape = (1, -1, 1, 1)
        mean, std = self.mean.to(images.device).view(shape), self.std.to(images.device).view(shape)
        # In place on the one new float tensor: a whole split normalizes without two more copies.
        return images.float().sub_(mean).div_(std)

    # -- plain loaders, for use outside the launcher ---------------------------------------

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._dataloader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._dataloader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._dataloader("test", self.eval_batch_size, shuffle=False)

    def _dataloader(self, split: str, batch_size: int, shuffle: bool) -> torch.utils.data.DataLoader:
        plan = BatchPlan(len(self.splits[split]), batch_size, self.seed, shuffle)
        return self._streaming_loader(split, plan, epoch=0, rank=0, world_size=1, pin_memory=False,
                                      normalize=True)

    def _streaming_loader(
        self, split: str, plan: BatchPlan, epoch: int, rank: int, world_size: int,
        pin_memory: bool, normalize: bool, start_step: int = 0,
    ) -> torch.utils.data.DataLoader:
        data = self.splits[split]
        dataset = _UInt8Dataset(data, self if normalize else None)
        sampler = list(plan.rank_indices(epoch, rank, world_size, start_step))
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=[idx.tolist() for idx in sampler], num_workers=self.num_workers,
            pin_memory=pin_memory, collate_fn=_collate, persistent_workers=False,
        )

    # -- what the fit loop iterates ----------------------------------------------------------

    def batches(
        self, split: str, plan: BatchPlan, epoch: int, device: torch.device, rank: int = 0,
        world_size: int = 1, resident: bool = True, start_step: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's normalized batches of one epoch, on ``device``, in plan order.

        ``start_step`` skips the micro-batches already done (mid-epoch resume) without
        touching their data.
        """
        if resident:
            images, labels = self._resident(split, device)
            # The epoch's order goes to the device once; each batch is then a slice of it.
            for idx in plan.rank_indices(epoch, rank, world_size, start_step, device):
                yield images.index_select(0, idx), labels.index_select(0, idx)
            return
        loader = self._streaming_loader(split, plan, epoch, rank, world_size,
                                        pin_memory=device.type == "cuda", normalize=False, start_step=start_step)
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            yield self.normalize(images), labels.to(device, non_blocking=True)

    def _resident(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.__dict__.setdefault("_resident_cache", {})
        key = (split, str(device))
        if key not in cache:
            data = self.splits[split]
            # torch wants a writable array; a memory-mapped split is copied once, an in-memory one not.
            host = data.images if data.images.flags.writeable else np.array(data.images)
            images = torch.from_numpy(host).to(device)  # uint8 over the bus: a quarter of float32
            cache[key] = (self.normalize(images).contiguous(), torch.from_numpy(data.labels).to(device))
        return cache[key]

    def resident_bytes(self) -> int:
        """Device memory the normalized float32 splits would take."""
        return sum(s.images.size * 4 + s.labels.size * 8 for s in self.splits.values())


def channel_statistics(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of uint8 images (N, C, H, W), on the 0-255 scale.

    Computed exactly from a 256-bin histogram per channel, which is far cheaper than turning
    the whole split into floats (about 50 ms instead of 250 ms for MNIST's 47M pixels).
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for channel in range(images.shape[1]):
        with warnings.catch_warnings():  # a read-only memory map: bincount only reads it
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            pixels = torch.from_numpy(np.ascontiguousarray(images[:, channel])).reshape(-1)
        counts = torch.bincount(pixels, minlength=256).double()
        total = counts.sum()
        mean = (counts @ values) / total
        means.append(mean)
        stds.append(((counts @ (values - mean) ** 2) / (total - 1).clamp_min(1)).sqrt())
    return torch.stack(means).float(), torch.stack(stds).float().clamp_min(1e-6)


def _subset(split: Split, indices: np.ndarray) -> Split:
    return Split(np.ascontiguousarray(split.images[indices]), split.labels[indices])


class _UInt8Dataset(torch.utils.data.Dataset):
    def __init__(self, split: Split, normalizer: ImageClassificationData | None) -> None:
        self.split, self.normalizer = split, normalizer

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # Whole batches at once: one fancy-index per batch instead of one __getitem__ per sample.
        images = torch.from_numpy(np.ascontiguousarray(self.split.images[indices]))
        labels = torch.from_numpy(self.split.labels[indices])
        if self.normalizer is not None:
            images = self.normalizer.normalize(images)
        return images, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]


def _collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


@dataclass(frozen=True)
class BatchPlan:
    """The order of batches in an epoch, the same whatever the number of processes.

    A global batch of ``batch_size`` examples is cut into ``grad_accum`` micro-batches; each
    process takes its contiguous share of every micro-batch. A "step" here is a micro-batch.
    """

    num_examples: int
    batch_size: int
    seed: int
    shuffle: bool
    grad_accum: int = 1

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_examples)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=generator)

    @property
    def global_batches(self) -> int:
        return -(-self.num_examples // self.batch_size)

    @property
    def micro_steps(self) -> int:
        return self.global_batches * self.grad_accum

    def micro_batch_bounds(self, step: int) -> tuple[int, int]:
        """The [start, end) range of one micro-batch within the epoch's order."""
        batch, micro = divmod(step, self.grad_accum)
        start = batch * self.batch_size
        size = min(self.batch_size, self.num_examples - start)
        cuts = [start + (size * i) // self.grad_accum for i in range(self.grad_accum + 1)]
        return cuts[micro], cuts[micro + 1]

    def global_batch_size(self, step: int) -> int:
        batch = step // self.grad_accum
        return min(self.batch_size, self.num_examples - batch * self.batch_size)

    def rank_indices(
        self, epoch: int, rank: int, world_size: int, start_step: int = 0, device: torch.device | None = None
    ) -> Iterator[torch.Tensor]:
        order = self.order(epoch) if device is None else self.order(epoch).to(device)
        for step in range(start_step, self.micro_steps):
            start, end = self.micro_batch_bounds(step)
            size = end - start
            lo, hi = start + (size * rank) // world_size, start + (size * (rank + 1)) // world_size
            yield order[lo:hi]
