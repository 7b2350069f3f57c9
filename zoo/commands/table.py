"""The one table printer of the ``zoo`` commands: columns two spaces apart, no trailing blanks."""

from __future__ import annotations

from collections.abc import Sequence


def print_table(rows: Sequence[Sequence[str]], right: tuple[int, ...] = ()) -> None:
    """Print ``rows`` (the first may be a header) with every column as wide as its widest cell.

    Columns whose index is in ``right`` are right-aligned (numbers); the others left-aligned.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())
