"""The gateway service (port 8080): login, the current user, logout, and the cart API
forwarded to the cart service with the caller's session id propagated.

Run: `uvicorn services.gateway.app:app --port 8080`. Sessions from
`sessionlib.load_settings()`; `GATEWAY_CART_URL` (default http://127.0.0.1:8081) is the
cart, `GATEWAY_INTERNAL_URLS` (comma-separated, default the cart URL) the only base URLs
the session id may be sent to, `GATEWAY_DOWNSTREAM_TIMEOUT_SECONDS` (default 5) bounds a call.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from starlette.responses import Response

from services.common.models import (
    USERNAME_PATTERN,
    CartItemIn,
    CartOut,
    Credentials,
    MeOut,
    UserOut,
    error_responses,
)
from services.common.service import RETRY_AFTER_SECONDS, create_service_app
from sessionlib import Settings, load_settings
from sessionlib.fastapi import CurrentUser, SessionDep
from sessionlib.propagation import DEFAULT_TIMEOUT, propagating_client

log = logging.getLogger("services.gateway")

DEFAULT_CART_URL = "http://127.0.0.1:8081"
DEMO_PASSWORD = b"demo"
_USERNAME = re.compile(USERNAME_PATTERN)
# The cart's answer goes back as it is; of its headers, these still mean something here.
_RELAYED_HEADERS = ("retry-after", "www-authenticate")
_CART_ERRORS = error_responses(401, 502, 504)


def _epoch_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


async def forward(cart: httpx.AsyncClient, method: str, path: str, body: Any = None) -> Response:
    """Send the call to the cart (the transport adds the session) and relay the answer."""
    try:
        answer = await cart.request(method, path, json=body)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        log.warning("cart unreachable for %s %s: %s", method, path, exc)
        return _bad_gateway(502, "cart service unreachable")
    except httpx.TimeoutException:
        log.warning("cart did not answer %s %s in time", method, path)
        return _bad_gateway(504, "cart service timed out")
    except httpx.TransportError as exc:
        log.warning("cart call %s %s failed: %s", method, path, exc)
        return _bad_gateway(502, "cart service failed")
    headers = {name: answer.headers[name] for name in _RELAYED_HEADERS if name in answer.headers}
    return Response(
        answer.content,
        status_code=answer.status_code,
        headers=headers,
        media_type=answer.headers.get("content-type"),
    )


def _bad_gateway(status: int, detail: str) -> Response:
    return JSONResponse(
        {"detail": detail}, status_code=status, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def add_gateway_routes(app: FastAPI, cart: httpx.AsyncClient) -> None:
    @app.post("/login", tags=["session"], responses=error_responses(401))
    async def login(credentials: Credentials, session: SessionDep) -> UserOut:
        """Log in (demo: any lowercase username, password `demo`); the session id is
        regenerated and returned in the cookie and the `X-Session-Id` header."""
        valid_name = _USERNAME.fullmatch(credentials.username) is not None
        valid_password = hmac.compare_digest(credentials.password.encode(), DEMO_PASSWORD)
        if not (valid_name and valid_password):
            raise HTTPException(
                status_code=401,
                detail="invalid username or password",
                headers={"WWW-Authenticate": "Session"},
            )
        session.login(credentials.username)
        session.expose_id()  # DESIGN §4: whatever the profile's expose_id_header says
        return UserOut(user=credentials.username)

    @app.get("/me", tags=["session"], responses=error_responses(401))
    async def me(session: SessionDep, user: CurrentUser) -> MeOut:
        """The logged-in user and the session's lifetime."""
        stored = session.stored
        if stored is None:  # a login pending in this very request; not reachable here
            raise HTTPException(status_code=401, detail="not logged in")
        return MeOut(
            user=user,
            session_created_at=_epoch_ms(stored.created_ms),
            session_expires_at=_epoch_ms(stored.absolute_expiry_ms),
        )

    @app.post("/logout", tags=["session"], status_code=204, response_class=Response)
    async def logout(session: SessionDep) -> Response:
        """End the session for every service (idempotent: 204 without a session too)."""
        session.invalidate()
        return Response(status_code=204)

    @app.get("/cart", tags=["cart"], responses={200: {"model": CartOut}, **_CART_ERRORS})
    async def get_cart() -> Response:
        """The cart service's `GET /cart`, on behalf of this session."""
        return await forward(cart, "GET", "/cart")

    @app.post(
        "/cart/items",
        tags=["cart"],
        status_code=201,
        responses={201: {"model": CartOut}, **_CART_ERRORS, **error_responses(413)},
    )
    async def add_item(item: CartItemIn) -> Response:
        """The cart service's `POST /cart/items`, on behalf of this session."""
        return await forward(cart, "POST", "/cart/items", item.model_dump())


def _internal_urls(cart_url: str) -> list[str]:
    listed = os.environ.get("GATEWAY_INTERNAL_URLS", "")
    return [u.strip() for u in listed.split(",") if u.strip()] or [cart_url]


def create_app(
    settings: Settings | None = None,
    *,
    cart_url: str | None = None,
    internal_urls: Sequence[str] | None = None,
) -> FastAPI:
    settings = settings or load_settings()
    cart_url = cart_url or os.environ.get("GATEWAY_CART_URL") or DEFAULT_CART_URL
    timeout_env = os.environ.get("GATEWAY_DOWNSTREAM_TIMEOUT_SECONDS")
    timeout = httpx.Timeout(float(timeout_env), connect=1.0) if timeout_env else DEFAULT_TIMEOUT
    cart = propagating_client(
        internal_urls if internal_urls is not None else _internal_urls(cart_url),
        base_url=cart_url,
        timeout=timeout,
        session_header=settings.session.header_name,
    )
    return create_service_app(
        "gateway", settings, partial(add_gateway_routes, cart=cart), on_shutdown=[cart.aclose]
    )


app = create_app()
