"""How attributes become hash fields: JSON values and names that never clash with
metadata (which starts with a single `_`).

An attribute whose name starts with `_` is stored with one more `_` in front. Values are
written by the json module, so what is accepted and refused is exactly what Starlette's
SessionMiddleware (json.dumps) accepts and refuses (orjson would store a UUID or an Enum as
a string that reads back as a string). They are read on every request, by orjson, several
times faster; the json module reads what orjson would read differently.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from sessionlib.errors import SessionDataError

# orjson reads integers beyond 64 bits as floats; the json module keeps them exact.
_LONG_NUMBER = re.compile(rb"\d{19}")


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (replies are bytes: the client does not decode them)."""
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


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
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # what orjson refuses but json reads (a lone surrogate escape), or not JSON
    else:
        if type(value) is str:
            return value
        text = raw.encode() if isinstance(raw, str) else raw
        if not _LONG_NUMBER.search(text):
            return value
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
