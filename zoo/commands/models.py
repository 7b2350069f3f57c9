"""``zoo models``: browse and check the model zoo.

Three forms share one parser, the first word choosing the action::

    zoo models [PATTERN]          table: name, source, parameters on MNIST, description
    zoo models show NAME          hyperparameters (type, default, help), docstring, recipe snippet
    zoo models check [PATTERN]    forward + backward of every model on a tiny CPU batch

``show``, ``check`` and ``list`` are read as actions, so a model literally named ``show`` is
listed with ``zoo models list show`` and described with ``zoo models show show``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

import torch

from zoo.errors import ZooError

ACTIONS = ("list", "show", "check")
# The shapes the table's parameter counts refer to: one MNIST digit and its ten classes.
MNIST_CONFIG: dict[str, Any] = {"input_dims": (1, 28, 28), "mapping": [str(d) for d in range(10)]}
# `check` also builds every model for colour images of another size and class count, which
# catches a model that hard-codes 784 inputs or 10 classes instead of reading data_config.
CHECK_CONFIGS: tuple[dict[str, Any], ...] = (
    MNIST_CONFIG,
    {"input_dims": (3, 32, 32), "mapping": [f"class{i}" for i in range(5)]},
)

USAGE = """\
zoo models [PATTERN]
       zoo models list [PATTERN]
       zoo models show NAME
       zoo models check [PATTERN]"""

EXAMPLES = """\
examples:
  zoo models                 every model: name, source, parameters on MNIST, description
  zoo models '*mlp'          only the names matching an fnmatch pattern
  zoo models show mlp        hyperparameters with types, defaults and help, and a recipe snippet
  zoo models check           build, forward and backward every model; exit 1 if any fails
  zoo models list show       a model literally named 'show' (list, show and check are actions)"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models", help="list, describe and check the models in the zoo", usage=USAGE,
        description="List the registered models (built-ins and plugins), describe one, or check them all.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("words", nargs="*", metavar="ARGS",
                        help="[list] [PATTERN] | show NAME | check [PATTERN]; PATTERN is fnmatch, default '*'")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    action = words.pop(0) if words and words[0] in ACTIONS else "list"
    if action == "show":
        if len(words) != 1:
            raise ZooError("`zoo models show` takes one model name, e.g. `zoo models show mlp`")
        return show(words[0])
    if len(words) > 1:
        raise ZooError(f"`zoo models {action}` takes at most one PATTERN, got {len(words)}: {' '.join(words)}; "
                       "quote patterns with * so the shell does not expand them")
    pattern = words[0] if words else "*"
    return check(pattern) if action == "check" else list_table(pattern)


# -- list -------------------------------------------------------------------------------------


def _matching(pattern: str) -> tuple[list[str], list[Any]]:
    """Registered names and plugin errors matching ``pattern``; a ZooError when there are none."""
    import fnmatch

    from zoo.registry import list_models, plugin_errors

    names = list_models(pattern)
    failed = [e for e in plugin_errors() if fnmatch.fnmatchcase(e.entry_point, pattern)]
    if not names and not failed:
        raise ZooError(f"no model matches '{pattern}'; run `zoo models` to list them all")
    return names, failed


def count_parameters(name: str, data_config: dict[str, Any] = MNIST_CONFIG) -> int:
    """Parameters of model ``name`` with its default hyperparameters, built for ``data_config``."""
    from zoo.registry import create_model

    return sum(p.numel() for p in create_model(name, data_config).parameters())


def list_table(pattern: str) -> int:
    from zoo.registry import get_entry

    names, failed = _matching(pattern)
    rows = [("NAME", "SOURCE", "PARAMS (MNIST)", "DESCRIPTION")]
    for name in names:
        entry = get_entry(name)
        try:
            params = f"{count_parameters(name):,}"
        except Exception as exc:  # a plugin whose constructor fails must not hide the others
            params = f"error: {type(exc).__name__}"
        rows.append((name, entry.source, params, entry.summary))
    for error in failed:
        rows.append((error.entry_point, error.package, "-", f"unavailable: {error.error}"))
    _print_table(rows, right=(2,))
    return 0


def _print_table(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())


# -- show -------------------------------------------------------------------------------------


