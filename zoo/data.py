"""The data module: an image-classification set from Hugging Face ``datasets``, decoded once.

The usual data-module shape: ``prepare_data()`` downloads and decodes (once per machine),
``setup()`` builds the splits and ``data_config``, and the ``*_dataloader()`` methods give plain
PyTorch loaders for use outside the launcher. What the launcher adds:

* Images are decoded once into a compact uint8 array stored beside the ``datasets`` cache, keyed
  by the data set's fingerprint; later runs memory-map it (:mod:`zoo.data_cache`).
* :meth:`ImageClassificationData.batches` feeds the fit loop. When a split fits on the device it
  lives there, normalized, and every batch is an ``index_select`` over a seeded permutation: no
  per-sample ``__getitem__``, no collate, no per-batch host-to-device copy. Otherwise a
  DataLoader with workers and pinned memory streams the same batches.

Batches follow one :class:`zoo.batching.BatchPlan` whatever the number of processes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.batching import BatchPlan
from zoo.data_cache import Split, cache_paths, read_cached, write_cached
from zoo.data_checks import check_labels, check_not_empty, class_names, derived_class_names
from zoo.data_source import find_columns, load_dataset_dict
from zoo.decode import PIXEL_RULES, dataset_mode, decode_images, decoding_key
from zoo.errors import ZooError
from zoo.local_index import index_folder, index_path, local_folder_key, read_index, write_index

VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")


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
        augment: tuple[int, bool] = (0, False),
        image_size: int | tuple[int, int] | None = None,
    ) -> None:
        self.path, self.name = path, name
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.seed = val_fraction, seed
        self.image_column, self.label_column = image_column, label_column
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.num_workers = num_workers
        # (crop_padding, flip) for training batches: applied by the fit loop on the device (zoo/augment.py).
        self.augment = augment
        # (height, width) every image is resized to once, as it is decoded (zoo/resize.py); None: as stored.
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.image_size: tuple[int, int] | None = (int(size[0]), int(size[1])) if size is not None else None
        self.splits: dict[str, Split] = {}
        self.data_config: dict[str, Any] = {}
        self.mean = torch.zeros(1)
        self.std = torch.ones(1)
        # Each split's decoded pair in the cache, found by prepare_data().
        self._decoded: dict[str, tuple[Path, Path]] = {}
        # Where batches come from, decided once by place(): resident on the device, or streamed.
        self.device = torch.device("cpu")
        self.resident = True
        # Normalized splits already on a device, by (split, device): made once, then sliced.
        self._resident_cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # -- preparation -------------------------------------------------------------------------

    def _load(self) -> Any:
        return load_dataset_dict(self.path, self.name)

    def prepare_data(self) -> None:
        """Load the data set and decode every split once into uint8 arrays in the cache.

        Run it on one process per machine (the launcher does); it is a no-op when the decoded
        arrays are already there.
        """
        self._decoded = {}
        key = local_folder_key(self.path, self.name, self.image_column, self.label_column, self.image_size,
                               PIXEL_RULES)
        index = index_path(index_folder(self.cache_dir), key) if key is not None else None
        recorded = read_index(index) if index is not None else None
        if recorded and all(read_cached(*pair) is not None for pair in recorded.values()):
            self._decoded = recorded  # a local folder unchanged since it was decoded: no datasets import
            return
        dataset_dict = self._load()
        first = next(iter(dataset_dict.values()))
        image_col, label_col = find_columns(first.features, self.image_column, self.label_column)
        mapping = class_names(first.features[label_col], label_col)
        labels = {split: ds.with_format("arrow")[label_col].to_numpy().astype(np.int64)
                  for split, ds in dataset_dict.items()}
        mapping = mapping if mapping is not None else derived_class_names(labels)
        decoding, mode = decoding_key(dataset_dict), ""
        for split, dataset in dataset_dict.items():
            images_path, meta_path = cache_paths(dataset, split, self.cache_dir, self.image_column, self.label_column,
                                                 self.image_size, decoding)
            self._decoded[split] = (images_path, meta_path)
            if read_cached(images_path, meta_path) is not None:
                continue
            mode = mode or dataset_mode(dataset_dict, image_col)  # once, over every split: one channel count
            images = decode_images(dataset, image_col, split, self.image_size, mode)
            meta = {
                "labels": labels[split].tolist(),
                "shape": list(images.shape),
                "mapping": mapping,
                "source": f"{self.path}:{self.name or ''}:{split}",
            }
            write_cached(images_path, meta_path, images, meta)
        if index is not None:
            write_index(index, self._decoded)

    # -- setup -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Build train, validation and test splits, ``data_config`` and the normalization."""
        if not self._decoded:
            self.prepare_data()
        raw: dict[str, Split] = {}
        mapping: list[str] = []
        for split, (images_path, meta_path) in self._decoded.items():
            cached = read_cached(images_path, meta_path)
            if cached is None:
                raise ZooError(f"the decoded cache {images_path} is missing or damaged; run prepare_data() again")
            raw[split], mapping = cached
            check_labels(split, raw[split].labels, mapping)
        if "train" not in raw:
            raise ZooError(f"data.path '{self.path}' has no 'train' split (splits: {', '.join(raw)})")
        shapes = {split: "x".join(map(str, data.images.shape[1:])) for split, data in raw.items()}
        if len(set(shapes.values())) > 1:  # a model takes one input shape: evaluating would fail mid-run
            listed = ", ".join(f"{split} {shape}" for split, shape in shapes.items())
            raise ZooError(f"the splits' images differ in shape (channels x height x width: {listed}); "
                           "set data.image_size (e.g. data.image_size=32) to resize them to one")
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
        check_not_empty({name: len(split) for name, split in self.splits.items()}, self.val_fraction, len(raw["train"]))
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

    def place(self, device: torch.device, placement: str = "auto") -> None:
        """Decide once where :meth:`batches` come from: ``device`` keeps the splits resident on
        ``device``, ``stream`` feeds them through a DataLoader, ``auto`` keeps them resident when
        they take less than half the device's free memory (always on a CPU, whose memory already
        holds the decoded arrays)."""
        self.device = torch.device(device)
        if placement != "auto":
            self.resident = placement == "device"
        elif self.device.type != "cuda":
            self.resident = True
        else:
            free, _ = torch.cuda.mem_get_info(self.device)
            self.resident = self.resident_bytes() < 0.5 * free

    def batches(
        self, split: str, plan: BatchPlan, epoch: int, rank: int = 0, world_size: int = 1, start_step: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's normalized batches of one epoch, in plan order, where :meth:`place` put them.

        ``start_step`` skips the micro-batches already done (mid-epoch resume) without
        touching their data.
        """
        device = self.device
        if self.resident:
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
        cache = self._resident_cache
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


