"""The propagating transport: who gets the session id and request id (allow-listed base
URLs only, matched by scheme, host, port and path prefix), and which calls are retried.

The downstream is an httpx MockTransport that records what reached it; the transport and
the caller-binding middleware under test are the real ones."""

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionlib.propagation import (
    CALLER_EXTENSION,
    AllowList,
    CallerContext,
    CallerContextMiddleware,
    InternalBaseURL,
    PropagatingTransport,
    RetryPolicy,
    current_caller,
    propagating_client,
)

CART = "http://cart.internal:8081"
CALLER = CallerContext(request_id="req-1", forwarded_session_id="sid.signature")


class Downstream:
    """Answers each request with the next status (then 200) and records what it saw."""

    def __init__(self, *statuses: int, fail_connects: int = 0) -> None:
        self.statuses = list(statuses)
        self.fail_connects = fail_connects
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.fail_connects:
            self.fail_connects -= 1
            raise httpx.ConnectError("connection refused", request=request)
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, json={"ok": status < 400})

    @property
    def headers(self) -> httpx.Headers:
        return self.seen[-1].headers


def client_for(
    downstream: Downstream, allow: list[str], retry: RetryPolicy | None = None
) -> httpx.AsyncClient:
    fast = retry or RetryPolicy(backoff_seconds=0.001, max_backoff_seconds=0.002)
    return propagating_client(allow, inner=httpx.MockTransport(downstream), retry=fast)


async def call(client: httpx.AsyncClient, method: str, url: str, **kwargs) -> httpx.Response:
    extensions = {CALLER_EXTENSION: CALLER}
    async with client:
        return await client.request(method, url, extensions=extensions, **kwargs)


# -- the allow-list -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://cart.internal:8081/cart",
        "http://cart.internal:8081/cart/items?x=1",
        "http://CART.internal:8081/cart",
        "http://cart.internal:8081/cart/",
    ],
)
def test_urls_under_an_allowed_base_url_are_allowed(url):
    assert AllowList([f"{CART}/cart"]).allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://cart.internal:8081/cart",  # other scheme
        "http://cart.internal:8082/cart",  # other port
        "http://cart.internal/cart",  # default port 80 is another port
        "http://cart.internal.evil.test:8081/cart",  # the allowed host as a prefix
        "http://evil.test/http://cart.internal:8081/cart",  # the allowed URL in the path
        "http://cart.internal:8081@evil.test/cart",  # the allowed host as userinfo
        "http://evil.test:8081/cart?next=http://cart.internal:8081/cart",
        "http://cart.internal:8081/cartography",  # the path prefix as a substring
        "http://cart.internal:8081/",  # above the prefix
        "http://cart.internal:8081/cart/%2e%2e/admin",  # climbing out, encoded
    ],
)
def test_look_alike_urls_are_not_allowed(url):
    assert not AllowList([f"{CART}/cart"]).allows(url)


def test_an_explicit_default_port_is_the_same_as_none():
    assert AllowList(["https://api.internal"]).allows("https://api.internal:443/x")
    assert AllowList(["http://api.internal:80"]).allows("http://api.internal/x")


@pytest.mark.parametrize(
    "base",
    ["cart.internal:8081", "ftp://cart.internal", "http://u:p@cart.internal", "http://c/?q=1"],
)
def test_a_base_url_that_is_not_a_plain_http_origin_and_path_is_refused(base):
    with pytest.raises(ValueError):
        InternalBaseURL.parse(base)


# -- what a call carries --------------------------------------------------------------


async def test_an_allow_listed_call_carries_the_callers_session_id_and_request_id():
    downstream = Downstream()
    await call(client_for(downstream, [CART]), "GET", f"{CART}/cart")
    assert downstream.headers["X-Session-Id"] == "sid.signature"
    assert downstream.headers["X-Request-Id"] == "req-1"


async def test_a_call_to_another_host_carries_neither_header_even_when_set_by_hand():
    downstream = Downstream()
    await call(
        client_for(downstream, [CART]),
        "GET",
        "https://partner.example/api",
        headers={"X-Session-Id": "sid.signature", "X-Request-Id": "req-1"},
    )
    assert "X-Session-Id" not in downstream.headers
    assert "X-Request-Id" not in downstream.headers


async def test_a_redirect_from_an_internal_service_to_an_outside_host_drops_both_headers():
    def downstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "cart.internal":
            return httpx.Response(302, headers={"location": "https://evil.test/steal"})
        return httpx.Response(200)

    seen: list[httpx.Request] = []
    client = propagating_client([CART], inner=httpx.MockTransport(downstream))
    async with client:
        await client.get(
            f"{CART}/cart", follow_redirects=True, extensions={CALLER_EXTENSION: CALLER}
        )
    assert [r.url.host for r in seen] == ["cart.internal", "evil.test"]
    assert seen[0].headers["X-Session-Id"] == "sid.signature"
    assert "X-Session-Id" not in seen[1].headers and "X-Request-Id" not in seen[1].headers


async def test_without_a_caller_an_internal_call_gets_a_fresh_request_id_and_no_session():
    downstream = Downstream()
    async with client_for(downstream, [CART]) as client:
        await client.get(f"{CART}/cart")
        await client.get(f"{CART}/cart")
    first, second = (r.headers["X-Request-Id"] for r in downstream.seen)
    assert first != second and len(first) == 32
    assert "X-Session-Id" not in downstream.headers