_ARGS_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters|Hyperparameters):\s*$")
_ARG_LINE = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring without its Google-style ``Args:`` section, and that section as name -> help.

    Continuation lines (indented deeper than the argument's name) join its help; the section ends
    at the first line indented no deeper than the ``Args:`` header.
    """
    lines = doc.splitlines()
    kept: list[str] = []
    helps: dict[str, str] = {}
    i = 0
    while i < len(lines):
        header = _ARGS_HEADER.match(lines[i])
        if not header:
            kept.append(lines[i])
            i += 1
            continue
        base = len(header.group(1))
        i += 1
        current, item_indent = None, None
        while i < len(lines):
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent <= base:
                break
            if line.strip():
                match = _ARG_LINE.match(line.strip())
                if match and (item_indent is None or indent <= item_indent):
                    item_indent, current = indent, match.group(1)
                    helps[current] = match.group(2).strip()
                elif current is not None:
                    helps[current] = f"{helps[current]} {line.strip()}".strip()
            i += 1
    return "\n".join(kept).strip(), helps


def hyperparameter_help(builder: Callable[..., Any]) -> dict[str, str]:
    """Help for each hyperparameter, from the ``Args:`` section of the class or ``__init__`` docstring."""
    import inspect

    helps: dict[str, str] = {}
    for obj in (getattr(builder, "__init__", None), builder):
        doc = inspect.cleandoc(getattr(obj, "__doc__", None) or "")
        helps.update(split_docstring(doc)[1])
    return helps


def show(name: str) -> int:
    from zoo.commands.recipe import model_snippet, recipes_using
    from zoo.registry import get_entry, model_info

    entry = get_entry(name)
    info = model_info(name)
    description, _ = split_docstring(entry.doc)
    helps = hyperparameter_help(entry.builder)
    print(f"{name}  ({entry.source}; {info['builder']})")
    if description:
        print()
        print(description)
    print()
    if entry.hyperparameters:
        print("hyperparameters:")
        rows = [("  NAME", "TYPE", "DEFAULT", "HELP")]
        rows += [(f"  {h.name}", h.type_name, repr(h.default), helps.get(h.name, ""))
                 for h in entry.hyperparameters.values()]
        _print_table(rows)
    else:
        print("hyperparameters: none")
    print()
    try:
        print(f"parameters: {count_parameters(name):,} for MNIST (1x28x28, 10 classes)")
    except Exception as exc:
        print(f"parameters: cannot build for MNIST ({type(exc).__name__}: {exc})")
    print()
    print("recipe snippet (every hyperparameter at its default):")
    print("\n".join(f"  {line}" for line in model_snippet(name).splitlines()))
    print()
    used = recipes_using(name)
    if used:
        print(f"shipped recipes using it: {', '.join(used)}")
    print(f"start a recipe: zoo recipe new my-{name} --model {name}")
    return 0


# -- check ------------------------------------------------------------------------------------


def check_model(name: str, data_config: dict[str, Any]) -> str | None:
    """Why model ``name`` fails a forward and backward pass for ``data_config``; None if it passes.

    Builds it with default hyperparameters, runs a training-mode forward on a batch of 4, checks
    the logits' shape and that they are finite, backpropagates a cross-entropy loss and checks
    that every trainable parameter got a finite gradient, then runs an eval-mode forward on a
    single example (what ``zoo predict`` does).
    """
    from zoo.registry import create_model

    dims, classes = tuple(data_config["input_dims"]), len(data_config["mapping"])
    shape = "x".join(str(d) for d in dims)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, *dims, generator=generator)
    y = torch.randint(0, classes, (4,), generator=generator)
    try:
        model = create_model(name, data_config)
        model.train()
        logits = model(x)
        if tuple(logits.shape) != (4, classes):
            return f"input {shape}: logits of shape {tuple(logits.shape)}, expected (4, {classes})"
        if not torch.isfinite(logits).all():
            return f"input {shape}: non-finite logits"
        torch.nn.functional.cross_entropy(logits, y).backward()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n, p in trainable if p.grad is None]
        if missing:
            return f"input {shape}: no gradient for {', '.join(missing[:5])}"
        bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
        if bad:
            return f"input {shape}: non-finite gradient for {', '.join(bad[:5])}"
        model.eval()
        with torch.no_grad():
            single = model(x[:1])
        if tuple(single.shape) != (1, classes):
            return f"input {shape}: eval logits of shape {tuple(single.shape)} for one example, expected (1, {classes})"
    except ZooError as exc:
        return str(exc)
    except Exception as exc:  # the point of the check: report, never crash
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"input {shape}: {type(exc).__name__}: {message}"
    return None


def check(pattern: str) -> int:
    from zoo.registry import get_entry

    names, failed = _matching(pattern)
    results: list[tuple[str, str, str | None]] = []
    for name in names:
        source = get_entry(name).source
        reason = next((r for r in (check_model(name, c) for c in CHECK_CONFIGS) if r), None)
        results.append((name, source, reason))
    results += [(e.entry_point, e.package, e.error) for e in failed]
    width = max(len(name) for name, _, _ in results)
    for name, source, reason in results:
        verdict = "PASS" if reason is None else "FAIL"
        print(f"{verdict}  {name:<{width}}  {source}" + (f": {reason}" if reason else ""))
    failures = sum(reason is not None for _, _, reason in results)
    print(f"{len(results) - failures} passed, {failures} failed")
    return 1 if failures else 0
