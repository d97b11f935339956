"""The sample services over real HTTP (DESIGN §4): login, logout and /me at the gateway, the
cart reached directly or through the gateway, shared sessions, errors and probes."""

import asyncio
import uuid

import httpx
import pytest

from sessionlib.ids import SessionIdCodec, new_raw_id
from tests.e2e.harness import SIGNING_KEY, System, login

pytestmark = pytest.mark.integration


def test_login_me_and_logout_round_trip(system: System):
    gateway = system.gateway.url
    with httpx.Client(base_url=gateway) as browser:
        logged_in = browser.post("/login", json={"username": "ann", "password": "demo"})
        me = browser.get("/me")
        logged_out = browser.post("/logout")
        after = browser.get("/me")
    assert logged_in.status_code == 200 and logged_in.json() == {"user": "ann"}
    assert me.status_code == 200 and me.json()["user"] == "ann"
    assert logged_out.status_code == 204
    assert after.status_code == 401 and after.json() == {"detail": "not logged in"}


def test_login_returns_the_same_signed_id_in_the_cookie_and_the_header(system: System):
    answer = httpx.post(f"{system.gateway.url}/login", json={"username": "ann", "password": "demo"})
    session_id = answer.headers["X-Session-Id"]
    assert answer.headers["set-cookie"].startswith(f"session={session_id};")
    assert SessionIdCodec([SIGNING_KEY]).decode(session_id) is not None, "signed with the key"


def test_login_on_an_existing_session_regenerates_its_id(system: System, session_id: str):
    renewed = login(system.gateway.url, "ann", session_id=session_id)
    old = httpx.get(f"{system.gateway.url}/me", headers={"X-Session-Id": session_id})
    new = httpx.get(f"{system.gateway.url}/me", headers={"X-Session-Id": renewed})
    assert renewed != session_id
    assert old.status_code == 401
    assert new.status_code == 200 and new.json()["user"] == "ann"


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "ann", "password": "wrong"},
        {"username": "Ann", "password": "demo"},
        {"username": "a" * 65, "password": "demo"},
        {"username": "ann\n", "password": "demo"},
    ],
)
def test_wrong_password_or_username_shape_is_401(system: System, credentials):
    answer = httpx.post(f"{system.gateway.url}/login", json=credentials)
    assert answer.status_code == 401
    assert answer.json() == {"detail": "invalid username or password"}
    assert "set-cookie" not in answer.headers


def test_cart_accepts_the_session_from_the_header_or_the_cookie(system: System, session_id: str):
    cart = system.cart.url
    by_header = httpx.get(f"{cart}/cart", headers={"X-Session-Id": session_id})
    by_cookie = httpx.get(f"{cart}/cart", cookies={"session": session_id})
    assert by_header.status_code == 200 and by_header.json() == {"items": []}
    assert by_cookie.status_code == 200 and by_cookie.json() == {"items": []}


@pytest.mark.parametrize("how", ["no id", "unsigned", "forged signature", "unknown id"])
def test_cart_without_a_valid_session_is_401(system: System, session_id: str, how: str):
    raw, _, signature = session_id.partition(".")
    presented = {
        "no id": None,
        "unsigned": raw,
        "forged signature": f"{raw}.{signature[::-1]}",
        "unknown id": SessionIdCodec([SIGNING_KEY]).encode(new_raw_id()),
    }[how]
    headers = {"X-Session-Id": presented} if presented else {}
    answer = httpx.get(f"{system.cart.url}/cart", headers=headers)
    assert answer.status_code == 401 and answer.json() == {"detail": "not logged in"}


def test_items_added_through_the_gateway_are_in_the_cart_service(system: System, session_id: str):
    headers = {"X-Session-Id": session_id}
    added = httpx.post(
        f"{system.gateway.url}/cart/items", json={"sku": "book", "qty": 2}, headers=headers
    )
    direct = httpx.get(f"{system.cart.url}/cart", headers=headers)
    via_gateway = httpx.get(f"{system.gateway.url}/cart", cookies={"session": session_id})
    assert added.status_code == 201 and added.json() == {"items": [{"sku": "book", "qty": 2}]}
    assert direct.json() == via_gateway.json() == {"items": [{"sku": "book", "qty": 2}]}


def test_the_gateway_answers_401_from_cart_when_not_logged_in(system: System):
    answer = httpx.get(f"{system.gateway.url}/cart")
    assert answer.status_code == 401 and answer.json() == {"detail": "not logged in"}


