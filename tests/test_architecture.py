"""The shape of the package, read from its source with ``ast``: layers, no import circles, room sizes.

Layers, each importing only its own and those below it (imports inside functions count too: a
lazy import is still a dependency)::

    4  zoo.cli, zoo.commands.*, zoo.train   parse the command line and print
    3  zoo.run, zoo.slurm             one run, or a cluster job of runs
    2  everything else                the loop, data, checkpoints, tracking, inference, ...
    1  zoo.registry, zoo.recipe, zoo.models.*, zoo.model_check
    0  zoo.errors, zoo.docstrings

``zoo/__init__.py`` is the package's front door: it re-exports the registry, and nothing inside the
package imports it. The registry imports no model: it loads the built-in package by name on first
lookup, as it loads plugins by entry point.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "zoo"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 80

LAYERS: dict[str, int] = {
    "zoo.cli": 4, "zoo.commands": 4, "zoo.train": 4,
    "zoo.run": 3, "zoo.slurm": 3,
    "zoo.registry": 1, "zoo.providers": 1, "zoo.recipe": 1, "zoo.recipe_file": 1, "zoo.models": 1, "zoo.model_check": 1,
    "zoo.errors": 0, "zoo.docstrings": 0,
}
MIDDLE = 2


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer(module: str) -> int:
    """The layer of ``module``: its own entry in LAYERS or its nearest package's, else the middle."""
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    return MIDDLE


def imported(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The zoo modules ``name`` imports, anywhere in its body, with the line of each import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from zoo.x import y` imports the module zoo.x.y when there is one, else names of zoo.x.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:  # `import zoo.models.mlp.X` -> zoo.models.mlp
                target = target.rpartition(".")[0]
            if target in known and target != name:
                yield target, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    found = modules()
    return {name: dict(imported(name, path, set(found))) for name, path in found.items()}


def test_no_module_imports_a_higher_layer_or_the_package_front_door() -> None:
    graph = import_graph()
    wrong = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)}) at line {line}"
        for name, targets in graph.items() if name != "zoo"
        for target, line in targets.items() if target == "zoo" or layer(target) > layer(name)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_has_no_circles() -> None:
    graph = {name: set(targets) for name, targets in import_graph().items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            pytest.fail("import circle: " + " -> ".join([*path[path.index(name):], name]))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_rooms_are_small() -> None:
    too_long = []
    for name, path in modules().items():
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name} (line {node.lineno}): {length} lines "
                                    f"(at most {MAX_FUNCTION_LINES})")
    assert not too_long, "\n".join(too_long)


def test_the_checks_see_what_they_check() -> None:
    """A checker that finds nothing passes everything: it must find known edges and sizes."""
    graph = import_graph()
    assert "zoo.registry" in graph["zoo.models.mlp"]  # a model registers itself
    assert "zoo.registry" in graph["zoo"]  # the package re-exports the registry (lazily)
    assert "zoo.registry" in graph["zoo.recipe"]  # a lazy import inside a function counts
    assert "zoo.models" not in graph["zoo.registry"]
    assert layer("zoo.commands.models") == 4 and layer("zoo.fit") == MIDDLE and layer("zoo.models.mlp") == 1
