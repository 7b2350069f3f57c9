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


# -- one writer per run-folder file ------------------------------------------------------------

# Every file (or folder) a run folder holds: its name, the one module that writes it, and the
# constant that module names it by. Everyone else names it through that constant (to read it).
# W&B's ``wandb/`` is written by the wandb library, started only in zoo.wandb_run (``dir=``).
RUN_FOLDER_FILES: list[tuple[str, str, str]] = [
    ("recipe.yaml", "zoo.run_folder", "RECIPE_FILE"),
    ("summary.json", "zoo.run_folder", "FINISHED_MARKER"),
    (".zoo-run.lock", "zoo.run_folder", "LOCK_NAME"),
    ("metrics.jsonl", "zoo.metrics_file", "METRICS_FILE"),
    ("model.safetensors", "zoo.model_file", "WEIGHTS_FILE"),
    ("model.json", "zoo.model_file", "SPEC_FILE"),
    ("model-raw.safetensors", "zoo.model_file", "RAW_WEIGHTS_FILE"),
    ("curves.png", "zoo.plot", "CURVES_FILE"),
    ("diverged.json", "zoo.divergence", "DIVERGED_MARKER"),
    ("pretrained.json", "zoo.finetune", "PRETRAINED_RECORD"),
    ("checkpoints", "zoo.checkpoint", "CHECKPOINTS"),
    ("sharded", "zoo.sharded_checkpoint", "SHARDED"),  # checkpoints/step-*/sharded/ under trainer.strategy=fsdp
    ("profile", "zoo.profiling", "PROFILE_DIR"),
    ("tensorboard", "zoo.trackers.tensorboard_events", "FOLDER"),
    ("mlruns", "zoo.trackers.mlflow_runs", "FOLDER"),
    ("csv", "zoo.trackers.csv_files", "FOLDER"),
    ("sweep-point.json", "zoo.sweep.point", "POINT_FILE"),
]
# Names too plain to look for as text (a backend is also called "csv"): only their constants are followed.
PLAIN_NAMES = {"sharded", "profile", "tensorboard", "mlruns", "csv"}
# The same text meaning another file, each said why; the constant rule below still holds for them.
OTHER_FILES_OF_THE_SAME_NAME = {
    ("zoo.checkpoint", "model.safetensors"): "a checkpoint's own weights, inside checkpoints/step-*/",
    ("zoo.inference", "model.json"): "model.json's copy inside an exported TorchScript file",
    ("zoo.commands.plot", "curves.png"): "`zoo plot`'s default output, in the working directory",
    ("zoo.run_folder", "sweep-point.json"): "only looked for: a marker that the folder is a zoo run's",
}
WRITE_METHODS = {"write_text", "write_bytes", "unlink", "touch", "mkdir", "rename", "replace", "rmdir",
                 "savefig", "export_chrome_trace"}
WRITE_FUNCTIONS = {"save", "save_file", "save_weights", "replace", "rename", "rmtree", "move", "copy", "copyfile",
                   "dump"}
