"""The data path: decode once, a race-free cache, and resident batches equal to streamed ones."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import data as zoo_data
from zoo._png import decode_png_batch
from zoo.batching import BatchPlan
from zoo.data import ImageClassificationData
from zoo.data_cache import Split
from zoo.data_source import image_bytes
from zoo.decode import decode_pillow_batch
from zoo.errors import ZooError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(mnist_path: str, tmp_path_factory: pytest.TempPathFactory) -> ImageClassificationData:
    data = ImageClassificationData(mnist_path, batch_size=64, eval_batch_size=256, seed=3,
                                   cache_dir=str(tmp_path_factory.mktemp("decoded")), num_workers=0)
    data.prepare_data()
    data.setup()
    return data


# -- decoding -----------------------------------------------------------------------------------


def encode_png(pixels: np.ndarray, filters: list[int]) -> bytes:
    """A PNG with the given filter type on each row (Pillow picks its own, never all five)."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(height, width * channels).astype(np.int16)
    raw = bytearray()
    prior = np.zeros(width * channels, np.int16)
    for row, kind in zip(rows, filters, strict=True):
        left = np.concatenate([np.zeros(channels, np.int16), row[:-channels]])
        corner = np.concatenate([np.zeros(channels, np.int16), prior[:-channels]])
        estimate = left + prior - corner
        pa, pb, pc = np.abs(estimate - left), np.abs(estimate - prior), np.abs(estimate - corner)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, corner))
        predicted = [0 * row, left, prior, (left + prior) >> 1, paeth][kind]
        raw += bytes([kind]) + ((row - predicted) & 0xFF).astype(np.uint8).tobytes()
        prior = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    compressed = zlib.compress(bytes(raw))
    # Two IDAT chunks: a decoder must join them.
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", compressed[:7])
            + chunk(b"IDAT", compressed[7:]) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 3])
def test_batched_png_decoder_undoes_every_filter_as_pillow_does(channels: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(channels)
    shape = (6, 5) if channels == 1 else (6, 5, 3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(7)]
    blobs = [encode_png(img, [(i + row) % 5 for row in range(6)]) for i, img in enumerate(images)]
    decoded = decode_png_batch(blobs)
    assert decoded is not None
    np.testing.assert_array_equal(decoded, np.stack(images))
    # And the encoder above is a real PNG encoder: Pillow reads back the same pixels.
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(blobs[0]))), images[0])


def test_batched_png_decoder_matches_pillow_on_real_digits(mnist_path: str) -> None:
    import datasets

    blobs = image_bytes(datasets.load_dataset(mnist_path)["test"], "image")
    fast = decode_png_batch(blobs)
    assert fast is not None and fast.shape == (2000, 28, 28)
    np.testing.assert_array_equal(fast, decode_pillow_batch(blobs))


