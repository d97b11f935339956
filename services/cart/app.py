"""The cart service (port 8081): `GET /cart` and `POST /cart/items` on the shared session,
found from `X-Session-Id` (propagated by the gateway) or the session cookie.

Run: `uvicorn services.cart.app:app --port 8081`; settings from `sessionlib.load_settings()`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.cart.lines import add_line, cart_items
from services.common.models import CartItemIn, CartOut, error_responses
from services.common.service import create_service_app
from sessionlib import Settings, load_settings
from sessionlib.fastapi import CurrentUser, SessionDep
from sessionlib.ids import redact

log = logging.getLogger("services.cart")


def add_cart_routes(app: FastAPI) -> None:
    @app.get("/cart", tags=["cart"], responses=error_responses(401))
    async def get_cart(session: SessionDep, user: CurrentUser) -> CartOut:
        """The logged-in user's cart."""
        return CartOut(items=cart_items(session))

    @app.post("/cart/items", tags=["cart"], status_code=201, responses=error_responses(401, 413))
    async def add_item(item: CartItemIn, session: SessionDep, user: CurrentUser) -> CartOut:
        """Add `qty` of `sku` to the cart; answers with the whole cart."""
        add_line(session, item.sku, item.qty)
        log.info(
            "added %d x %s to the cart of session %s",
            item.qty,
            item.sku,
            redact(session.stored.id if session.stored else None),
        )
        return CartOut(items=cart_items(session))


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("cart", settings or load_settings(), add_cart_routes)


app = create_app()
