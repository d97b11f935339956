"""The session every benchmark stores: 10 attributes of 100 characters (about 1 KB).

A write changes one attribute to a value it has not had before, so every save writes.
"""

from __future__ import annotations

ATTRIBUTES = 10
VALUE_BYTES = 100
CHANGED = "a9"


def session_attributes() -> dict[str, str]:
    return {f"a{i}": chr(ord("a") + i) * VALUE_BYTES for i in range(ATTRIBUTES)}


def changed_value(counter: int) -> str:
    """The new value of attribute `CHANGED` for the `counter`-th write, 100 characters."""
    return f"{counter:0{VALUE_BYTES}d}"


def changed(attributes: dict[str, str], counter: int) -> dict[str, str]:
    return {**attributes, CHANGED: changed_value(counter)}
