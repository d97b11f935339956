"""docker-compose.ha.yml run for real: images built locally, the stack healthy, and the
services still serving the same sessions after `docker kill` of the master's container."""

# The tests share one stack (bringing it up takes a while); the failover test breaks it, so it
# comes last in this file, which is the order pytest runs them in.

from __future__ import annotations

import time

import httpx
import pytest

from deploy.images.standins import STANDIN_LABEL, STANDINS
from tests.compose.stack import SERVICES, HaStack, wait_until

pytestmark = [pytest.mark.compose_engine, pytest.mark.timeout(1800)]

# Sentinel's down-after (1 s in the test env) plus the election and the services' switch; a
# write that waits longer than this means the stack did not recover by itself.
RECOVERY_BUDGET_SECONDS = 20.0


def _login(client: httpx.Client, user: str) -> str:
    answer = client.post("/login", json={"username": user, "password": "demo"})
    assert answer.status_code == 200, answer.text
    return answer.headers["X-Session-Id"]


def _readiness(state: dict[str, object]) -> str:
    """ "healthy" or, for a container without a healthcheck, "running"; else what it is."""
    health = state.get("Health")
    if isinstance(health, dict) and state["Status"] == "running":
        return str(health["Status"])
    return str(state["Status"])


def test_stack_comes_up_healthy_from_images_built_here(ha_stack: HaStack) -> None:
    readiness = {service: _readiness(ha_stack.state(service)) for service in SERVICES}

    assert {s: r for s, r in readiness.items() if r not in ("healthy", "running")} == {}
    assert [s for s, r in readiness.items() if r == "running"] == ["redis-exporter", "prometheus"]
    for standin in STANDINS:
        labels = ha_stack.engine.docker(
            "image", "inspect", "--format", "{{json .Config.Labels}}", standin.tag
        ).stdout
        assert STANDIN_LABEL.replace("=", '":"') in labels, f"{standin.tag} was not built here"
    # Host networking only: the project made no network of its own.
    networks = ha_stack.engine.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in networks if n.startswith(ha_stack.project)]


def test_sentinels_announce_loopback_addresses_a_host_client_can_use(ha_stack: HaStack) -> None:
    master = ha_stack.master_address()

    assert master == ("127.0.0.1", ha_stack.ports["REDIS_1_PORT"])
    replicas = sorted(("127.0.0.1", ha_stack.ports[f"REDIS_{n}_PORT"]) for n in (2, 3))
    # Sentinel learns replicas from the master's INFO, which it polls every 10 s.
    wait_until(
        lambda: sorted(ha_stack.sentinel().discover_slaves("mymaster")) == replicas,
        timeout=30,
        what="sentinels list both replicas",
    )
    client = ha_stack.master_client()
    assert client.config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}


def test_prometheus_scrapes_services_exporter_and_every_node(ha_stack: HaStack) -> None:
    def targets_health() -> dict[str, str]:
        answer = httpx.get(f"{ha_stack.url('prometheus')}/api/v1/targets", timeout=5).json()
        return {
            f"{t['labels']['job']} {t['labels']['instance']}": t["health"]
            for t in answer["data"]["activeTargets"]
        }

    wait_until(
        lambda: set(targets_health().values()) == {"up"},
        timeout=60,
        what="every Prometheus target up",
    )

    jobs = {target.split()[0] for target in targets_health()}
    assert jobs == {"prometheus", "gateway", "cart", "redis_exporter", "redis", "sentinel"}
    assert len(targets_health()) == 1 + 1 + 1 + 1 + 3 + 3


def test_sessions_survive_when_the_master_container_is_killed(ha_stack: HaStack) -> None:
    gateway = httpx.Client(base_url=ha_stack.url("gateway"), timeout=10)
    session_id = _login(gateway, "kim")
    headers = {"X-Session-Id": session_id}
    first = gateway.post("/cart/items", json={"sku": "tea", "qty": 1}, headers=headers)
    assert first.status_code == 201, first.text
    old_master = ha_stack.master_address()
    master_service = ha_stack.redis_service_on_port(old_master[1])

    ha_stack.engine.docker("kill", ha_stack.container(master_service))
    killed_at = time.monotonic()
    statuses = []
    while True:
        answer = gateway.post("/cart/items", json={"sku": "cup", "qty": 2}, headers=headers)
        statuses.append(answer.status_code)
        if answer.status_code == 201 or time.monotonic() - killed_at > RECOVERY_BUDGET_SECONDS:
            break
        time.sleep(0.2)
    recovered_after = time.monotonic() - killed_at
    ha_stack.timings["write outage after docker kill"] = recovered_after

    # While Sentinel fails over, an answer is the write or a 503 to retry; never a 500.
    assert set(statuses) <= {201, 503}, statuses
    assert statuses[-1] == 201, f"no successful write {recovered_after:.1f}s after the kill"
    items = gateway.get("/cart", headers=headers).json()["items"]
    assert sorted((i["sku"], i["qty"]) for i in items) == [("cup", 2), ("tea", 1)]
    assert gateway.get("/me", headers=headers).json()["user"] == "kim"
    new_master = ha_stack.master_address()
    assert new_master != old_master
    # The announced address works from the host too: the session is on the new master.
    assert ha_stack.master_client().hget(f"sessionlib:s:{{{session_id}}}", "_user") == "kim"
    # docker kill is not a crash that a restart policy undoes: the old master stays down.
    assert ha_stack.state(master_service)["Status"] == "exited"
