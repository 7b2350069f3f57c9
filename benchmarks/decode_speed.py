"""Decoding a 70,000-image MNIST-shaped set to one uint8 array: zoo's PNG decoder against the libraries.

    python benchmarks/decode_speed.py [--data FOLDER] [--rounds 3] [--num-proc 2]

The bundled 10k MNIST sample (real digits, PNG as on the Hub) is laid out as a 70,000-image set the way
``benchmarks/prepare_speed.py`` does (its 10,000 images seven times, written as parquet and read
back through ``datasets``, so the images are PNG bytes in Arrow). Each candidate goes from that
``datasets.Dataset`` to the same uint8 array (N, 1, 28, 28):

* ``zoo-png``: ``zoo.data_source.image_bytes`` + ``zoo._png.decode_png_batch`` (numpy, one thread);
* ``pillow-threads``: ``image_bytes`` + ``zoo.decode.decode_pillow_batch`` (Pillow, one thread per core);
* ``datasets-map``: ``datasets``' own parallel decoding, ``Dataset.map(batched=True, num_proc=N)``
  turning its decoded PIL images into arrays, then ``with_format("numpy")`` (the cache is off, so
  every round decodes);
* ``datasets-numpy``: ``with_format("numpy")`` on the image column, ``datasets``' one-process path.

Candidates run interleaved, round after round (the order rotates each round), and each one's
median is printed with its min and max: on a machine shared with other work, that keeps a busy
moment from landing on one candidate only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def candidates(num_proc: int) -> dict[str, Callable[[Any], np.ndarray]]:
    from zoo._png import decode_png_batch
    from zoo.data_source import image_bytes
    from zoo.decode import decode_pillow_batch

    def zoo_png(dataset: Any) -> np.ndarray:
        return decode_png_batch(image_bytes(dataset, "image"))

    def pillow_threads(dataset: Any) -> np.ndarray:
        return decode_pillow_batch(image_bytes(dataset, "image"))

    def datasets_map(dataset: Any) -> np.ndarray:
        import datasets

        def to_arrays(batch: dict[str, list[Any]]) -> dict[str, list[np.ndarray]]:
            return {"pixels": [np.asarray(image, dtype=np.uint8) for image in batch["image"]]}

        features = datasets.Features({"pixels": datasets.Array2D((28, 28), "uint8")})
        mapped = dataset.map(to_arrays, batched=True, batch_size=1000, num_proc=num_proc, features=features,
                             remove_columns=dataset.column_names, load_from_cache_file=False)
        return mapped.with_format("numpy")["pixels"]

    def datasets_numpy(dataset: Any) -> np.ndarray:
        return np.stack(dataset.select_columns(["image"]).with_format("numpy")["image"])

    return {"zoo-png": zoo_png, "pillow-threads": pillow_threads, "datasets-map": datasets_map,
            "datasets-numpy": datasets_numpy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="an MNIST-like folder for datasets.load_dataset (default: the bundled sample)")
    parser.add_argument("--copies", type=int, default=7, help="copies of the 10k slice (7 make 70,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="processes for datasets-map")
    parser.add_argument("--skip", action="append", default=[], help="a candidate to leave out (repeatable)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        os.environ["HF_DATASETS_CACHE"] = f"{work}/hf"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        import datasets

        sys.path.insert(0, str(REPO))
        from zoo.samples import mnist_path

        real = datasets.load_dataset(args.data or str(mnist_path()), cache_dir=f"{work}/slice-cache")
        both = datasets.concatenate_datasets([real["train"], real["test"]])
        folder = Path(work) / "mnist-70k"
        folder.mkdir()
        datasets.concatenate_datasets([both] * args.copies).to_parquet(str(folder / "train-00000.parquet"))
        dataset = datasets.load_dataset(str(folder), cache_dir=f"{work}/cache")["train"]

        runs = {name: fn for name, fn in candidates(args.num_proc).items() if name not in args.skip}
        reference = None
        times: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                started = time.perf_counter()
                array = runs[name](dataset)
                times[name].append(time.perf_counter() - started)
                array = np.asarray(array).reshape(len(dataset), -1)
                if reference is None:
                    reference = array
                assert np.array_equal(array, reference), f"{name} decoded different pixels"
            print(f"# round {round_ + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)
        print(f"# {len(dataset):,} PNG images 28x28, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}, datasets {datasets.__version__}, {args.rounds} interleaved rounds")
        fastest = min(statistics.median(t) for t in times.values())
        for name, taken in times.items():
            median = statistics.median(taken)
            print(f"{name:<15} median {median:6.2f} s  (min {min(taken):.2f}, max {max(taken):.2f})  "
                  f"{len(dataset) / median:>9,.0f} images/s  {median / fastest:.1f}x the fastest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