# Calls that make a path from a path; any other call's result is not the path (``read_text()`` is its contents).
PATH_CALLS = {"Path", "str", "join", "joinpath", "with_suffix", "with_name", "resolve", "absolute", "fspath"}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _is_write(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name == "open":  # path.open("w") or open(path, "w"): the mode decides
        modes = [arg for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        modes += [kw.value for kw in call.keywords if kw.arg == "mode" and isinstance(kw.value, ast.Constant)]
        return any(set(str(mode.value)) & set("wax+") for mode in modes)
    return name in (WRITE_METHODS if isinstance(func, ast.Attribute) else set()) | WRITE_FUNCTIONS


def _label(node: ast.AST) -> str | None:
    """A name a path can be held in: ``x`` or ``self.x``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


def run_folder_writes(module: str, source: str) -> list[str]:
    """Where ``module`` writes a run-folder file it does not own: a write call whose path mentions the
    owner's constant, the file's name as text, or a name (``x``, ``self.x``) assigned from either."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    # What names each file here: the owner's constant as imported, and the name as text.
    sources: dict[str, str] = {}  # label -> file
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                for file, owner, constant in RUN_FOLDER_FILES:
                    if node.module == owner and alias.name == constant and owner != module:
                        sources[alias.asname or alias.name] = file
    texts = {file: owner for file, owner, _ in RUN_FOLDER_FILES if owner != module and file not in PLAIN_NAMES
             and (module, file) not in OTHER_FILES_OF_THE_SAME_NAME}

    def path_parts(node: ast.AST) -> Iterator[ast.AST]:
        yield node
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name not in PATH_CALLS:
                return
        for child in ast.iter_child_nodes(node):
            yield from path_parts(child)

    def files_in(node: ast.AST) -> set[str]:
        found = set()
        for part in path_parts(node):
            label = _label(part)
            if label in sources:
                found.add(sources[label])
            if isinstance(part, ast.Constant) and isinstance(part.value, str) and id(part) not in docstrings:
                found |= {file for file in texts if file in part.value.split("/")}
        return found

    changed = True
    while changed:  # follow assignments until nothing new is named
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                named = files_in(node.value)
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for part in ast.walk(target):
                        label = _label(part)
                        if label and named and label not in sources:
                            sources[label] = sorted(named)[0]
                            changed = True
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_write(node):
            target = node.func.value if isinstance(node.func, ast.Attribute) else None  # path.write_text(...)
            named = set().union(*map(files_in, [*node.args, *node.keywords, *([target] if target else [])]))
            for file in sorted(named):
                owner = next(owner for name, owner, _ in RUN_FOLDER_FILES if name == file)
                wrong.append(f"{module} line {node.lineno} writes {file}, which {owner} writes")
    return wrong


def test_every_run_folder_file_has_one_writer() -> None:
    found = modules()
    for file, owner, constant in RUN_FOLDER_FILES:  # the table says what the code says
        tree = ast.parse(found[owner].read_text())
        values = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                  for target in node.targets if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant)}
        assert values.get(constant) == file, f"{owner}.{constant} should name {file}"
    wrong = [line for name, path in found.items() for line in run_folder_writes(name, path.read_text())]
    assert not wrong, "\n".join(wrong)


def test_a_second_writer_is_found() -> None:
    """The check above, on modules that write files they do not own, directly or through a name."""
    by_constant = (
        "from zoo.metrics_file import METRICS_FILE\n"
        "class T:\n"
        "    def __init__(self, run_dir):\n"
        "        self.path = run_dir / METRICS_FILE\n"
        "    def reset(self):\n"
        "        self.path.unlink(missing_ok=True)\n"
    )
    assert run_folder_writes("zoo.tracking", by_constant) == [
        "zoo.tracking line 6 writes metrics.jsonl, which zoo.metrics_file writes"]
    by_text = ("def f(out, recipe, summary):\n    (out / 'recipe.yaml').write_text(recipe)\n"
               "    open(out / 'summary.json', 'w')\n")
    assert run_folder_writes("zoo.run", by_text) == ["zoo.run line 2 writes recipe.yaml, which zoo.run_folder writes",
                                                     "zoo.run line 3 writes summary.json, which zoo.run_folder writes"]
    reading = ("from zoo.run_folder import RECIPE_FILE\ndef f(d, out):\n    text = open(d / RECIPE_FILE).read()\n"
               "    (out / 'best.yaml').write_text(text)\n")  # what a run-folder file holds may go elsewhere
    assert run_folder_writes("zoo.sweep.report", reading) == []
    assert run_folder_writes("zoo.metrics_file", by_constant.replace("from zoo.metrics_file import METRICS_FILE\n",
                                                                     "METRICS_FILE = 'metrics.jsonl'\n")) == []


# -- attributes --------------------------------------------------------------------------------


def attributes_set_outside_init(source: str) -> list[str]:
    """``self.x = ...`` in a method of a class whose ``__init__`` (or class body) never sets ``x``."""
    found = []
    for cls in ast.walk(ast.parse(source)):
        if not isinstance(cls, ast.ClassDef):
            continue
        declared = {node.target.id for node in cls.body if isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)}
        set_in: dict[str, list[tuple[str, int]]] = {}
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(method):
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
                for target in targets:
                    for part in ast.walk(target):
                        if (isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name)
                                and part.value.id == "self"):
                            set_in.setdefault(part.attr, []).append((method.name, node.lineno))
        for attribute, places in set_in.items():
            if attribute not in declared and all(method != "__init__" for method, _ in places):
                found += [f"{cls.name}.{attribute} first set in {method} (line {line})" for method, line in places[:1]]
    return found


def test_attributes_are_first_set_in_init() -> None:
    """What an object holds is read in one place: its ``__init__`` (or the class body of a dataclass)."""
    wrong = [f"{name}: {line}" for name, path in modules().items()
             for line in attributes_set_outside_init(path.read_text())]
    assert not wrong, "\n".join(wrong)
    late = "class A:\n    def __init__(self):\n        self.a = 1\n    def setup(self):\n        self.b = 2\n"
    assert attributes_set_outside_init(late) == ["A.b first set in setup (line 5)"]
