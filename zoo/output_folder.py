"""Folders a zoo command writes into at the user's word: never one holding someone else's files.

A run's ``output_dir`` and a sweep's folder are each checked here before anything is written into
them. A folder is a zoo folder of a kind when it holds one of that kind's marker files (what the
kind writes first); an empty or missing folder is free. Anything else is refused with one line, and
nothing in it is touched: this module only looks, it never writes or removes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from zoo.errors import ZooError


def check_output_folder(folder: Path, kind: str, markers: Sequence[str],
                        other_kinds: Mapping[str, str] | None = None) -> None:
    """Refuse ``folder`` if it is a file, holds another kind of zoo folder, or holds files without ``markers``.

    ``kind`` names what would be written ("run", "sweep"); ``markers`` are paths inside the folder
    that only that kind writes; ``other_kinds`` maps a marker of another kind to its name, for the
    kinds that can hold one of ``markers`` too (a Slurm sweep's folder holds a job script, as a
    Slurm run's does).
    """
    if folder.exists() and not folder.is_dir():
        raise ZooError(f"output_dir '{folder}' is an existing file, not a folder; pick another output_dir")
    if not folder.is_dir():
        return
    for marker, other in (other_kinds or {}).items():
        if (folder / marker).exists():
            raise ZooError(f"output_dir '{folder}' holds a zoo {other} ({marker}), not a {kind}; nothing there "
                           "is touched: pick an empty or new folder")
    if any((folder / marker).exists() for marker in markers):
        return
    found = sorted(p.name for p in folder.iterdir())
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ZooError(f"output_dir '{folder}' holds files that are not a zoo {kind}'s ({shown}); "
                       "nothing there is touched: pick an empty or new folder")
