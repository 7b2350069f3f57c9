"""One colour mode for a whole data set: every split, every path that decodes, the cache and prediction.

Tiny synthetic images written with Pillow: a set is RGB as soon as any image of any split holds
colour (its grey images become three equal channels), grey only when every image is grey, and a
mode the features declare decides for the whole set. Both ways images reach the decoder are
covered: bytes in Arrow as a Hub set has them, and files in a local image folder.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from zoo import data as zoo_data
from zoo import decode as zoo_decode
from zoo.cli import main as zoo
from zoo.data import ImageClassificationData
from zoo.decode import decode_images
from zoo.errors import ZooError
from zoo.inference import load_images
from zoo.run import main as train

REPO = Path(__file__).resolve().parents[1]
SIZE = (5, 4)  # (width, height) as Pillow gives sizes: the arrays are 4 x 5
FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})


def grey(value: int) -> Image.Image:
    return Image.new("L", SIZE, value)


def rgb(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", SIZE, colour)


def palette(colour: tuple[int, int, int]) -> Image.Image:
    """A palette image whose every pixel is entry 0, ``colour``; the other entries are black."""
    image = Image.new("P", SIZE, 0)
    image.putpalette([*colour] + [0] * 765)
    return image


def deep_grey(value: int) -> Image.Image:
    """A 16-bit grey image (mode I;16, as Pillow reads a 16-bit PNG)."""
    return Image.fromarray(np.full(SIZE[::-1], value, dtype=np.uint16))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def hub_split(images: list[Image.Image]) -> datasets.Dataset:
    """A split as a Hub set holds it: PNG bytes in Arrow."""
    rows = {"image": [{"bytes": encoded(image), "path": None} for image in images],
            "label": [i % 2 for i in range(len(images))]}
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def prepared(splits: dict[str, datasets.Dataset], cache: Path) -> ImageClassificationData:
    """The data module on a set that ``load_dataset`` would hand back for a Hub id (no local folder,
    so no local index: only the decoded cache's own keys)."""
    data = ImageClassificationData("someone/mixed-colours", cache_dir=str(cache))
    data._load = lambda: datasets.DatasetDict(splits)  # type: ignore[method-assign]
    data.setup()
    return data


def colours(images: np.ndarray) -> list[tuple[int, ...]]:
    """Each image's one colour (channel values), after checking the image is that colour throughout."""
    for image in images:
        assert (image == image[:, :1, :1]).all()
    return [tuple(int(v) for v in image[:, 0, 0]) for image in images]


def test_a_grey_first_set_holding_colour_is_rgb_in_every_split_with_its_colour_kept(tmp_path: Path) -> None:
    train = [grey(50), rgb((10, 200, 30)), palette((200, 0, 100)), Image.new("RGBA", SIZE, (9, 8, 7, 128))]
    data = prepared({"train": hub_split(train), "validation": hub_split([grey(60)]),
                     "test": hub_split([grey(70), grey(71)])}, tmp_path)
    assert data.data_config["input_dims"] == (3, 4, 5)
    assert colours(data.splits["train"].images) == [(50, 50, 50), (10, 200, 30), (200, 0, 100), (9, 8, 7)]
    # The all-grey splits (the batched PNG decoder's) follow the set: three equal channels.
    assert colours(data.splits["validation"].images) == [(60, 60, 60)]
    assert colours(data.splits["test"].images) == [(70, 70, 70), (71, 71, 71)]


def test_a_colour_first_set_is_rgb_in_every_split_its_grey_images_three_equal_channels(tmp_path: Path) -> None:
    train = [rgb((10, 200, 30)), grey(50), Image.new("1", SIZE, 1)]
    data = prepared({"train": hub_split(train), "validation": hub_split([grey(60)]),
                     "test": hub_split([grey(70)])}, tmp_path)
    assert colours(data.splits["train"].images) == [(10, 200, 30), (50, 50, 50), (255, 255, 255)]
    assert colours(data.splits["validation"].images) == [(60, 60, 60)]
    assert colours(data.splits["test"].images) == [(70, 70, 70)]


def test_colour_in_the_test_split_alone_makes_the_training_split_rgb(tmp_path: Path) -> None:
    data = prepared({"train": hub_split([grey(50), grey(51)]), "validation": hub_split([grey(60)]),
                     "test": hub_split([rgb((10, 200, 30)), grey(70)])}, tmp_path)
    assert {split.images.shape[1] for split in data.splits.values()} == {3}
    assert colours(data.splits["train"].images) == [(50, 50, 50), (51, 51, 51)]
    assert colours(data.splits["test"].images) == [(10, 200, 30), (70, 70, 70)]


def test_an_all_grey_set_stays_one_channel_whatever_its_grey_modes(tmp_path: Path) -> None:
    grey_palette = Image.new("P", SIZE, 120)
    grey_palette.putpalette([value for value in range(256) for _ in range(3)])  # entry v is (v, v, v)
    train = [Image.new("LA", SIZE, (80, 10)), grey(50), Image.new("1", SIZE, 1), grey_palette,
             deep_grey(128 * 257)]  # 16-bit 32896 is 128 on 0-255: scaled, not clipped to 255
    data = prepared({"train": hub_split(train), "validation": hub_split([grey(60)]),
                     "test": hub_split([grey(70)])}, tmp_path)
    assert data.data_config["input_dims"] == (1, 4, 5)
    assert colours(data.splits["train"].images) == [(80,), (50,), (255,), (120,), (128,)]


def test_a_mode_the_features_declare_decides_for_the_whole_set(tmp_path: Path) -> None:
    def declared(mode: str | None, splits: dict[str, list[Image.Image]]) -> dict[str, datasets.Dataset]:
        return {split: hub_split(images).cast_column("image", datasets.Image(mode=mode))
                for split, images in splits.items()}

    all_grey = {"train": [grey(50), grey(51)], "validation": [grey(60)], "test": [grey(70)]}
    as_rgb = prepared(declared("RGB", all_grey), tmp_path / "rgb")
    assert colours(as_rgb.splits["train"].images) == [(50, 50, 50), (51, 51, 51)]
    with_colour = {"train": [rgb((10, 200, 30)), grey(51)], "validation": [grey(60)], "test": [grey(70)]}
    as_grey = prepared(declared("L", with_colour), tmp_path / "grey")
    assert colours(as_grey.splits["train"].images) == [(np.asarray(rgb((10, 200, 30)).convert("L"))[0, 0],), (51,)]

    disagreeing = declared("L", {"train": [grey(50), grey(51)], "validation": [grey(60)]})
    disagreeing["test"] = hub_split([grey(70)]).cast_column("image", datasets.Image(mode="RGBA"))
    with pytest.raises(ZooError, match=r"the splits declare different image modes \(.*test RGBA"):
        prepared(disagreeing, tmp_path / "disagreeing")


def write_image_folder(root: Path, splits: dict[str, dict[str, list[Image.Image]]]) -> Path:
    """A local image folder: ``root/<split>/<class>/<n>.png``, as ``datasets``' imagefolder reads it."""
    for split, classes in splits.items():
        for label, images in classes.items():
            (root / split / label).mkdir(parents=True)
            for n, image in enumerate(images):
                image.save(root / split / label / f"{n}.png")
    return root


def test_a_local_image_folder_is_rgb_in_every_split_when_one_image_holds_colour(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "images", {
        "train": {"a_grey": [grey(50), grey(51)], "b_grey": [grey(52)]},
        "test": {"a_grey": [grey(70)], "b_colour": [rgb((10, 200, 30))]},
    })
    expected = {"a_grey": {(50, 50, 50), (51, 51, 51), (70, 70, 70)}, "b_grey": {(52, 52, 52)},
                "b_colour": {(10, 200, 30)}}
    for served in ("decoded", "from the local index"):
        data = ImageClassificationData(str(folder), cache_dir=str(tmp_path / "cache"), val_fraction=0.34)
        data.setup()
        names = data.data_config["mapping"]
        for split in data.splits.values():
            assert split.images.shape[1:] == (3, 4, 5), served
            for colour, label in zip(colours(split.images), split.labels, strict=True):
                assert colour in expected[names[label]], (served, names[label], colour)


def test_pixels_decoded_by_other_rules_are_not_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_image_folder(tmp_path / "images", {"train": {"a": [grey(50), grey(51)], "b": [grey(52)]},
                                                      "test": {"a": [grey(70)], "b": [grey(71)]}})
    decoded: list[str] = []

    def counting(dataset: datasets.Dataset, column: str, split: str, *args: object) -> np.ndarray:
        decoded.append(split)
        return decode_images(dataset, column, split, *args)  # type: ignore[arg-type]

    def prepare() -> None:
        ImageClassificationData(str(folder), cache_dir=str(tmp_path / "cache")).prepare_data()

    monkeypatch.setattr(zoo_data, "decode_images", counting)
    with monkeypatch.context() as older:  # a cache and an index written by earlier rules
        older.setattr(zoo_data, "PIXEL_RULES", "pixels-v1")
        older.setattr(zoo_decode, "PIXEL_RULES", "pixels-v1")
        prepare()
    prepare()
    prepare()
    assert sorted(decoded) == ["test", "test", "train", "train"]  # once per rules, then served


def test_a_split_that_changes_the_sets_mode_re_decodes_the_splits_it_did_not_touch(tmp_path: Path) -> None:
    train, validation = hub_split([grey(50), grey(51)]), hub_split([grey(60)])  # the same rows: the same fingerprints
    before = prepared({"train": train, "validation": validation, "test": hub_split([grey(70)])}, tmp_path)
    assert before.data_config["input_dims"] == (1, 4, 5)
    after = prepared({"train": train, "validation": validation, "test": hub_split([rgb((10, 200, 30))])}, tmp_path)
    assert after.data_config["input_dims"] == (3, 4, 5)
    assert colours(after.splits["train"].images) == [(50, 50, 50), (51, 51, 51)]
    assert colours(after.splits["validation"].images) == [(60, 60, 60)]


def files_of(folder: Path, images: dict[str, Image.Image]) -> list[Path]:
    folder.mkdir()
    for name, image in images.items():
        image.save(folder / name)
    return [folder / name for name in images]


@pytest.mark.parametrize("channels", [1, 3])
def test_prediction_reads_a_file_into_the_pixels_its_training_decode_gave(tmp_path: Path, channels: int) -> None:
    grey_files = {"grey.png": grey(50), "grey-alpha.png": Image.new("LA", SIZE, (80, 10)),
                  "bilevel.png": Image.new("1", SIZE, 1), "deep.png": deep_grey(40000),
                  "grey.jpg": Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5) * 9)}
    colour_files = {"colour.png": rgb((10, 200, 30)), "alpha.png": Image.new("RGBA", SIZE, (9, 8, 7, 128)),
                    "palette.png": palette((200, 0, 100)), "photo.jpg": rgb((200, 100, 50)),
                    "cmyk.jpg": Image.new("CMYK", SIZE, (10, 20, 30, 40))}
    paths = files_of(tmp_path / "files", grey_files | (colour_files if channels == 3 else {}))
    rows = {"image": [{"bytes": path.read_bytes(), "path": None} for path in paths], "label": [0] * len(paths)}
    training = decode_images(datasets.Dataset.from_dict(rows, features=FEATURES), "image")
    assert training.shape == (len(paths), channels, 4, 5)
    np.testing.assert_array_equal(load_images(paths, (channels, 4, 5)), training)


def test_a_grey_first_colour_folder_trains_a_three_channel_model_that_predicts_files_of_either(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    red, blue = rgb((220, 20, 20)), rgb((20, 20, 220))
    folder = write_image_folder(tmp_path / "images", {
        "train": {"blue": [grey(40), blue, blue, blue], "red": [grey(41), red, red, red]},
        "test": {"blue": [blue], "red": [red]},
    })
    run = tmp_path / "run"
    assert train([str(REPO / "recipes" / "mlp.yaml"), f"data.path={folder}", f"output_dir={run}",
                  f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.25", "data.batch_size=4",
                  "model.fc1=8", "model.fc2=4", "trainer.epochs=1", "trainer.cpu_threads=1",
                  "tracking.wandb=false"]) == 0
    assert json.loads((run / "model.json").read_text())["data_config"]["input_dims"] == [3, 4, 5]
    paths = files_of(tmp_path / "files", {"grey.png": grey(40), "red.png": red})
    capsys.readouterr()
    assert zoo(["predict", str(run), *map(str, paths), "--json"]) == 0
    assert [record["image"] for record in json.loads(capsys.readouterr().out)] == list(map(str, paths))

