"""A local data folder's decoded arrays are found without loading it through ``datasets``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from zoo.data import ImageClassificationData
from zoo.local_index import local_folder_key


def refuse_to_load(self: ImageClassificationData) -> None:
    raise AssertionError("datasets was asked although the decoded cache answers for this folder")


def test_an_unchanged_local_folder_skips_datasets(mnist_path: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mnist"
    shutil.copytree(mnist_path, folder)
    first = ImageClassificationData(str(folder), cache_dir=str(tmp_path / "cache"))
    first.prepare_data()
    first.setup()

    monkeypatch.setattr(ImageClassificationData, "_load", refuse_to_load)
    again = ImageClassificationData(str(folder), cache_dir=str(tmp_path / "cache"))
    again.prepare_data()
    again.setup()
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(again.splits[split].images, first.splits[split].images)
        np.testing.assert_array_equal(again.splits[split].labels, first.splits[split].labels)
    assert again.data_config == first.data_config

    # Other column choices, or a changed file, are another data set: datasets is asked again.
    with pytest.raises(AssertionError, match="datasets was asked"):
        ImageClassificationData(str(folder), cache_dir=str(tmp_path / "cache"), label_column="label").prepare_data()
    test_file = next(folder.rglob("test-*.parquet"))
    stat = test_file.stat()
    os.utime(test_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(AssertionError, match="datasets was asked"):
        ImageClassificationData(str(folder), cache_dir=str(tmp_path / "cache")).prepare_data()


def test_the_key_follows_the_files_and_the_choices(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").write_bytes(b"1234")
    key = local_folder_key(str(tmp_path), None, None, None)
    assert key == local_folder_key(str(tmp_path), None, None, None)
    assert key != local_folder_key(str(tmp_path), "mnist", None, None)
    assert key != local_folder_key(str(tmp_path), None, "image", None)
    (tmp_path / ".cache").mkdir()  # hidden folders are not the data
    (tmp_path / ".cache" / "x").write_text("x")
    assert key == local_folder_key(str(tmp_path), None, None, None)
    (tmp_path / "data" / "train.parquet").write_bytes(b"12345")
    assert key != local_folder_key(str(tmp_path), None, None, None)
    assert local_folder_key("ylecun/mnist", None, None, None) is None  # a Hub id: only datasets can tell
