"""The sweep spec: one recipe, the overrides every point shares, and the keys to vary.

Two engines read the same spec. A grid (``--sweep KEY=V1,V2``, several multiply) lists every
point up front. An Optuna search (``--search KEY=...``) samples points from a space, a trial budget
long::

    --search trainer.lr=log:1e-4..1e-1    a float range sampled on a log scale
    --search model.dropout=0.0..0.5       a float range (a range of two integers is an integer range)
    --search model.fc2=64,128,256         a choice

Everything is checked before any point starts: every key against the recipe schema (with each grid
value, both ends of each range and every choice), the ranges, and the metric. The sweep's folder
is the recipe's ``output_dir``; each point trains into a run folder inside it. ``sweep.json`` in that
folder holds the spec, so a rerun can tell the same sweep from a different one, and Slurm array
tasks read their points from it. This module is the only writer of ``sweep.json``. A folder that
holds files but no ``sweep.json`` is someone else's: it is refused, as a run's ``output_dir`` is
(``zoo.output_folder``), before anything is written.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError, did_you_mean
from zoo.output_folder import check_output_folder
from zoo.recipe import Recipe, find_recipe, load_recipe, parse_override

SPEC_FILE = "sweep.json"
# What a run records, and which way is better. The first three come from summary.json; the others
# are the last epoch record of metrics.jsonl.
METRICS = {"best_val_acc": "maximize", "test_acc": "maximize", "test_loss": "minimize",
           "val_acc": "maximize", "val_loss": "minimize", "train_loss": "minimize"}
SUMMARY_METRICS = ("best_val_acc", "test_acc", "test_loss")
_SAFE_DIRNAME = re.compile(r"^[A-Za-z0-9._=,+-]{1,200}$")
_RANGE = re.compile(r"^(?P<log>log:)?(?P<low>[^.,][^,]*?)\.\.(?P<high>[^,]+)$")


@dataclass(frozen=True)
class Axis:
    """One varied key: grid values or choices (``values``), or a range ``low..high``."""

    key: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def samples(self) -> list[Any]:
        """The values to validate the key with: every value, or both ends of the range."""
        return list(self.values) if not self.is_range else [self.low, self.high]


@dataclass
class SweepSpec:
    """Everything a sweep needs, on this machine or in a Slurm array task."""

    recipe: str  # absolute path
    overrides: list[str]
    engine: str  # "grid" or "optuna"
    axes: list[Axis]
    metric: str = "best_val_acc"
    direction: str = "maximize"
    trials: int = 0  # Optuna's budget; a grid has one point per combination
    prune: bool = False
    storage: str | None = None  # None: optuna.db in the sweep folder
    sweep_dir: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.sweep_dir)

    @property
    def varied(self) -> list[str]:
        return [axis.key for axis in self.axes]

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.folder / 'optuna.db'}"

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps the same; the trial budget and pruning may change between runs."""
        return {k: v for k, v in self.to_dict().items() if k not in ("trials", "prune")}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["axes"] = [{k: (list(v) if k == "values" else v) for k, v in axis.items()} for axis in data["axes"]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        axes = [Axis(**{**axis, "values": tuple(axis.get("values", ()))}) for axis in data["axes"]]
        return cls(**{**data, "axes": axes})


def _fail(what: str, message: str) -> ZooError:
    return ZooError(f"{what}: {message}")


def _number(text: str, what: str) -> float | int:
    try:
        value = parse_override(f"x={text}")[1]
    except ZooError:
        value = None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(what, f"'{text}' is not a number; write low..high, e.g. 1e-4..1e-2")
    return value


def _split(option: str, spec: str) -> tuple[str, str]:
    key, sep, raw = spec.partition("=")
    key = key.strip()
    example = "trainer.lr=1e-3,3e-4" if option == "--sweep" else "trainer.lr=log:1e-4..1e-2"
    if sep and key and not raw.strip():  # a value left off, as a shell variable that was empty leaves it
        values = "v1,v2,..." if option == "--sweep" else "low..high (or v1,v2,...)"
        raise ZooError(f"{option} '{spec}' gives {key} no value; write {key}={values}, e.g. {option} {example}")
    if not sep or not key:
        raise ZooError(f"malformed {option} '{spec}': write section.key=..., e.g. {option} {example}")
    parse_override(f"{key}=0")  # the key's shape; its place in the recipe is checked later
    return key, raw.strip()


def _values(option: str, spec: str, key: str, raw: str) -> tuple[Any, ...]:
    texts = [v.strip() for v in raw.split(",")]
    if not all(texts):
        raise ZooError(f"{option} '{spec}' has an empty value; write {key}=v1,v2,... with no empty value")
    if len(set(texts)) != len(texts):
        raise ZooError(f"{option} '{spec}' repeats a value; each point must differ")
    return tuple(texts)


def parse_grid(specs: Sequence[str]) -> list[Axis]:
    """``["model.fc1=256,512", "trainer.lr=1e-3"]``: one axis per key, values kept as written.

    Values are split on commas, so a value cannot itself hold a comma (a YAML list, for one).
    """
    axes: list[Axis] = []
    for spec in specs:
        key, raw = _split("--sweep", spec)
        axes.append(Axis(key=key, values=_values("--sweep", spec, key, raw)))
    _check_unique(axes, "--sweep")
    return axes


def parse_search(specs: Sequence[str]) -> list[Axis]:
    """``trainer.lr=log:1e-4..1e-1``, ``model.dropout=0.0..0.5`` or ``model.fc2=64,128``."""
    axes: list[Axis] = []
    for spec in specs:
        key, raw = _split("--search", spec)
        found = _RANGE.match(raw)
        if not found:
            axes.append(Axis(key=key, values=_values("--search", spec, key, raw)))
            continue
        what = f"--search '{spec}'"
        low, high = _number(found["low"], what), _number(found["high"], what)
        if low >= high:
            raise _fail(what, f"the range's low end {low} is not below its high end {high}; write low..high")
        log = bool(found["log"])
        if log and low <= 0:
            raise _fail(what, "a log range needs a low end above 0")
        axes.append(Axis(key=key, low=low, high=high, log=log,
                         integer=isinstance(low, int) and isinstance(high, int)))
    _check_unique(axes, "--search")
    return axes


def _check_unique(axes: Sequence[Axis], option: str) -> None:
    keys = [axis.key for axis in axes]
    for key in keys:
        if keys.count(key) > 1:
            raise ZooError(f"{option} '{key}' is given twice; give each key once")


def grid_points(axes: Sequence[Axis]) -> list[list[str]]:
    """Every combination of the grid values as overrides, the last axis varying fastest."""
    return [[f"{axis.key}={value}" for axis, value in zip(axes, combo, strict=True)]
            for combo in itertools.product(*(axis.values for axis in axes))]


def point_dirname(point: Sequence[str], index: int) -> str:
    """``model.fc1=256,trainer.lr=1e-3`` when that is a safe file name, else ``point-<index>``."""
    name = ",".join(point)
    return name if _SAFE_DIRNAME.match(name) else f"point-{index}"


def trial_dirname(number: int) -> str:
    return f"trial-{number:03d}"


def point_overrides(spec: SweepSpec, varied: Sequence[str], point_dir: Path) -> list[str]:
    """The overrides one point trains with: the sweep's, the point's, its folder and W&B group."""
    group = [] if any(o.startswith("tracking.group=") for o in spec.overrides) else [
        f"tracking.group={spec.folder.name}"]
    return [*spec.overrides, *varied, f"output_dir={point_dir}", *group]


def _check_keys(recipe_path: Path, overrides: Sequence[str], axes: Sequence[Axis], option: str) -> None:
    for axis in axes:
        for value in axis.samples():
            override = f"{axis.key}={value}"
            if "\t" in override or "\n" in override:
                raise ZooError(f"{option} {override!r} holds a tab or newline, which a Slurm job cannot pass on")
            try:
                load_recipe(recipe_path, [*overrides, override])
            except ZooError as exc:
                raise ZooError(f"{option} {override}: {str(exc).split(': ', 1)[-1]}") from None


def check_metric(metric: str, direction: str | None) -> str:
    """The metric's direction; a metric runs do not record is refused."""
    if metric not in METRICS:
        raise ZooError(f"--metric '{metric}' is not something a run records{did_you_mean(metric, list(METRICS))}; "
                       f"pick one of {', '.join(METRICS)}")
    return direction or METRICS[metric]


def build_spec(recipe: str | Path, overrides: Sequence[str], grid: Sequence[str] = (),
               search: Sequence[str] = (), *, metric: str = "best_val_acc", direction: str | None = None,
               trials: int = 20, prune: bool = False, storage: str | None = None) -> tuple[SweepSpec, Recipe]:
    """Parse and check a sweep; returns it with the base recipe. Nothing is written."""
    if grid and search:
        raise ZooError("give either --sweep (a grid) or --search (an Optuna search), not both; "
                       "choices in a search are written --search KEY=v1,v2")
    if not grid and not search:
        raise ZooError("nothing to sweep: add --sweep KEY=v1,v2 (a grid) or --search KEY=low..high (Optuna)")
    recipe_path = find_recipe(recipe).resolve()  # a file, or a shipped recipe's name
    base = load_recipe(recipe_path, overrides)
    check_sweep_folder(Path(base.output_dir))  # first: a folder of someone else's files is refused at once
    direction = check_metric(metric, direction)
    if search and trials < 1:
        raise ZooError(f"--trials must be at least 1, got {trials}")
    if prune and not search:
        raise ZooError("--prune needs an Optuna search (--search); a grid runs every point to the end")
    if storage and not search:
        raise ZooError("--storage is where an Optuna search keeps its trials; a grid (--sweep) has none, drop it")
    axes = parse_grid(grid) if grid else parse_search(search)
    _check_keys(recipe_path, overrides, axes, "--sweep" if grid else "--search")
    for override in overrides:
        if override.partition("=")[0].strip() in {axis.key for axis in axes}:
            raise ZooError(f"'{override}' is also swept; drop the override or the sweep of that key")
    sweep_dir = Path(base.output_dir).resolve()
    shared = [o for o in overrides if o.partition("=")[0].strip() != "output_dir"]
    spec = SweepSpec(recipe=str(recipe_path), overrides=shared, engine="grid" if grid else "optuna", axes=axes,
                     metric=metric, direction=direction, trials=trials if search else 0, prune=prune,
                     storage=storage, sweep_dir=str(sweep_dir))
    _check_same_sweep(spec)  # a dry run says so too, not only the write
    return spec, base


def check_sweep_folder(folder: Path) -> None:
    """Refuse a sweep folder that is a file or holds files that no zoo sweep wrote; nothing is written.

    ``sweep.json`` is written first into the folder, and only by a sweep: the folder is a sweep's
    (to resume or extend) when it holds one. Everything else a sweep writes there (its points' run
    folders, its locks, ``optuna.db``, ``slurm/``, the report) comes after it.
    """
    check_output_folder(folder, "sweep", (SPEC_FILE,))


def read_spec(folder: str | Path) -> SweepSpec:
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        raise ZooError(f"{folder} is not a sweep folder (no {SPEC_FILE}); give the output_dir a sweep ran in")
    try:
        return SweepSpec.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError):  # a sweep.json that zoo did not write
        raise ZooError(f"{path} is not a zoo sweep's spec; nothing there is touched: give the output_dir a zoo "
                       "sweep ran in, or pick an empty or new folder") from None


def _check_same_sweep(spec: SweepSpec) -> None:
    """A folder's sweep.json, when there is one, must be this sweep (the trial budget and pruning may differ)."""
    path = spec.folder / SPEC_FILE
    if path.is_file() and read_spec(spec.folder).identity() != spec.identity():
        raise ZooError(f"{spec.folder} already holds a different sweep ({path}); pick another output_dir=...")


def write_spec(spec: SweepSpec) -> None:
    """Record the spec in its folder; a folder of someone else's files or a different sweep is refused."""
    check_sweep_folder(spec.folder)
    _check_same_sweep(spec)
    path = spec.folder / SPEC_FILE
    spec.folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
