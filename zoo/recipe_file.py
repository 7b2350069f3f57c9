"""Reading a recipe file: UTF-8 text, safe YAML, and no key given twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError, did_you_mean


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, first_line: int, line: int) -> None:
        super().__init__(f"key '{key}' is given twice, on line {first_line} and line {line}; keep one of them")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key given twice in one mapping is an error.

    Plain YAML keeps the last one silently, so a second ``trainer:`` block would drop the first's keys.
    """


def _strict_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    first_lines: dict[str, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
            continue  # merge keys (<<) may legitimately repeat what they merge
        line = key_node.start_mark.line + 1
        if key_node.value in first_lines:
            raise _DuplicateKey(key_node.value, first_lines[key_node.value], line)
        first_lines[key_node.value] = line
    return loader.construct_yaml_map(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def _read_text(path: Path) -> str:
    if not path.is_file():
        nearby = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        hint = did_you_mean(path.name, nearby) or (f" (recipes there: {', '.join(nearby)})" if nearby else "")
        raise ZooError(f"recipe file '{path}' not found{hint}")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ZooError(f"{path}: line {line}, column {column} has a byte that is not UTF-8 "
                       f"(0x{raw[exc.start]:02x}); save the recipe as UTF-8 text") from None


def read_recipe_file(path: Path) -> dict[str, Any]:
    """A recipe file's mapping, or a ZooError naming the file and what is wrong: missing, not UTF-8,
    a key given twice, bad YAML, empty, or not a mapping. Only a safe loader ever reads it."""
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no Python tags
    except _DuplicateKey as exc:
        raise ZooError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ZooError(f"{path}: YAML syntax error at {where}: {problem}") from exc
    if data is None:
        # Most likely a file truncated or not yet written: "all defaults" would hide that.
        raise ZooError(f"{path} is empty; a recipe needs at least one setting (see recipes/mlp.yaml)")
    if not isinstance(data, dict):
        raise ZooError(f"{path}: a recipe is a mapping of sections (seed, model, data, ...), got {type(data).__name__}")
    return data
