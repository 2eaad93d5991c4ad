"""``KIND:PATH,key=value`` specs for --model and --data, with typo-tolerant errors."""
from __future__ import annotations

from dataclasses import dataclass, field

from edgefa.errors import EdgefaError

# what a setting of each type must be, as error messages say it
TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text", dict: "a mapping",
              list: "a list"}


def fits_type(value, want: type) -> bool:
    """``value`` is a ``want``: bools are not numbers, ints are floats; shared by every settings check."""
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, want)


@dataclass
class Spec:
    kind: str
    path: str | None = None
    options: dict = field(default_factory=dict)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(text: str, kinds: set[str]) -> Spec | None:
    """Split ``KIND[:PATH][,k=v...]``, ``KIND:k=v,...`` or ``KIND,k=v,...`` (default path, options);
    None if the text names no known kind."""
    cut = min((i for i in (text.find(":"), text.find(",")) if i >= 0), default=len(text))
    head, sep, rest = text[:cut], text[cut:cut + 1], text[cut + 1:]
    if head not in kinds:
        return None
    spec = Spec(head)
    if not sep:
        return spec
    for i, part in enumerate(p for p in rest.split(",") if p != ""):
        key, eq, val = part.partition("=")
        if eq and key.isidentifier():
            spec.options[key] = _value(val)
        elif i == 0 and sep == ":":
            spec.path = part
        else:
            raise EdgefaError(f"spec '{text}': '{part}' is not key=value")
    return spec