def test_a_request_id_given_to_the_gateway_reaches_the_cart(system: System, session_id: str):
    request_id = f"e2e-{uuid.uuid4().hex}"
    answer = httpx.post(
        f"{system.gateway.url}/cart/items",
        json={"sku": "pen", "qty": 1},
        headers={"X-Session-Id": session_id, "X-Request-Id": request_id},
    )
    assert answer.headers["X-Request-Id"] == request_id
    assert f"[req={request_id}] added 1 x pen" in system.cart.log_text()


def test_logout_at_the_gateway_ends_the_session_at_the_cart(system: System, session_id: str):
    headers = {"X-Session-Id": session_id}
    before = httpx.get(f"{system.cart.url}/cart", headers=headers)
    httpx.post(f"{system.gateway.url}/logout", headers=headers)
    after = httpx.get(f"{system.cart.url}/cart", headers=headers)
    assert before.status_code == 200
    assert after.status_code == 401


async def test_concurrent_adds_from_both_services_lose_no_item(system: System, session_id: str):
    headers = {"X-Session-Id": session_id}
    adds = [
        (url, sku, qty)
        for url in (system.gateway.url, system.cart.url)
        for sku in ("apple", "pear", "plum")
        for qty in (1, 2, 3, 4, 5)
    ]
    async with httpx.AsyncClient(headers=headers, timeout=10.0) as client:
        answers = await asyncio.gather(
            *(
                client.post(f"{url}/cart/items", json={"sku": sku, "qty": qty})
                for url, sku, qty in adds
            )
        )
        cart = await client.get(f"{system.cart.url}/cart")
    assert [a.status_code for a in answers] == [201] * len(adds)
    assert cart.json() == {"items": [{"sku": s, "qty": 30} for s in ("apple", "pear", "plum")]}


@pytest.mark.parametrize("service", ["gateway", "cart"])
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"sku": "a"}',
        b'{"sku": "a", "qty": 0}',
        b'{"sku": "a", "qty": "2"}',
        b'{"sku": "a", "qty": 1.5}',
        b'{"sku": "a", "qty": 100000000000000000000000}',
        b'{"sku": "a:b", "qty": 1}',
        b'{"sku": "' + b"x" * 65 + b'", "qty": 1}',
        b'{"sku": null, "qty": 1}',
    ],
)
def test_bad_cart_bodies_are_422(system: System, session_id: str, service: str, body: bytes):
    url = getattr(system, service).url
    answer = httpx.post(
        f"{url}/cart/items",
        content=body,
        headers={"X-Session-Id": session_id, "content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert "detail" in answer.json()


@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"username": 1, "password": "demo"}', b'{"username": "ann"}', b"\xff"]
)
def test_bad_login_bodies_are_422_or_400_when_not_even_text(system: System, body: bytes):
    answer = httpx.post(
        f"{system.gateway.url}/login", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == (400 if body == b"\xff" else 422)
    assert "detail" in answer.json()


def test_an_add_that_makes_the_session_too_large_is_413_and_the_cart_stays(
    system: System, session_id: str
):
    headers = {"X-Session-Id": session_id}
    item = {"sku": "x" * 64, "qty": 1}
    with httpx.Client(base_url=system.cart.url, headers=headers) as client:
        statuses = []
        while len(statuses) < 200 and 413 not in statuses:
            statuses.append(client.post("/cart/items", json=item).status_code)
        refused = client.post("/cart/items", json=item)
        cart = client.get("/cart")
    stored = len(statuses) - 1
    assert statuses[-1] == 413 and set(statuses[:-1]) == {201}
    assert refused.status_code == 413 and "too large" in refused.json()["detail"]
    assert cart.status_code == 200
    assert cart.json() == {"items": [{"sku": "x" * 64, "qty": stored}]}


@pytest.mark.parametrize("service", ["gateway", "cart"])
def test_probes_answer_and_metrics_use_route_templates(
    system: System, session_id: str, service: str
):
    url = getattr(system, service).url
    httpx.get(f"{url}/cart", headers={"X-Session-Id": session_id})
    health = httpx.get(f"{url}/healthz")
    ready = httpx.get(f"{url}/readyz")
    metrics = httpx.get(f"{url}/metrics").text
    assert health.status_code == 200 and ready.status_code == 200
    assert 'http_requests_total{method="GET",route="/cart",status_class="2xx"}' in metrics
    assert 'sessionlib_store_operations_total{operation="load",outcome="success"}' in metrics
    assert "sessionlib_failovers_total" in metrics
    assert session_id.partition(".")[0] not in metrics
    assert SIGNING_KEY not in metrics
