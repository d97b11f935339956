"""Both services on the real Sentinel topology (dev profile's mode): the master is found
through the sentinels, sessions are shared, and the metrics name the master."""

from collections.abc import Iterator

import httpx
import pytest

from deploy.local.topology import LocalTopology
from tests.e2e.harness import ServiceProcess, login, service_env, start_services_pair

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def on_sentinel(
    shared_topology: LocalTopology, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, ...]]:
    """(cart, gateway) configured for Sentinel mode on the shared topology."""
    sentinels = ",".join(f'"{host}:{port}"' for host, port in shared_topology.sentinel_addresses)
    env = service_env(
        "",
        {
            "SESSIONLIB_REDIS__MODE": "sentinel",
            "SESSIONLIB_REDIS__SENTINELS": f"[{sentinels}]",
            "SESSIONLIB_REDIS__MASTER_NAME": shared_topology.master_name,
        },
    )
    services = start_services_pair(env, tmp_path_factory.mktemp("on-sentinel"))
    try:
        yield services
    finally:
        for service in services:
            service.stop()


def test_through_sentinel_login_cart_and_logout_work_end_to_end(on_sentinel):
    cart, gateway = on_sentinel
    headers = {"X-Session-Id": login(gateway.url)}
    added = httpx.post(f"{gateway.url}/cart/items", json={"sku": "tea", "qty": 2}, headers=headers)
    read = httpx.get(f"{cart.url}/cart", headers=headers)
    httpx.post(f"{gateway.url}/logout", headers=headers)
    after = httpx.get(f"{cart.url}/cart", headers=headers)
    assert added.status_code == 201
    assert read.json() == {"items": [{"sku": "tea", "qty": 2}]}
    assert after.status_code == 401


def test_both_services_are_ready_and_report_the_current_master(
    on_sentinel, shared_topology: LocalTopology
):
    master = shared_topology.master_address()
    for service in on_sentinel:
        httpx.get(f"{service.url}/cart")  # any traffic makes the store find its master
        assert httpx.get(f"{service.url}/readyz").status_code == 200
        metrics = httpx.get(f"{service.url}/metrics").text
        assert f'sessionlib_redis_master_info{{address="{master}"}} 1.0' in metrics
