"""Which session id a downstream call forwards, against a real Redis: the id exactly as the
client presented it, or, when this very request created or regenerated the session, the
new id, written before the call so the downstream service can load it.

The downstream is a second real app with its own `SessionMiddleware` on the same store,
reached through `httpx.ASGITransport` as the propagating transport's inner transport."""

import httpx
import pytest
from fastapi import FastAPI

from sessionlib import SessionMiddleware
from sessionlib.fastapi import SessionDep
from sessionlib.propagation import CallerContextMiddleware, propagating_client
from sessionlib.store import SessionStore

pytestmark = pytest.mark.integration

SECRET = "a-secret-key-for-tests-0123456789"
CART = "http://cart.internal"


def downstream_app(store: SessionStore, seen: list[str | None]) -> FastAPI:
    """A cart-like service: tells who the propagated session belongs to."""
    app = FastAPI()

    @app.get("/whoami")
    async def whoami(session: SessionDep) -> dict[str, object]:
        return {"user": session.user, "attributes": dict(session)}

    app.add_middleware(SessionMiddleware, secret_key=SECRET, store=store)

    async def recording(scope, receive, send):
        headers = dict(scope.get("headers") or [])
        seen.append(headers.get(b"x-session-id", b"").decode() or None)
        await app(scope, receive, send)

    return recording  # type: ignore[return-value]


def gateway_app(store: SessionStore, seen: list[str | None]) -> FastAPI:
    cart = propagating_client([CART], inner=httpx.ASGITransport(app=downstream_app(store, seen)))
    app = FastAPI()

    @app.post("/login-and-ask")
    async def login_and_ask(session: SessionDep) -> dict[str, object]:
        session.login("ann")
        session["theme"] = "dark"
        answer = (await cart.get(f"{CART}/whoami")).json()
        session["after_call"] = True  # a change after the early write is still saved
        return answer

    @app.post("/login")
    async def login(session: SessionDep) -> dict[str, str]:
        session.login("ann")
        return {}

    @app.get("/ask")
    async def ask() -> dict[str, object]:
        return (await cart.get(f"{CART}/whoami")).json()  # type: ignore[no-any-return]

    @app.post("/logout-and-ask")
    async def logout_and_ask(session: SessionDep) -> dict[str, object]:
        session.invalidate()
        return (await cart.get(f"{CART}/whoami")).json()  # type: ignore[no-any-return]

    @app.get("/me")
    async def me(session: SessionDep) -> dict[str, object]:
        return {"user": session.user, "attributes": dict(session)}

    app.add_middleware(SessionMiddleware, secret_key=SECRET, store=store)
    app.add_middleware(CallerContextMiddleware)
    return app


@pytest.fixture
async def store(make_store) -> SessionStore:
    store = make_store()
    await store.load_scripts()
    return store


def browser(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def test_the_downstream_gets_exactly_the_signed_id_the_client_presented(store):
    seen: list[str | None] = []
    async with browser(gateway_app(store, seen)) as client:
        presented = (await client.post("/login")).headers["X-Session-Id"]
        answer = await client.get("/ask", headers={"X-Session-Id": presented})
    assert seen == [presented] and "." in presented
    assert answer.json()["user"] == "ann"


async def test_a_session_created_in_this_request_is_written_first_and_its_new_id_forwarded(store):
    seen: list[str | None] = []
    async with browser(gateway_app(store, seen)) as client:
        answer = await client.post("/login-and-ask")
        issued = answer.headers["X-Session-Id"]
        later = await client.get("/me", headers={"X-Session-Id": issued})
    assert answer.json() == {"user": "ann", "attributes": {"theme": "dark"}}
    assert seen == [issued]
    assert [c.split(";")[0] for c in answer.headers.get_list("set-cookie")] == [f"session={issued}"]
    assert later.json() == {"user": "ann", "attributes": {"theme": "dark", "after_call": True}}
    assert len(await store.sessions_of("ann")) == 1, "written once, not again at response time"


async def test_a_login_over_an_existing_session_forwards_the_new_id_and_the_old_one_dies(store):
    seen: list[str | None] = []
    async with browser(gateway_app(store, seen)) as client:
        old = (await client.post("/login")).headers["X-Session-Id"]
        answer = await client.post("/login-and-ask", headers={"X-Session-Id": old})
        with_old = await client.get("/me", headers={"X-Session-Id": old})
    new = answer.headers["X-Session-Id"]
    assert seen == [new] and new != old
    assert with_old.json()["user"] is None


async def test_a_session_ended_in_this_request_is_not_forwarded(store):
    seen: list[str | None] = []
    async with browser(gateway_app(store, seen)) as client:
        presented = (await client.post("/login")).headers["X-Session-Id"]
        answer = await client.post("/logout-and-ask", headers={"X-Session-Id": presented})
    assert seen == [None]
    assert answer.json()["user"] is None


async def test_a_request_without_a_session_forwards_none_and_creates_none(store):
    seen: list[str | None] = []
    async with browser(gateway_app(store, seen)) as client:
        answer = await client.get("/ask")
    assert seen == [None]
    assert "set-cookie" not in answer.headers
