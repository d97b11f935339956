"""`sessionlib.SessionMiddleware` behaves like Starlette's `SessionMiddleware`, keeps
sessions in Redis, and turns store trouble into clear HTTP answers."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import sessionlib
from sessionlib.config import SessionSettings
from sessionlib.fastapi import CurrentUser, SessionDep
from sessionlib.resilience import RetryPolicy
from sessionlib.store import SessionStore

pytestmark = pytest.mark.integration

SECRET = "a-secret-key-for-tests-0123456789"


def counter_app(middleware_class, **middleware_kwargs) -> Starlette:
    """An app written for Starlette's SessionMiddleware, untouched but for the import."""

    async def increment(request: Request):
        request.session["count"] = request.session.get("count", 0) + 1
        return JSONResponse({"count": request.session["count"]})

    async def peek(request: Request):
        return JSONResponse({"count": request.session.get("count")})

    async def clear(request: Request):
        request.session.clear()
        return JSONResponse({})

    async def fill(request: Request):
        request.session["blob"] = "x" * int(request.query_params["n"])
        return JSONResponse({})

    app = Starlette(
        routes=[
            Route("/increment", increment, methods=["POST"]),
            Route("/peek", peek),
            Route("/clear", clear, methods=["POST"]),
            Route("/fill", fill, methods=["POST"]),
        ]
    )
    app.add_middleware(middleware_class, secret_key=SECRET, **middleware_kwargs)
    return app


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def redis_store(make_store):
    store = make_store(max_session_bytes=10_000)
    await store.load_scripts()
    return store


@pytest.fixture(params=["starlette", "sessionlib"])
def drop_in(request, redis_store):
    if request.param == "starlette":
        return counter_app(StarletteSessionMiddleware, session_cookie="sid", max_age=600)
    return counter_app(
        sessionlib.SessionMiddleware, session_cookie="sid", max_age=600, store=redis_store
    )


async def test_swapping_the_import_keeps_request_session_working(drop_in):
    async with client(drop_in) as c:
        assert (await c.post("/increment")).json() == {"count": 1}
        assert (await c.post("/increment")).json() == {"count": 2}
        assert (await c.get("/peek")).json() == {"count": 2}


async def test_clearing_the_session_deletes_the_cookie(drop_in):
    async with client(drop_in) as c:
        await c.post("/increment")
        response = await c.post("/clear")
        assert "sid=" in response.headers["set-cookie"]
        assert (
            "Max-Age=0" in response.headers["set-cookie"]
            or "expires=Thu, 01 Jan 1970" in (response.headers["set-cookie"])
        )
        assert (await c.get("/peek")).json() == {"count": None}


async def test_the_session_lives_in_redis_and_the_cookie_holds_only_a_signed_id(redis_store):
    app = counter_app(sessionlib.SessionMiddleware, store=redis_store)
    async with client(app) as c:
        response = await c.post("/increment")
        value = response.cookies["session"]
        raw_id, _, signature = value.partition(".")
        assert len(raw_id) == 43 and signature
        assert (await redis_store.load(raw_id)).attributes == {"count": 1}
        assert response.headers["x-session-id"] == value


async def test_an_untouched_session_sets_no_cookie(redis_store):
    app = counter_app(sessionlib.SessionMiddleware, store=redis_store)
    async with client(app) as c:
        await c.post("/increment")
        assert "set-cookie" not in (await c.get("/peek")).headers
        assert "set-cookie" not in (await c.get("/peek")).headers


async def test_no_session_means_no_cookie_and_no_redis_round_trip(redis_store, round_trips):
    app = counter_app(sessionlib.SessionMiddleware, store=redis_store)
    async with client(app) as c:
        round_trips.reset()
        response = await c.get("/peek")
        assert "set-cookie" not in response.headers
        assert round_trips.count == 0


async def test_a_read_costs_one_round_trip_and_a_write_two(redis_store, round_trips):
    app = counter_app(sessionlib.SessionMiddleware, store=redis_store)
    async with client(app) as c:
        await c.post("/increment")
        await c.get("/peek")
        round_trips.reset()
        await c.get("/peek")
        assert round_trips.count == 1
        round_trips.reset()
        await c.post("/increment")
        assert round_trips.count == 2