def test_images_the_batched_decoder_does_not_cover_go_to_pillow() -> None:
    from PIL import Image

    def png(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    rgba = [png(Image.new("RGBA", (4, 3), (9, 8, 7, 255))) for _ in range(2)]
    assert decode_png_batch(rgba) is None
    np.testing.assert_array_equal(decode_pillow_batch(rgba)[0, 0, 0], [9, 8, 7])
    mixed = [png(Image.new("L", (4, 3))), png(Image.new("L", (5, 3)))]
    assert decode_png_batch(mixed) is None
    with pytest.raises(ZooError, match="different sizes"):
        decode_pillow_batch(mixed)


# -- decode once, cache -------------------------------------------------------------------------


def test_decoded_once_then_memory_mapped(prepared: ImageClassificationData, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = sorted(p.name for p in Path(prepared.cache_dir).iterdir())
    assert all(name.startswith("zoo-decoded-") for name in cached), cached
    assert len([name for name in cached if "-index-" not in name]) == 4, cached  # two splits, two files each

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again although the cache holds the arrays")

    monkeypatch.setattr(zoo_data, "decode_images", no_decoding)
    again = ImageClassificationData(prepared.path, batch_size=64, seed=3, cache_dir=str(prepared.cache_dir))
    again.prepare_data()
    again.setup()
    assert isinstance(again.splits["test"].images, np.memmap)  # mapped from disk, not read into memory
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(again.splits[split].images, prepared.splits[split].images)
        np.testing.assert_array_equal(again.splits[split].labels, prepared.splits[split].labels)
    assert again.data_config == prepared.data_config
    assert prepared.splits["test"].images.shape == (2000, 1, 28, 28)
    assert len(prepared.splits["train"]) + len(prepared.splits["validation"]) == 8000


def test_a_damaged_cache_pair_is_decoded_again(mnist_path: str, tmp_path: Path) -> None:
    first = ImageClassificationData(mnist_path, cache_dir=str(tmp_path))
    first.prepare_data()
    first.setup()
    expected = np.array(first.splits["test"].images)
    (images_path,) = tmp_path.glob("zoo-decoded-test-*.images.npy")
    # Images out of step with their labels, swapped in the way a writer would (a new file, renamed:
    # overwriting a memory-mapped file in place would pull the pages from under its readers).
    np.save(tmp_path / "damaged.npy", np.zeros((3, 1, 28, 28), np.uint8))
    os.replace(tmp_path / "damaged.npy", images_path)
    second = ImageClassificationData(mnist_path, cache_dir=str(tmp_path))
    second.prepare_data()
    second.setup()
    np.testing.assert_array_equal(second.splits["test"].images, expected)



def test_splits_of_different_image_sizes_are_one_line_before_training(tmp_path: Path) -> None:
    from PIL import Image

    for split, side in (("train", 4), ("test", 6)):  # each split one size: each decodes alone
        for label in ("a", "b"):
            (tmp_path / "images" / split / label).mkdir(parents=True)
            for n in range(2):
                Image.new("L", (side, side), 50 * n).save(tmp_path / "images" / split / label / f"{n}.png")
    data = ImageClassificationData(str(tmp_path / "images"), cache_dir=str(tmp_path / "cache"), val_fraction=0.25)
    with pytest.raises(ZooError, match=r"differ in shape \(channels x height x width: train 1x4x4, test 1x6x6\); "
                                       r"set data\.image_size"):
        data.setup()
    resized = ImageClassificationData(str(tmp_path / "images"), cache_dir=str(tmp_path / "cache"), image_size=5)
    resized.setup()
    assert {split.images.shape[1:] for split in resized.splits.values()} == {(1, 5, 5)}

PREPARE_SCRIPT = """
import hashlib, sys, time
from pathlib import Path
import numpy as np
from zoo.data import ImageClassificationData
path, cache, me, other = sys.argv[1:]
Path(me).touch()
while not Path(other).exists():  # start together
    time.sleep(0.001)
data = ImageClassificationData(path, cache_dir=cache)
data.prepare_data()
data.setup()
digest = hashlib.sha256()
for split in ("train", "validation", "test"):
    digest.update(np.ascontiguousarray(data.splits[split].images).tobytes())
    digest.update(data.splits[split].labels.tobytes())
print(digest.hexdigest())
"""


def digest(data: ImageClassificationData) -> str:
    sha = hashlib.sha256()
    for split in ("train", "validation", "test"):
        sha.update(np.ascontiguousarray(data.splits[split].images).tobytes())
        sha.update(data.splits[split].labels.tobytes())
    return sha.hexdigest()


def test_two_processes_preparing_one_empty_cache_at_once_agree(mnist_path: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", PREPARE_SCRIPT, mnist_path, str(cache),
                          str(tmp_path / f"ready{i}"), str(tmp_path / f"ready{1 - i}")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    reference = ImageClassificationData(mnist_path, cache_dir=str(tmp_path / "fresh"))
    reference.prepare_data()
    reference.setup()
    assert outputs[0][0].strip() == outputs[1][0].strip() == digest(reference)
    names = sorted(p.name for p in cache.iterdir())
    assert not [name for name in names if ".tmp-" in name], f"temporary files left behind: {names}"
    pairs = [name for name in names if "-index-" not in name]  # the index: zoo.local_index
    assert len(pairs) == 4 and {name.split(".", 1)[1] for name in pairs} == {"images.npy", "meta.json"}, names
    assert len(names) == 5, names


# -- batches ------------------------------------------------------------------------------------


def test_resident_and_streamed_batches_are_identical(prepared: ImageClassificationData) -> None:
    plan = BatchPlan(len(prepared.splits["train"]), 64, seed=5, shuffle=True, grad_accum=2)
    cpu = torch.device("cpu")
    prepared.place(cpu, "device")
    resident = list(prepared.batches("train", plan, 2, rank=1, world_size=3))
    prepared.num_workers = 2  # the streaming path with worker processes
    prepared.place(cpu, "stream")
    try:
        streamed = list(prepared.batches("train", plan, 2, rank=1, world_size=3))
    finally:
        prepared.num_workers = 0
        prepared.place(cpu, "device")
    assert len(resident) == len(streamed) == plan.micro_steps
    indices = list(plan.rank_indices(2, rank=1, world_size=3))
    all_images = prepared.normalize(torch.from_numpy(np.asarray(prepared.splits["train"].images)))
    for (ri, rl), (si, sl), idx in zip(resident, streamed, indices, strict=True):
        assert ri.dtype == si.dtype == torch.float32
        assert torch.equal(ri, si) and torch.equal(rl, sl)
        assert torch.equal(ri, all_images[idx])  # the batch is exactly the planned examples


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_rank_shares_are_disjoint_cover_each_batch_and_do_not_depend_on_world_size(grad_accum: int) -> None:
    plan = BatchPlan(num_examples=103, batch_size=12, seed=7, shuffle=True, grad_accum=grad_accum)
    single = list(plan.rank_indices(epoch=4, rank=0, world_size=1))
    assert torch.equal(torch.cat(single).sort().values, torch.arange(103))  # an epoch sees each example once
    for world_size in (2, 3, 4):
        shares = [list(plan.rank_indices(4, rank, world_size)) for rank in range(world_size)]
        for step, whole in enumerate(single):
            parts = [share[step] for share in shares]
            assert torch.equal(torch.cat(parts), whole), (world_size, step)  # disjoint, covering, in order
            assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    for step in range(plan.micro_steps):
        batch = step // grad_accum
        examples = sum(len(single[s]) for s in range(batch * grad_accum, (batch + 1) * grad_accum))
        assert plan.global_batch_size(step) == examples
    resumed = list(plan.rank_indices(4, 0, 1, start_step=5))
    assert all(torch.equal(a, b) for a, b in zip(resumed, single[5:], strict=True))
    assert not torch.equal(plan.order(4), plan.order(5))  # a new order every epoch
    assert not torch.equal(plan.order(4), BatchPlan(103, 12, 8, True, grad_accum).order(4))


def test_the_plain_loaders_train_a_model_with_a_plain_loop(prepared: ImageClassificationData) -> None:
    """``*_dataloader()``: the data module as a user uses it outside the launcher."""
    import torch.nn.functional as F

    from zoo.registry import create_model

    torch.manual_seed(0)
    model = create_model("mlp", prepared.data_config, fc1=32, fc2=16, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for images, labels in prepared.train_dataloader():
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        break
    # The first batch is the seeded plan's first batch, normalized with the training statistics.
    first = BatchPlan(len(prepared.splits["train"]), prepared.batch_size, prepared.seed, shuffle=True).order(0)[:64]
    train = prepared.splits["train"]
    assert torch.equal(labels, torch.from_numpy(train.labels[first.numpy()]))
    assert torch.equal(images, prepared.normalize(torch.from_numpy(np.asarray(train.images[first.numpy()]))))
    with torch.no_grad():
        assert F.cross_entropy(model(images), labels) < loss  # the step trained the model
    for split, loader in (("validation", prepared.val_dataloader()), ("test", prepared.test_dataloader())):
        seen = torch.cat([batch_labels for _, batch_labels in loader])
        assert torch.equal(seen, torch.from_numpy(prepared.splits[split].labels)), split  # whole, in order


def test_a_streamed_training_run_with_workers_equals_the_resident_one(prepared: ImageClassificationData) -> None:
    from accelerate import Accelerator

    from zoo.fit import FitState, fit, prepare_training
    from zoo.recipe import TrainerSection
    from zoo.registry import create_model

    trainer = TrainerSection(epochs=1, optimizer="adam", lr=1e-3)
    accelerator = Accelerator(cpu=True)
    small = ImageClassificationData(prepared.path, batch_size=200, eval_batch_size=500, seed=3,
                                    cache_dir=str(prepared.cache_dir), num_workers=2)
    small.prepare_data()
    small.setup()
    train = small.splits["train"]
    small.splits["train"] = Split(train.images[:1000], train.labels[:1000])  # a short epoch
    weights = {}
    for resident in (True, False):
        torch.manual_seed(0)
        model = create_model("mlp", small.data_config, fc1=32, fc2=16, dropout=0.0)
        small.place(accelerator.device, "device" if resident else "stream")
        training = prepare_training(model, small, trainer, accelerator, seed=1, mode="none")
        state = fit(training, small, accelerator, state=FitState())
        assert state.epoch == 1 and state.history[-1]["train_loss"] is not None
        weights[resident] = accelerator.unwrap_model(training.model).state_dict()
    for name, value in weights[True].items():
        torch.testing.assert_close(weights[False][name], value, rtol=0, atol=1e-6)
