"""Logins, logouts and writes at once, through the middleware of two services on one
real redis-server. A request can be paused between loading its session and acting on
it, so "at once" is exact: two tabs, two services, a login, a logout."""

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import sessionlib
from sessionlib.config import load_settings
from sessionlib.middleware import MIDDLEWARE_SCOPE_KEY

pytestmark = pytest.mark.integration


class Gates:
    """Named pauses: a request waits at `pass_(name)` until the test opens that gate."""

    def __init__(self) -> None:
        self.reached: dict[str, asyncio.Event] = {}
        self.opened: dict[str, asyncio.Event] = {}

    def _pair(self, name: str) -> tuple[asyncio.Event, asyncio.Event]:
        return (
            self.reached.setdefault(name, asyncio.Event()),
            self.opened.setdefault(name, asyncio.Event()),
        )

    async def pass_(self, name: str | None) -> None:
        if name:
            reached, opened = self._pair(name)
            reached.set()
            await opened.wait()

    async def wait_until_reached(self, name: str) -> None:
        await asyncio.wait_for(self._pair(name)[0].wait(), 10)

    def open(self, name: str) -> None:
        self._pair(name)[1].set()


def service(store, gates: Gates) -> Starlette:
    """A service whose routes each pause (`?pause=name`) after the session is loaded."""

    async def act(request: Request, action) -> JSONResponse:
        await gates.pass_(request.query_params.get("pause"))
        result = action(request.session, request.query_params)
        if asyncio.iscoroutine(result):
            result = await result
        return JSONResponse(result or {"user": request.session.user, **request.session})

    async def early_commit(request: Request):
        middleware = request.scope[MIDDLEWARE_SCOPE_KEY]
        request.session.regenerate_id()
        return {"forwarded_id": await middleware.downstream_id(request.session)}

    routes = {
        "/login": lambda s, q: s.login(q["user"]),
        "/logout": lambda s, q: s.invalidate(),
        "/regenerate": lambda s, q: s.regenerate_id(),
        "/set": lambda s, q: s.__setitem__(q["name"], q["value"]),
        "/get": lambda s, q: None,
    }

    def endpoint(action):
        async def run(request: Request) -> JSONResponse:
            return await act(request, action)

        return run

    async def early(request: Request) -> JSONResponse:
        return await act(request, lambda s, q: early_commit(request))

    app = Starlette(
        routes=[
            *(
                Route(path, endpoint(action), methods=["GET", "POST"])
                for path, action in routes.items()
            ),
            Route("/early", early, methods=["POST"]),
        ]
    )
    app.add_middleware(sessionlib.SessionMiddleware, store=store, session_cookie="sid")
    return app


@pytest.fixture
async def services(make_store):
    """Gateway and cart: two middlewares, two stores, one Redis, shared gates."""
    gates = Gates()
    stores = make_store(), make_store()
    for store in stores:
        await store.load_scripts()
    yield gates, stores[0], service(stores[0], gates), service(stores[1], gates)


