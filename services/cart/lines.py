"""The cart as session attributes: every add is a line of its own, `cart:<sku>:<line>`,
and the cart is the sum of its lines per sku.

Why not one `cart` attribute, or one per sku: the store writes per-attribute deltas, so
two services adding to one session at once would each write back what they read and one
add would be lost. A new attribute per add is a write nobody else makes: no add is lost,
with no locking and no change to the store. The session's attribute limit bounds a cart
(an add over it is a 413).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, MutableMapping
from typing import Any

from services.common.models import CartLine

LINE_PREFIX = "cart:"


def add_line(session: MutableMapping[str, Any], sku: str, qty: int) -> None:
    """Record that `qty` of `sku` were added; the sku must not contain ':'."""
    session[f"{LINE_PREFIX}{sku}:{secrets.token_urlsafe(9)}"] = qty


def cart_items(session: Mapping[str, Any]) -> list[CartLine]:
    """The cart's items, one per sku with the total quantity, sorted by sku."""
    totals: dict[str, int] = {}
    for name, qty in session.items():
        if not name.startswith(LINE_PREFIX) or type(qty) is not int:
            continue
        sku = name.removeprefix(LINE_PREFIX).rpartition(":")[0]
        totals[sku] = totals.get(sku, 0) + qty
    return [CartLine(sku=sku, qty=qty) for sku, qty in sorted(totals.items())]
