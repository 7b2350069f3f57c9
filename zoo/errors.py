"""User-facing errors: one line that says what is wrong and what to do."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


class ZooError(Exception):
    """An error caused by the user's input (a recipe, an override, a name).

    The launcher prints ``str(error)`` as one line and exits non-zero without a traceback;
    anything else is a bug and keeps its traceback.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr: something went wrong and the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


class HubUnreachable(ZooError):
    """``data.path`` names a Hub data set and the Hub cannot be reached (no network, or offline mode)."""
