"""Google-style docstrings read for help: a model's ``Args:`` section becomes its hyperparameter help."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

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


def argument_help(builder: Callable[..., Any]) -> dict[str, str]:
    """Help for each argument, from the ``Args:`` section of the class or ``__init__`` docstring."""
    helps: dict[str, str] = {}
    for obj in (getattr(builder, "__init__", None), builder):
        doc = inspect.cleandoc(getattr(obj, "__doc__", None) or "")
        helps.update(split_docstring(doc)[1])
    return helps
