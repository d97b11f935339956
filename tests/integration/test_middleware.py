"""`sessionlib.SessionMiddleware` behaves like Starlette's `SessionMiddleware`, keeps
sessions in Redis, and turns store trouble into clear HTTP answers."""

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
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


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
