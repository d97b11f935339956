"""`sessionlib.SessionMiddleware` behaves like the installed Starlette's `SessionMiddleware`:
the same app, swapped import, gives the same cookies, headers and `request.session`.

Tests parametrised with `flavour` run once against Starlette's own middleware and once
against ours on a real Redis; the rest state where ours differs on purpose (README,
"Differences from Starlette's SessionMiddleware")."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import sessionlib
from sessionlib.config import Settings
from sessionlib.store import SessionStore

pytestmark = pytest.mark.integration

SECRET = "a-secret-key-for-tests-0123456789"
FOURTEEN_DAYS = 14 * 24 * 60 * 60
START = {"a": {"n": 1}, "b": 2}

# Each way `request.session` can be changed, and what the next request then reads.
MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], object], dict[str, Any]]] = {
    "setitem": (lambda s: s.__setitem__("c", 3), {**START, "c": 3}),
    "del": (lambda s: s.__delitem__("b"), {"a": {"n": 1}}),
    "pop": (lambda s: s.pop("b"), {"a": {"n": 1}}),
    "popitem": (lambda s: s.popitem(), {"a": {"n": 1}}),
    "ior": (lambda s: s.__ior__({"c": 3}), {**START, "c": 3}),
    "setdefault": (lambda s: s.setdefault("c", 3), {**START, "c": 3}),
    "update": (lambda s: s.update(c=3), {**START, "c": 3}),
    "clear-then-set": (lambda s: (s.clear(), s.__setitem__("c", 3)), {"c": 3}),
}
NO_OPS: dict[str, Callable[[dict[str, Any]], object]] = {
    "setdefault-existing": lambda s: s.setdefault("b", 9),
    "pop-missing-with-default": lambda s: s.pop("missing", None),
    "get": lambda s: s.get("b"),
}


def session_app(middleware_class: type, **middleware_kwargs: Any) -> Starlette:
    """An app written for Starlette's SessionMiddleware, untouched but for the import."""

    async def read(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    async def write(request: Request) -> JSONResponse:
        request.session.update(await request.json())
        return JSONResponse(dict(request.session))

    async def mutate(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        change = MUTATIONS[name][0] if name in MUTATIONS else NO_OPS[name]
        change(request.session)
        return JSONResponse(dict(request.session))

    async def nested(request: Request) -> JSONResponse:
        request.session["a"]["n"] = 5  # the session itself never sees this assignment
        return JSONResponse(dict(request.session))

    async def clear(request: Request) -> JSONResponse:
        request.session.clear()
        return JSONResponse({})

    async def untouched(request: Request) -> PlainTextResponse:
        return PlainTextResponse("no session here")

    app = Starlette(
        routes=[
            Route("/", read),
            Route("/write", write, methods=["POST"]),
            Route("/mutate/{name}", mutate, methods=["POST"]),
            Route("/nested", nested, methods=["POST"]),
            Route("/clear", clear, methods=["POST"]),
            Route("/untouched", untouched),
        ]
    )
    app.add_middleware(middleware_class, secret_key=SECRET, **middleware_kwargs)
    return app


def client(app: Starlette) -> httpx.AsyncClient:
    # https, so that the client's cookie jar sends `secure` cookies back too.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://test")


@pytest.fixture
async def redis_store(make_store) -> SessionStore:
    # A zero throttle slides the TTL on every read: the case that used to re-send the cookie.
    store = make_store(refresh_throttle_seconds=0)
    await store.load_scripts()
    return store


@pytest.fixture(params=["starlette", "sessionlib"])
def flavour(request, redis_store) -> Callable[..., Starlette]:
    """Builds the same app on Starlette's middleware or on ours (with the Redis store)."""
    if request.param == "starlette":
        return lambda **kwargs: session_app(StarletteSessionMiddleware, **kwargs)
    return lambda **kwargs: session_app(sessionlib.SessionMiddleware, store=redis_store, **kwargs)


def cookie_attributes(set_cookie: str) -> dict[str, str]:
    """The cookie's attributes as a cookie parser sees them (names lower-cased)."""
    parsed = SimpleCookie()
    parsed.load(set_cookie.replace("; partitioned", ""))  # SimpleCookie < 3.14 lacks it
    (morsel,) = parsed.values()
    attributes = {k: str(v) for k, v in morsel.items() if v}
    if re.search(r";\s*partitioned\b", set_cookie, re.IGNORECASE):
        attributes["partitioned"] = "True"
    return attributes


# -- the cookie's lifetime (max_age) ----------------------------------------------------


async def test_built_starlette_style_the_cookie_lives_fourteen_days(flavour):
    async with client(flavour(session_cookie="sid")) as c:
        response = await c.post("/write", json={"a": 1})
    assert cookie_attributes(response.headers["set-cookie"])["max-age"] == str(FOURTEEN_DAYS)


async def test_max_age_is_the_cookies_max_age(flavour):
    async with client(flavour(session_cookie="sid", max_age=600)) as c:
        response = await c.post("/write", json={"a": 1})
    assert cookie_attributes(response.headers["set-cookie"])["max-age"] == "600"


async def test_max_age_none_makes_a_browser_session_cookie_that_still_works(flavour):
    async with client(flavour(session_cookie="sid", max_age=None)) as c:
        response = await c.post("/write", json={"a": 1})
        later = await c.get("/")
    assert "max-age" not in cookie_attributes(response.headers["set-cookie"])
    assert "expires" not in cookie_attributes(response.headers["set-cookie"])
    assert later.json() == {"a": 1}


@pytest.mark.parametrize("max_age", [0, -1])
async def test_max_age_zero_or_negative_keeps_nothing_past_the_response(flavour, max_age):
    async with client(flavour(session_cookie="sid", max_age=max_age)) as c:
        response = await c.post("/write", json={"a": 1})
        later = await c.get("/")
    assert response.json() == {"a": 1}
    assert cookie_attributes(response.headers["set-cookie"])["max-age"] == str(max_age)
    assert later.json() == {}


@pytest.mark.parametrize("max_age", [0, -1])
async def test_max_age_zero_or_negative_writes_nothing_to_redis(redis_store, max_age):
    app = session_app(sessionlib.SessionMiddleware, store=redis_store, max_age=max_age)
    async with client(app) as c:
        await c.post("/write", json={"a": 1})
    assert await redis_store.redis.dbsize() == 0


async def test_without_starlette_keywords_max_age_counts_down_to_the_absolute_expiry(make_store):
    store = make_store(idle_timeout_seconds=600, absolute_timeout_seconds=3600)
    async with client(session_app(sessionlib.SessionMiddleware, store=store)) as c:
        first = await c.post("/write", json={"a": 1})
        time.sleep(1.1)
        second = await c.post("/write", json={"a": 2})
    first_age = int(cookie_attributes(first.headers["set-cookie"])["max-age"])
    second_age = int(cookie_attributes(second.headers["set-cookie"])["max-age"])
    assert 3595 <= first_age <= 3600, "the absolute timeout, not the idle timeout"
    assert second_age < first_age, "a later cookie dies with the session, not later"


async def test_with_settings_the_idle_timeout_is_not_replaced_by_starlettes_default(
    redis_server,
):
    settings = Settings(
        redis={"mode": "standalone", "url": redis_server.url},
        session={"idle_timeout_seconds": 600, "absolute_timeout_seconds": 3600},
    )
    middleware = sessionlib.SessionMiddleware(Starlette(), settings=settings, session_cookie="sid")
    try:
        assert middleware.store.settings.idle_timeout_seconds == 600
    finally:
        await middleware.store.close()


async def test_a_store_with_cookie_keywords_is_starlette_style_and_a_bare_store_is_not(
    redis_store,
):
    bare = sessionlib.SessionMiddleware(Starlette(), secret_key=SECRET, store=redis_store)
    keyworded = sessionlib.SessionMiddleware(Starlette(), store=redis_store, session_cookie="sid")
    assert bare.store.settings.idle_timeout_seconds == redis_store.settings.idle_timeout_seconds
    assert keyworded.store.settings.idle_timeout_seconds == FOURTEEN_DAYS


# -- when Set-Cookie and Vary are sent ----------------------------------------------------


async def test_reading_the_session_never_resends_the_cookie(flavour):
    async with client(flavour(session_cookie="sid", max_age=600)) as c:
        await c.post("/write", json={"a": 1})
        read = await c.get("/")
    assert read.json() == {"a": 1}
    assert "set-cookie" not in read.headers


async def test_reading_the_session_sends_vary_cookie(flavour):
    async with client(flavour(session_cookie="sid")) as c:
        await c.post("/write", json={"a": 1})
        read = await c.get("/")
    vary = {v.strip().lower() for v in read.headers.get("vary", "").split(",")}
    assert "cookie" in vary


async def test_a_route_that_never_touches_the_session_sends_no_vary_and_no_cookie(flavour):
    async with client(flavour(session_cookie="sid")) as c:
        await c.post("/write", json={"a": 1})
        response = await c.get("/untouched")
    assert "vary" not in response.headers and "set-cookie" not in response.headers


@pytest.mark.parametrize("mutation", list(MUTATIONS))
async def test_every_dict_mutation_is_saved_and_resends_the_cookie(flavour, mutation):
    async with client(flavour(session_cookie="sid")) as c:
        await c.post("/write", json=START)
        changed = await c.post(f"/mutate/{mutation}")
        later = await c.get("/")
    assert "set-cookie" in changed.headers
    if mutation == "popitem":  # which item goes depends on dict order; one of two does
        assert len(later.json()) == 1 and later.json().items() <= START.items()
    else:
        assert later.json() == MUTATIONS[mutation][1]


@pytest.mark.parametrize("no_op", list(NO_OPS))
async def test_calls_that_change_nothing_send_no_cookie(flavour, no_op):
    async with client(flavour(session_cookie="sid")) as c:
        await c.post("/write", json=START)
        response = await c.post(f"/mutate/{no_op}")
        later = await c.get("/")
    assert "set-cookie" not in response.headers
    assert later.json() == START


async def test_a_nested_change_is_saved_and_resends_the_cookie(redis_store):
    """On purpose unlike Starlette, which never sees `s["a"]["n"] = 5` and drops it."""
    app = session_app(sessionlib.SessionMiddleware, store=redis_store, session_cookie="sid")
    async with client(app) as c:
        await c.post("/write", json=START)
        changed = await c.post("/nested")
        later = await c.get("/")
    assert "set-cookie" in changed.headers
    assert later.json() == {"a": {"n": 5}, "b": 2}


async def test_emptying_an_anonymous_session_clears_the_cookie(flavour):
    async with client(flavour(session_cookie="sid")) as c:
        await c.post("/write", json={"b": 2})
        emptied = await c.post("/mutate/del")
        later = await c.get("/")
    assert cookie_attributes(emptied.headers["set-cookie"])["expires"].startswith(
        "Thu, 01 Jan 1970"
    )
    assert later.json() == {}
    assert "sid" not in c.cookies


async def test_emptying_an_anonymous_session_deletes_it_in_redis(redis_store):
    app = session_app(sessionlib.SessionMiddleware, store=redis_store, session_cookie="sid")
    async with client(app) as c:
        await c.post("/write", json={"b": 2})
        await c.post("/mutate/del")
    assert await redis_store.redis.dbsize() == 0


# -- cookie attributes --------------------------------------------------------------------


async def _set_cookies(app: Starlette, path: str) -> list[str]:
    async with client(app) as c:
        response = await c.post("/write", json={"a": 1})
        if path == "/clear":
            response = await c.post("/clear")
    return response.headers.get_list("set-cookie")


def _without_value(set_cookie: str) -> str:
    return re.sub(r"^([^=]+)=[^;]*", r"\1=<value>", set_cookie)


@pytest.mark.parametrize(
    "keywords",
    [
        {"session_cookie": "session"},
        {"max_age": None},
        {"https_only": True, "same_site": "strict", "path": "/"},
        {"https_only": True, "same_site": "none", "partitioned": True},
        {"domain": "example.test", "max_age": 60},
    ],
    ids=["starlette-defaults", "browser-session", "secure-strict", "partitioned", "domain"],
)
async def test_set_cookie_is_spelled_as_starlette_spells_it(redis_store, keywords):
    ours = session_app(sessionlib.SessionMiddleware, store=redis_store, **keywords)
    theirs = session_app(StarletteSessionMiddleware, **keywords)
    (our_cookie,) = await _set_cookies(ours, "/write")
    (their_cookie,) = await _set_cookies(theirs, "/write")
    assert _without_value(our_cookie) == _without_value(their_cookie)
    assert cookie_attributes(our_cookie) == cookie_attributes(their_cookie)


async def test_the_clearing_cookie_is_spelled_as_starlette_spells_it(redis_store):
    ours = session_app(sessionlib.SessionMiddleware, store=redis_store, https_only=True)
    theirs = session_app(StarletteSessionMiddleware, https_only=True)
    assert await _set_cookies(ours, "/clear") == await _set_cookies(theirs, "/clear")


async def test_partitioned_adds_partitioned_to_the_cookie(flavour):
    app = flavour(session_cookie="sid", https_only=True, same_site="none", partitioned=True)
    async with client(app) as c:
        response = await c.post("/write", json={"a": 1})
    assert cookie_attributes(response.headers["set-cookie"])["partitioned"] == "True"