async def test_session_id_is_accepted_from_the_x_session_id_header(redis_store):
    app = counter_app(sessionlib.SessionMiddleware, store=redis_store)
    async with client(app) as browser, client(app) as service:
        session_id = (await browser.post("/increment")).headers["x-session-id"]
        response = await service.get("/peek", headers={"X-Session-Id": session_id})
        assert response.json() == {"count": 1}


@pytest.mark.parametrize(
    "presented",
    [
        "not-an-id",
        "A" * 43,
        "A" * 43 + ".forgedsignatureforgedsignatureforgedsigna",
        "é" * 43,
        "x" * 10_000,
    ],
)
async def test_malformed_or_forged_ids_are_no_session_and_never_reach_redis(
    redis_store, round_trips, presented
):
    app = counter_app(sessionlib.SessionMiddleware, store=redis_store)
    async with client(app) as c:
        round_trips.reset()
        response = await c.get("/peek", headers={"X-Session-Id": presented.encode()})
        assert response.status_code == 200 and response.json() == {"count": None}
        assert round_trips.count == 0


async def test_an_oversized_session_is_a_413_and_the_stored_session_is_unchanged(redis_store):
    app = counter_app(sessionlib.SessionMiddleware, store=redis_store)
    async with client(app) as c:
        await c.post("/increment")
        response = await c.post("/fill", params={"n": 50_000})
        assert response.status_code == 413
        assert "too large" in response.json()["detail"]
        assert (await c.get("/peek")).json() == {"count": 1}


async def test_store_unreachable_is_a_503_with_retry_after(unused_tcp_port):
    from redis.asyncio import Redis

    dead = SessionStore(
        Redis(port=unused_tcp_port, socket_connect_timeout=0.2),
        SessionSettings(),
        retry=RetryPolicy(deadline_seconds=0.3),
    )
    app = counter_app(sessionlib.SessionMiddleware, store=dead)
    async with client(app) as c:
        response = await c.post("/increment")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["detail"].startswith("session store unavailable")


async def test_prod_style_cookie_flags(make_store):
    store = make_store(cookie_secure=True, cookie_host_prefix=True, cookie_same_site="strict")
    app = counter_app(sessionlib.SessionMiddleware, store=store)
    async with client(app) as c:
        cookie = (await c.post("/increment")).headers["set-cookie"]
        assert cookie.startswith("__Host-session=")
        assert {"secure", "httponly", "samesite=strict"} <= set(cookie.lower().split("; "))


def login_app(store: SessionStore) -> FastAPI:
    app = FastAPI()
    app.add_middleware(sessionlib.SessionMiddleware, store=store)

    @app.post("/login/{user}")
    async def login(user: str, session: SessionDep):
        session.login(user)
        return {"user": user}

    @app.get("/me")
    async def me(user: CurrentUser):
        return {"user": user}

    @app.post("/logout", status_code=204)
    async def logout(session: SessionDep):
        session.invalidate()

    return app


async def test_current_user_dependency_answers_401_without_a_login(redis_store):
    async with client(login_app(redis_store)) as c:
        response = await c.get("/me")
        assert response.status_code == 401 and response.json() == {"detail": "not logged in"}


async def test_login_regenerates_the_id_and_logout_deletes_the_session(redis_store):
    async with client(login_app(redis_store)) as c:
        first = (await c.post("/login/ann")).headers["x-session-id"]
        assert (await c.get("/me")).json() == {"user": "ann"}
        second = (await c.post("/login/ann")).headers["x-session-id"]
        assert second != first
        stale = await c.get("/me", headers={"X-Session-Id": first})
        assert stale.status_code == 401
        await c.post("/logout")
        assert (await c.get("/me", headers={"X-Session-Id": second})).status_code == 401
        assert await redis_store.sessions_of("ann") == []


async def test_excluded_paths_never_touch_the_store_even_with_a_session_cookie(
    redis_store, round_trips
):
    async def healthz(request: Request):
        return JSONResponse({"session": "session" in request.scope})

    app = counter_app(sessionlib.SessionMiddleware, store=redis_store, exclude_paths={"/healthz"})
    app.router.routes.append(Route("/healthz", healthz))
    async with client(app) as c:
        await c.post("/increment")
        round_trips.reset()
        response = await c.get("/healthz")
        assert response.json() == {"session": False}
        assert round_trips.count == 0