def browser(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


async def test_a_slow_request_on_the_old_cookie_never_clears_the_cookie_a_login_set(services):
    gates, _, gateway, _ = services
    async with browser(gateway) as tab1, browser(gateway) as tab2:
        await tab1.post("/set?name=theme&value=dark")
        old = tab1.cookies["sid"]
        tab2.cookies.set("sid", old)
        slow_write = asyncio.create_task(tab2.post("/set?name=lang&value=en&pause=slow"))
        slow_read = asyncio.create_task(tab2.get("/get?pause=slow"))
        await gates.wait_until_reached("slow")
        await tab1.post("/login?user=ann")
        assert tab1.cookies["sid"] != old
        gates.open("slow")
        write, read = await slow_write, await slow_read
    assert write.status_code == 409
    assert set_cookies(write) == [] and set_cookies(read) == []


async def test_an_id_change_racing_a_login_in_another_tab_is_a_409_that_keeps_the_cookie(
    services,
):
    gates, _, gateway, _ = services
    async with browser(gateway) as tab1, browser(gateway) as tab2:
        await tab1.post("/set?name=theme&value=dark")
        tab2.cookies.set("sid", tab1.cookies["sid"])
        change = asyncio.create_task(tab2.post("/regenerate?pause=change"))
        await gates.wait_until_reached("change")
        await tab1.post("/login?user=ann")
        gates.open("change")
        changed = await change
        assert changed.status_code == 409 and set_cookies(changed) == []
        assert (await tab1.get("/get")).json() == {"user": "ann", "theme": "dark"}


async def test_a_cart_add_that_lost_the_race_with_a_login_is_a_409_stored_nowhere(services):
    gates, _, gateway, cart = services
    async with browser(gateway) as tab, browser(cart) as cart_client:
        await tab.post("/set?name=theme&value=dark")
        old = tab.cookies["sid"]
        add = asyncio.create_task(
            cart_client.post("/set?name=cart:a:1&value=2&pause=add", headers={"X-Session-Id": old})
        )
        await gates.wait_until_reached("add")
        assert (await tab.post("/login?user=ann")).status_code == 200
        gates.open("add")
        added = await add
        after = (await tab.get("/get")).json()
    assert added.status_code == 409
    assert "login" in added.json()["detail"]
    assert after == {"user": "ann", "theme": "dark"}


async def test_the_old_id_after_a_login_is_no_session_and_no_cookie_change(services):
    _, _, gateway, _ = services
    async with browser(gateway) as tab:
        await tab.post("/set?name=theme&value=dark")
        old = tab.cookies["sid"]
        await tab.post("/login?user=ann")
        tab.cookies.clear()
        stale = await tab.get("/get", headers={"cookie": f"sid={old}"})
    assert stale.json() == {"user": None}
    assert set_cookies(stale) == []


async def test_a_login_that_loaded_the_session_before_a_logout_brings_none_of_it_back(services):
    gates, _, gateway, _ = services
    async with browser(gateway) as tab1, browser(gateway) as tab2:
        await tab1.post("/set?name=secret&value=s")
        await tab1.post("/login?user=ann")
        tab2.cookies.set("sid", tab1.cookies["sid"])
        login = asyncio.create_task(tab2.post("/login?user=bob&pause=login"))
        await gates.wait_until_reached("login")
        assert (await tab1.post("/logout")).status_code == 200
        gates.open("login")
        assert (await login).status_code == 200
        bob = (await tab2.get("/get")).json()
        ann = (await tab1.get("/get")).json()
    assert bob == {"user": "bob"}, "a fresh session: nothing of ann's"
    assert ann == {"user": None}, "ann stays logged out"


async def test_a_logout_through_the_old_id_after_a_login_ends_the_new_session(services):
    _, _, gateway, _ = services
    async with browser(gateway) as tab1, browser(gateway) as tab2:
        await tab1.post("/set?name=theme&value=dark")
        tab2.cookies.set("sid", tab1.cookies["sid"])
        await tab1.post("/login?user=ann")
        await tab2.post("/logout")  # the other tab still had the old id: logout wins
        assert (await tab1.get("/get")).json() == {"user": None}


async def test_an_early_downstream_commit_after_a_logout_creates_nothing(services):
    gates, store, gateway, _ = services
    async with browser(gateway) as tab1, browser(gateway) as tab2:
        await tab1.post("/set?name=secret&value=s")
        tab2.cookies.set("sid", tab1.cookies["sid"])
        early = asyncio.create_task(tab2.post("/early?pause=early"))
        await gates.wait_until_reached("early")
        await tab1.post("/logout")
        gates.open("early")
        answer = await early
    assert answer.json() == {"forwarded_id": None}
    assert await store.redis.keys("sessionlib:s:*") == []


async def test_regenerating_the_id_keeps_the_absolute_expiry(services):
    _, store, gateway, _ = services
    async with browser(gateway) as tab:
        await tab.post("/set?name=theme&value=dark")
        before = await store.load(tab.cookies["sid"])
        await tab.post("/regenerate")
        after = await store.load(tab.cookies["sid"])
    assert after.id != before.id
    assert after.absolute_expiry_ms == before.absolute_expiry_ms


# -- one app, several event loops --------------------------------------------------------


def counter(settings) -> Starlette:
    async def increment(request: Request) -> JSONResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"n": request.session["n"]})

    app = Starlette(routes=[Route("/", increment, methods=["POST"])])
    app.add_middleware(sessionlib.SessionMiddleware, settings=settings)
    return app


@pytest.mark.parametrize("mode", ["standalone", "sentinel"])
def test_one_app_serves_several_test_clients_each_on_its_own_event_loop(
    mode, redis_server, shared_topology
):
    if mode == "standalone":
        redis = {"mode": "standalone", "url": redis_server.url}
    else:
        redis = {
            "mode": "sentinel",
            "sentinels": [f"{h}:{p}" for h, p in shared_topology.sentinel_addresses],
            "master_name": shared_topology.master_name,
        }
    app = counter(load_settings("dev", redis=redis))
    cookie = None
    for expected in (1, 2, 3):
        with TestClient(app) as client:  # a new event loop each time
            answer = client.post("/", headers={"cookie": f"session={cookie}"} if cookie else {})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"n": expected}
            cookie = answer.cookies.get("session") or cookie
