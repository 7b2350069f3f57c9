"""Print the requirements that pyproject.toml declares, one per line, without installing the project.

The Docker images install dependencies in a layer built from pyproject.toml alone, so that a code
change does not reinstall them; pip has no "dependencies only" mode, so this reads the file itself::

    python docker/pyproject_deps.py pyproject.toml export > requirements.txt

Printed: the build requirements ([build-system] requires, so the project itself can be installed
later without build isolation), [project] dependencies, and those of each named extra, with the
project's references to its own extras (``zoo-launch[export]`` inside ``dev``) expanded in place.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """Build requirements, dependencies and the named extras' requirements, in order, without repeats.

    Raises ``SystemExit`` with a one-line message when an extra is not declared, because a typo
    there would otherwise build an image that silently lacks the packages it was asked for.
    """
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    own_name = _canonical(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = list(data.get("build-system", {}).get("requires", []))
    out += project.get("dependencies", [])
    seen: set[str] = set()

    def add_extra(extra: str) -> None:
        if extra in seen:
            return
        if extra not in optional:
            raise SystemExit(
                f"error: extra '{extra}' is not in [project.optional-dependencies] of {pyproject} "
                f"(declared: {', '.join(sorted(optional)) or 'none'})"
            )
        seen.add(extra)
        for req in optional[extra]:
            match = _NAME.match(req)
            if match and _canonical(match.group(1)) == own_name:
                for inner in filter(None, (e.strip() for e in (match.group(2) or "").split(","))):
                    add_extra(inner)
            else:
                out.append(req)

    for extra in extras:
        add_extra(extra)
    return list(dict.fromkeys(out))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: pyproject_deps.py PYPROJECT [EXTRA[,EXTRA] ...]", file=sys.stderr)
        return 2
    extras = [e.strip() for arg in argv[1:] for e in arg.split(",") if e.strip()]
    print("\n".join(requirements(Path(argv[0]), extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