async def test_starlette_keywords_apply_to_this_middleware_and_leave_a_shared_store_alone(
    redis_store,
):
    middleware = sessionlib.SessionMiddleware(
        Starlette(), store=redis_store, max_age=60, session_cookie="sid"
    )
    assert middleware.store.settings.idle_timeout_seconds == 60
    assert middleware.store.redis is redis_store.redis, "one connection, not two"
    assert redis_store.settings.idle_timeout_seconds == 1800
    assert middleware.cookie.name == "sid" and redis_store.settings.cookie_name == "session"


# -- the session id in a response header is a choice (issue 12, point 13) ---------------


class Gate:
    """Holds a request inside its handler (after its session loaded) until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    async def hold(self) -> None:
        self.entered.set()
        await self.released.wait()


def account_app(store: SessionStore, gate: Gate | None = None) -> FastAPI:
    """Login, a cart of one attribute per item, clear(), and slow routes for two tabs."""
    app = FastAPI()
    app.add_middleware(sessionlib.SessionMiddleware, store=store)
    held = gate or Gate()

    @app.post("/login/{user}")
    async def login(user: str, session: SessionDep):
        session.login(user)

    @app.post("/login-exposing-the-id/{user}")
    async def login_exposing_the_id(user: str, session: SessionDep):
        session.login(user)
        session.expose_id()

    @app.get("/me")
    async def me(session: SessionDep):
        return {"user": session.user, "attributes": dict(session)}

    @app.post("/cart/{sku}")
    async def add(sku: str, session: SessionDep):
        session[f"cart:{sku}"] = 1

    @app.delete("/cart/{sku}")
    async def remove(sku: str, session: SessionDep):
        del session[f"cart:{sku}"]

    @app.post("/clear")
    async def clear(session: SessionDep):
        session.clear()

    @app.post("/clear-then-write")
    async def clear_then_write(session: SessionDep):
        session.clear()
        session["theme"] = "dark"

    @app.post("/clear-then-login/{user}")
    async def clear_then_login(user: str, session: SessionDep):
        session.clear()
        session.login(user)
        session["theme"] = "dark"

    @app.get("/slow/me")
    async def slow_me(session: SessionDep):
        user = session.user
        await held.hold()
        return {"user": user}

    @app.post("/slow/cart/{sku}")
    async def slow_add(sku: str, session: SessionDep):
        await held.hold()
        session[f"cart:{sku}"] = 1

    return app


async def test_when_requested_a_cookie_client_gets_its_new_id_only_in_the_cookie(make_store):
    store = make_store(expose_id_header="when_requested")
    async with client(account_app(store)) as browser:
        response = await browser.post("/cart/book")
    assert "session=" in response.headers["set-cookie"]
    assert "x-session-id" not in response.headers


@pytest.mark.parametrize("presented", ["", "an-unknown-id"])
async def test_when_requested_a_client_that_sends_the_header_gets_its_new_id_in_it(
    make_store, presented
):
    store = make_store(expose_id_header="when_requested")
    async with client(account_app(store)) as service:
        response = await service.post("/login/ann", headers={"X-Session-Id": presented})
        issued = response.headers["x-session-id"]
        me = await service.get("/me", headers={"X-Session-Id": issued})
    assert me.json()["user"] == "ann"


async def test_when_requested_a_header_client_gets_the_id_a_login_regenerates(make_store):
    store = make_store(expose_id_header="when_requested")
    old = await store.create({"k": 1})
    async with client(account_app(store)) as service:
        response = await service.post("/login/ann", headers={"X-Session-Id": old})
    assert response.headers["x-session-id"] not in ("", old)


async def test_never_sends_a_new_id_in_the_header_even_to_header_clients(make_store):
    store = make_store(expose_id_header="never")
    async with client(account_app(store)) as service:
        response = await service.post("/login/ann", headers={"X-Session-Id": ""})
    assert "x-session-id" not in response.headers and "set-cookie" in response.headers


async def test_an_endpoint_that_exposes_the_id_sends_it_whatever_the_setting(make_store):
    store = make_store(expose_id_header="never")
    async with client(account_app(store)) as browser:
        response = await browser.post("/login-exposing-the-id/ann")
    issued = response.headers["x-session-id"]
    assert response.headers["set-cookie"].startswith(f"session={issued};")


# -- logout semantics (issue 12, point 4) ------------------------------------------------


async def test_clear_logs_out_a_logged_in_session_without_attributes_everywhere(redis_store):
    async with (
        client(account_app(redis_store)) as browser,
        client(account_app(redis_store)) as other_service,
    ):
        session_id = (await browser.post("/login/ann")).headers["x-session-id"]
        cleared = await browser.post("/clear")
        elsewhere = await other_service.get("/me", headers={"X-Session-Id": session_id})
    assert "01 Jan 1970" in cleared.headers["set-cookie"]
    assert elsewhere.json() == {"user": None, "attributes": {}}
    assert await redis_store.sessions_of("ann") == []


async def test_removing_the_last_attribute_of_a_logged_in_session_keeps_it_logged_in(
    redis_store,
):
    async with client(account_app(redis_store)) as browser:
        await browser.post("/login/ann")
        await browser.post("/cart/book")
        emptied = await browser.delete("/cart/book")
        me = await browser.get("/me")
    assert "01 Jan 1970" not in emptied.headers.get("set-cookie", "")
    assert me.json() == {"user": "ann", "attributes": {}}
    assert len(await redis_store.sessions_of("ann")) == 1


async def test_clear_then_write_starts_a_new_anonymous_session_under_a_new_id(redis_store):
    async with client(account_app(redis_store)) as browser:
        old = (await browser.post("/login/ann")).headers["x-session-id"]
        await browser.post("/cart/book")
        response = await browser.post("/clear-then-write")
        me = await browser.get("/me")
        through_old = await browser.get("/me", headers={"X-Session-Id": old})
    assert response.headers["x-session-id"] != old
    assert me.json() == {"user": None, "attributes": {"theme": "dark"}}
    assert through_old.json() == {"user": None, "attributes": {}}
    assert await redis_store.sessions_of("ann") == []


async def test_a_login_after_clear_gets_a_new_session_and_the_old_user_is_logged_out(
    redis_store,
):
    async with client(account_app(redis_store)) as browser:
        old = (await browser.post("/login/ann")).headers["x-session-id"]
        await browser.post("/cart/book")
        new = (await browser.post("/clear-then-login/bob")).headers["x-session-id"]
        me = await browser.get("/me")
    assert new != old and await redis_store.load(old) is None
    assert me.json() == {"user": "bob", "attributes": {"theme": "dark"}}
    assert await redis_store.sessions_of("ann") == []


async def test_a_tab_reading_while_another_clears_does_not_keep_the_login(redis_store):
    gate = Gate()
    async with client(account_app(redis_store, gate)) as browser:
        await browser.post("/login/ann")
        reading = asyncio.create_task(browser.get("/slow/me"))
        await gate.entered.wait()
        await browser.post("/clear")
        gate.released.set()
        read = await reading
        after = await browser.get("/me")
    assert read.json() == {"user": "ann"}, "loaded before the logout"
    assert "set-cookie" not in read.headers, "the old id is not handed back"
    assert after.json() == {"user": None, "attributes": {}}
    assert await redis_store.sessions_of("ann") == []


async def test_a_tab_writing_while_another_clears_does_not_bring_the_session_back(
    redis_store,
):
    gate = Gate()
    async with client(account_app(redis_store, gate)) as browser:
        old = (await browser.post("/login/ann")).headers["x-session-id"]
        writing = asyncio.create_task(browser.post("/slow/cart/book"))
        await gate.entered.wait()
        await browser.post("/clear")
        gate.released.set()
        written = await writing
    assert "01 Jan 1970" in written.headers["set-cookie"], "the browser drops the dead id"
    assert await redis_store.load(old) is None
    assert await redis_store.sessions_of("ann") == []


async def test_a_tab_emptying_the_cart_while_another_adds_keeps_the_login_and_the_add(
    redis_store,
):
    gate = Gate()
    async with client(account_app(redis_store, gate)) as browser:
        await browser.post("/login/ann")
        await browser.post("/cart/book")
        adding = asyncio.create_task(browser.post("/slow/cart/pen"))
        await gate.entered.wait()
        await browser.delete("/cart/book")
        gate.released.set()
        await adding
        me = await browser.get("/me")
    assert me.json() == {"user": "ann", "attributes": {"cart:pen": 1}}
