"""How attributes become hash fields: JSON values and names that never clash with
metadata (which starts with a single `_`).

An attribute whose name starts with `_` is stored with one more `_` in front.
"""

from __future__ import annotations

import json
from typing import Any

from sessionlib.errors import SessionDataError


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (replies are bytes: the client does not decode them)."""
    return value.decode() if isinstance(value, bytes) else value


def field_for(attribute: str) -> str:
    return "_" + attribute if attribute.startswith("_") else attribute


def attribute_for(field: str) -> str | None:
    """The attribute a hash field holds, or None for a metadata field."""
    if field.startswith("__"):
        return field[1:]
    if field.startswith("_"):
        return None
    return field


def encode_value(attribute: str, value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SessionDataError(
            f"session attribute {attribute!r} is not JSON-compatible: {exc}"
        ) from None


def decode_value(raw: bytes | str) -> Any:
    """Parse a stored value; raises ValueError for bytes that are not UTF-8 JSON."""
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
