"""Bad data is refused before training, in one line that names the split and the row.

Small data sets are written as parquet folders the way ``datasets`` writes them (features in the
file's metadata) and loaded through ``datasets.load_dataset`` like any local folder.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.data import ImageClassificationData
from zoo.errors import ZooError
from zoo.run import main

REPO = Path(__file__).resolve().parents[1]
ROWS = 40


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_set(folder: Path, labels: dict[str, list[int]], class_label: bool = True,
              images: dict[str, dict[int, bytes]] | None = None) -> Path:
    """A parquet data set: 8x8 grey PNGs, labels as a ClassLabel of 10 digits or plain integers.

    ``images`` replaces given rows' bytes (to damage them); labels outside the class list are
    written below the ClassLabel's own check, as a file edited by hand or another tool would be.
    """
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    label_feature = datasets.ClassLabel(names=[str(d) for d in range(10)]) if class_label else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label_feature})
    for split, values in labels.items():
        blobs = [png(i * 5 % 256) for i in range(len(values))]
        for row, blob in (images or {}).get(split, {}).items():
            blobs[row] = blob
        table = datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b in blobs], "label": [0] * len(values)}, features=features
        ).data.table
        table = table.set_column(1, "label", pa.array(values, type=table.schema.field("label").type))
        pq.write_table(table, folder / f"{split}-00000-of-00001.parquet")
    return folder


def prepared(folder: Path, **options: object) -> ImageClassificationData:
    data = ImageClassificationData(str(folder), batch_size=8, **options)
    data.prepare_data()
    data.setup()
    return data


@pytest.mark.parametrize("bad", [12, 99, -1])
def test_labels_outside_the_class_list_are_named_by_split_and_row(tmp_path: Path, bad: int) -> None:
    labels = [i % 10 for i in range(ROWS)]
    labels[17] = bad
    folder = write_set(tmp_path / "set", {"train": labels, "test": list(range(10))})
    with pytest.raises(ZooError) as err:
        prepared(folder)
    assert str(err.value) == (f"split 'train' row 17 has label {bad}, outside the 10 classes 0-9; "
                              "fix the labels or the class list")


def test_integer_labels_given_as_the_label_column_get_their_classes(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "set", {"train": [i % 4 for i in range(ROWS)], "test": [0, 1, 2, 5]},
                       class_label=False)
    with pytest.raises(ZooError, match=r"no ClassLabel column among image, label; set data\.label_column=NAME"):
        prepared(folder)
    data = prepared(folder, label_column="label")
    assert data.data_config["mapping"] == ["0", "1", "2", "3", "4", "5"]  # the largest label of any split


def test_a_corrupt_image_is_named_by_split_and_row(tmp_path: Path) -> None:
    truncated = png(7)[:45]
    folder = write_set(tmp_path / "set", {"train": [i % 10 for i in range(ROWS)], "test": list(range(10))},
                       images={"test": {6: truncated}})
    with pytest.raises(ZooError) as err:
        prepared(folder)
    assert str(err.value).startswith("split 'test' row 6: the image in column 'image' cannot be decoded (")
    assert str(err.value).endswith("); fix or drop that row")

    folder = write_set(tmp_path / "other", {"train": [i % 10 for i in range(ROWS)], "test": list(range(10))},
                       images={"train": {3: b"not an image at all"}})
    with pytest.raises(ZooError, match=r"^split 'train' row 3: the image in column 'image' cannot be decoded "
                                        r"\(UnidentifiedImageError"):
        prepared(folder)


def test_an_empty_training_split_is_refused(mnist_path: str) -> None:
    with pytest.raises(ZooError) as err:
        prepared(Path(mnist_path), val_fraction=0.99995)
    assert str(err.value) == ("the training split is empty: data.val_fraction=0.99995 of its 8000 rows went to "
                              "validation (and test); lower data.val_fraction")


def test_bad_data_as_a_user_sees_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the launcher's main: one line, exit 2, and no run folder left behind."""
    labels = [i % 10 for i in range(ROWS)]
    labels[3] = 12
    folder = write_set(tmp_path / "set", {"train": labels, "test": list(range(10))})
    run = tmp_path / "run"
    code = main([str(REPO / "recipes" / "mlp.yaml"), f"data.path={folder}", f"output_dir={run}",
                 "tracking.wandb=false"])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "examples/s" not in line]
    assert err == ["error: split 'train' row 3 has label 12, outside the 10 classes 0-9; "
                   "fix the labels or the class list"]
    assert not run.exists()
