"""Request and response bodies of the services' HTTP API (DESIGN §4), declared once so
the gateway validates and documents the cart's API exactly as the cart does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, StrictInt, StrictStr

# The demo accepts any username of this shape with the password `demo` (DESIGN §4).
USERNAME_PATTERN = r"^[a-z0-9_.-]{1,64}$"
# No ':' in a sku: the cart keeps lines in attributes named `cart:<sku>:<line>`.
SKU_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
MAX_QTY = 1000


class Credentials(BaseModel):
    # Shape is checked by the login itself (401), length here (422): a login form
    # never needs kilobytes.
    username: StrictStr = Field(max_length=256)
    password: StrictStr = Field(max_length=256)


class UserOut(BaseModel):
    user: str


class MeOut(BaseModel):
    user: str
    session_created_at: datetime
    session_expires_at: datetime


class CartItemIn(BaseModel):
    sku: StrictStr = Field(pattern=SKU_PATTERN, examples=["sku-1"])
    qty: StrictInt = Field(ge=1, le=MAX_QTY, examples=[1])


class CartLine(BaseModel):
    sku: str
    qty: int


class CartOut(BaseModel):
    items: list[CartLine]


class ErrorOut(BaseModel):
    detail: Any


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, all shaped `{"detail": ...}`."""
    return {status: {"model": ErrorOut} for status in statuses}