async def test_the_session_header_name_comes_from_the_settings():
    downstream = Downstream()
    client = propagating_client(
        [CART], inner=httpx.MockTransport(downstream), session_header="X-Auth-Session"
    )
    await call(client, "GET", f"{CART}/cart")
    assert downstream.headers["X-Auth-Session"] == "sid.signature"
    assert "X-Session-Id" not in downstream.headers


async def test_the_shared_client_keeps_no_cookie_from_one_caller_for_the_next():
    def downstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"set-cookie": "session=user-a; Path=/"})

    seen: list[httpx.Request] = []
    async with propagating_client([CART], inner=httpx.MockTransport(downstream)) as client:
        await client.get(f"{CART}/cart")
        await client.get(f"{CART}/cart")
    assert "cookie" not in seen[1].headers


def test_the_client_has_timeouts_and_does_not_follow_redirects():
    client = propagating_client([CART])
    assert client.timeout.connect == 1.0 and client.timeout.read == 5.0
    assert client.follow_redirects is False


# -- retries --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
async def test_an_idempotent_call_is_retried_on_503_then_succeeds(method):
    downstream = Downstream(503, 502)
    response = await call(client_for(downstream, [CART]), method, f"{CART}/cart")
    assert response.status_code == 200
    assert len(downstream.seen) == 3


async def test_retries_stop_after_the_bounded_attempts_with_the_last_answer():
    downstream = Downstream(504, 504, 504, 504, 504)
    response = await call(client_for(downstream, [CART]), "GET", f"{CART}/cart")
    assert response.status_code == 504
    assert len(downstream.seen) == 3


async def test_a_connect_error_is_retried_and_the_same_headers_are_sent_again():
    downstream = Downstream(fail_connects=2)
    response = await call(client_for(downstream, [CART]), "PUT", f"{CART}/cart", json={"a": 1})
    assert response.status_code == 200
    assert [r.headers["X-Request-Id"] for r in downstream.seen] == ["req-1"] * 3
    assert downstream.seen[-1].content == b'{"a":1}'


async def test_connect_errors_beyond_the_bound_reach_the_caller():
    downstream = Downstream(fail_connects=5)
    with pytest.raises(httpx.ConnectError):
        await call(client_for(downstream, [CART]), "GET", f"{CART}/cart")
    assert len(downstream.seen) == 3


async def test_a_post_is_never_retried():
    downstream = Downstream(503)
    response = await call(client_for(downstream, [CART]), "POST", f"{CART}/cart/items", json={})
    assert response.status_code == 503
    assert len(downstream.seen) == 1


@pytest.mark.parametrize("status", [500, 501, 429, 404])
async def test_other_statuses_are_not_retried(status):
    downstream = Downstream(status)
    response = await call(client_for(downstream, [CART]), "GET", f"{CART}/cart")
    assert response.status_code == status
    assert len(downstream.seen) == 1


def test_backoff_grows_with_each_retry_and_is_capped():
    policy = RetryPolicy(backoff_seconds=0.1, max_backoff_seconds=0.3)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.3), (10, 0.3)]:
        delays = [policy.delay(retry) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


# -- binding the incoming request -----------------------------------------------------


def app_calling_downstream(downstream: Downstream) -> CallerContextMiddleware:
    client = propagating_client([CART], inner=httpx.MockTransport(downstream))

    async def endpoint(request: Request) -> JSONResponse:
        await client.get(f"{CART}/cart")
        caller = current_caller()
        return JSONResponse({"request_id": caller.request_id if caller else None})

    app = Starlette(routes=[Route("/", endpoint)])
    return CallerContextMiddleware(app)


async def incoming(app, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.get("/", headers=headers)


async def test_the_incoming_request_id_is_forwarded_and_echoed():
    downstream = Downstream()
    response = await incoming(app_calling_downstream(downstream), {"X-Request-Id": "abc-123"})
    assert downstream.headers["X-Request-Id"] == "abc-123"
    assert response.headers["X-Request-Id"] == "abc-123"
    assert response.json() == {"request_id": "abc-123"}


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 129, "a\\nb", "<script>", "%0d"])
async def test_a_missing_or_unsafe_request_id_is_replaced_by_a_fresh_one(given):
    downstream = Downstream()
    headers = {"X-Request-Id": given} if given is not None else {}
    response = await incoming(app_calling_downstream(downstream), headers)
    forwarded = downstream.headers["X-Request-Id"]
    assert forwarded != given and len(forwarded) == 32
    assert response.headers["X-Request-Id"] == forwarded


async def test_a_request_without_a_session_forwards_no_session_id():
    downstream = Downstream()
    await incoming(app_calling_downstream(downstream), {"X-Session-Id": "not-loaded"})
    assert "X-Session-Id" not in downstream.headers


def test_the_transport_is_an_httpx_transport_you_can_wrap_around_any_other():
    inner = httpx.MockTransport(Downstream())
    transport = PropagatingTransport([CART], inner=inner)
    assert isinstance(transport, httpx.AsyncBaseTransport) and transport.inner is inner
