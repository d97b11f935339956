"""With Redis killed, both services answer session calls with 503 and `Retry-After`, are
unready but alive, and become ready again by themselves when Redis is back."""

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.harness import System, login, start_system

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dead_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, str]]:
    """A system of its own whose Redis was SIGKILLed after a user logged in."""
    running = start_system(tmp_path_factory.mktemp("store-down"))
    try:
        session_id = login(running.gateway.url)
        running.redis.kill()
        yield running, session_id
    finally:
        running.stop()


@pytest.mark.parametrize(
    "service, method, path",
    [
        ("gateway", "POST", "/login"),
        ("gateway", "GET", "/me"),
        ("gateway", "GET", "/cart"),
        ("gateway", "POST", "/cart/items"),
        ("cart", "GET", "/cart"),
        ("cart", "POST", "/cart/items"),
    ],
)
def test_with_redis_dead_session_calls_are_503_with_retry_after(
    dead_store: tuple[System, str], service: str, method: str, path: str
):
    system, session_id = dead_store
    body = {"username": "ann", "password": "demo"} if path == "/login" else {"sku": "a", "qty": 1}
    answer = httpx.request(
        method,
        f"{getattr(system, service).url}{path}",
        json=body,
        headers={"X-Session-Id": session_id},
        timeout=10.0,
    )
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.json() == {"detail": "session store unavailable, retry shortly"}


@pytest.mark.parametrize("service", ["gateway", "cart"])
def test_with_redis_dead_readyz_is_503_and_healthz_still_200(
    dead_store: tuple[System, str], service: str
):
    url = getattr(dead_store[0], service).url
    ready = httpx.get(f"{url}/readyz", timeout=10.0)
    health = httpx.get(f"{url}/healthz", cookies={"session": dead_store[1]})
    assert ready.status_code == 503 and "Retry-After" in ready.headers
    assert ready.json() == {"detail": "session store unreachable"}
    assert health.status_code == 200


def test_when_redis_is_back_both_services_are_ready_without_a_restart(
    dead_store: tuple[System, str],
):
    system, _ = dead_store
    system.redis.restart()
    deadline = time.monotonic() + 10
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        statuses = {
            name: httpx.get(f"{getattr(system, name).url}/readyz", timeout=5.0).status_code
            for name in ("gateway", "cart")
        }
        if set(statuses.values()) == {200}:
            break
        time.sleep(0.2)
    assert statuses == {"gateway": 200, "cart": 200}
    metrics = httpx.get(f"{system.gateway.url}/metrics").text
    assert 'http_requests_total{method="GET",route="/me",status_class="5xx"}' in metrics
    fresh = {"X-Session-Id": login(system.gateway.url)}
    assert httpx.get(f"{system.cart.url}/cart", headers=fresh).status_code == 200
