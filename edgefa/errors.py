"""User-facing errors: one clear line naming the file/argument and the problem."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgefaError(Exception):
    """An error caused by the user's input; the CLI prints it as one line, no traceback."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Closest valid name to a misspelt one, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> EdgefaError:
    choices = sorted(choices)
    hint = closest(name, choices)
    did_you_mean = f"did you mean '{hint}'? " if hint else ""
    return EdgefaError(f"unknown {kind} '{name}': {did_you_mean}valid: {', '.join(choices)}")
