"""The session cookie's flags follow the profile: `dev` is plain HTTP on localhost, `prod`
is `__Host-`, `Secure` and `HttpOnly` (and needs a Redis password to start at all)."""

from collections.abc import Iterator

import httpx
import pytest

from deploy.local.standalone import StandaloneRedis
from tests.e2e.harness import (
    ServiceProcess,
    System,
    find_free_ports,
    service_env,
    start_services,
)

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "e2e-redis-password"


@pytest.fixture(scope="module")
def prod_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    run_dir = tmp_path_factory.mktemp("prod")
    redis_port, gateway_port = find_free_ports(2)
    redis = StandaloneRedis(run_dir / "redis", redis_port, password=REDIS_PASSWORD)
    redis.start()
    try:
        env = service_env(
            f"redis://127.0.0.1:{redis_port}/0",
            {
                "SESSIONLIB_PROFILE": "prod",
                "SESSIONLIB_REDIS__PASSWORD": REDIS_PASSWORD,
                # A standalone Redis has no replica to WAIT for (prod asks one and fails
                # without it): the README's advice for this setup.
                "SESSIONLIB_SESSION__DURABILITY__REPLICAS": "0",
                "SESSIONLIB_REDIS__TLS__ALLOW_PLAINTEXT": "true",
            },
        )
        (gateway,) = start_services([("gateway", gateway_port, env)], run_dir / "logs")
        try:
            yield gateway
        finally:
            gateway.stop()
    finally:
        redis.stop()


def _login_cookie(gateway_url: str) -> str:
    answer = httpx.post(f"{gateway_url}/login", json={"username": "ann", "password": "demo"})
    assert answer.status_code == 200, answer.text
    return answer.headers["set-cookie"]


def _flags(cookie: str) -> set[str]:
    """The cookie's attributes as a browser reads them: names are case-insensitive."""
    return {flag.lower() for flag in cookie.split("; ")[1:]}


def test_dev_cookie_is_httponly_lax_and_not_secure(system: System):
    cookie = _login_cookie(system.gateway.url)
    flags = _flags(cookie)
    assert cookie.startswith("session=")
    assert {"path=/", "httponly", "samesite=lax"} <= flags and "secure" not in flags


def test_prod_cookie_is_host_prefixed_secure_and_httponly(prod_gateway: ServiceProcess):
    cookie = _login_cookie(prod_gateway.url)
    flags = _flags(cookie)
    assert cookie.startswith("__Host-session=")
    assert {"path=/", "secure", "httponly", "samesite=lax"} <= flags
    assert not any(flag.startswith("domain=") for flag in flags)


def test_prod_login_still_returns_the_id_in_the_header_and_the_cookie(
    prod_gateway: ServiceProcess,
):
    """DESIGN §4 holds under prod's `expose_id_header: when_requested`: a browser that
    sent no id header still gets the id from POST /login."""
    answer = httpx.post(f"{prod_gateway.url}/login", json={"username": "ann", "password": "demo"})
    session_id = answer.headers["X-Session-Id"]
    assert answer.headers["set-cookie"].startswith(f"__Host-session={session_id};")
    me = httpx.get(f"{prod_gateway.url}/me", headers={"X-Session-Id": session_id})
    assert me.status_code == 200 and me.json()["user"] == "ann"
