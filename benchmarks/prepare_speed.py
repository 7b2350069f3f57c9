"""Decode once, then map: how long the first and a cached preparation of MNIST-sized data take.

    python benchmarks/prepare_speed.py [--copies 7] [--device cpu|cuda]

The real 10k slice (8,000 + 2,000 digits, PNG as on the Hub) is laid out again as a 70,000-image
MNIST-shaped set: a 60,000-image train split (the slice's 10,000 images six times) and a
10,000-image test split, written as parquet like the Hub's. Then, with an empty ``datasets``
cache and an empty decoded cache:

* first preparation: ``ImageClassificationData(folder).prepare_data()`` (``datasets`` turns the
  parquet into its Arrow cache, every image is decoded, the uint8 arrays are written);
* cached start: a new process's worth of work on a warm cache, ``prepare_data()`` + ``setup()``
  + both training and validation splits resident on the device, normalized (device-ready).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from zoo.samples import mnist_path  # noqa: E402  (imports neither datasets nor torch)

MNIST_SLICE = mnist_path()  # the 10k real digits the package ships


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=6, help="copies of the 10k slice in the train split")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="cached starts to time (the median is printed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        # Isolated caches, set before datasets is imported: nothing earlier can make this warm.
        os.environ["HF_DATASETS_CACHE"] = f"{work}/hf"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        import datasets
        import torch

        from zoo.data import BatchPlan, ImageClassificationData

        device = torch.device(args.device)
        real = datasets.load_dataset(str(MNIST_SLICE), cache_dir=f"{work}/slice-cache")
        both = datasets.concatenate_datasets([real["train"], real["test"]])
        folder = Path(work) / "mnist-70k"
        (folder / "mnist").mkdir(parents=True)
        datasets.concatenate_datasets([both] * args.copies).to_parquet(str(folder / "mnist" / "train-00000.parquet"))
        both.to_parquet(str(folder / "mnist" / "test-00000.parquet"))
        total = len(both) * (args.copies + 1)

        started = time.perf_counter()
        data = ImageClassificationData(str(folder), cache_dir=f"{work}/decoded")
        data.prepare_data()
        first = time.perf_counter() - started

        cached = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            data = ImageClassificationData(str(folder), cache_dir=f"{work}/decoded")
            data.prepare_data()
            data.setup()
            data.place(device, "device")
            for split in ("train", "validation"):
                plan = BatchPlan(len(data.splits[split]), 128, 0, shuffle=True)
                next(data.batches(split, plan, 1))  # makes the split resident
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            cached.append(time.perf_counter() - started)
        cached.sort()
        print(f"# {total:,} images ({', '.join(f'{k} {len(v):,}' for k, v in data.splits.items())}), "
              f"torch {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"first preparation (Arrow cache + decode + write): {first:.2f} s   (target <= 5 s on 2 cores)")
        print(f"cached start to device-ready tensors on {device.type}: median {cached[len(cached) // 2]:.3f} s "
              f"(min {cached[0]:.3f}, max {cached[-1]:.3f})   (target <= 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
