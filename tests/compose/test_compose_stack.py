"""docker-compose.ha.yml run for real: images built locally, the stack healthy, the services
still serving the same sessions after `docker kill` of the master's container, and after a
restart of the whole stack that follows such a failover."""

# The tests share one stack (bringing it up takes a while); the failover tests break it, so they
# come last in this file, which is the order pytest runs them in, and each restart test first
# brings back what an earlier one left down.

from __future__ import annotations

import time

import httpx
import pytest
import redis

from deploy.images.standins import STANDIN_LABEL, STANDINS
from tests.compose.stack import SERVICES, HaStack, log_in, readiness, session_key, wait_until

pytestmark = [pytest.mark.compose_engine, pytest.mark.timeout(1800)]

# Sentinel's down-after (2 s in the test env) plus the election and the services' switch; a
# write that waits longer than this means the stack did not recover by itself.
RECOVERY_BUDGET_SECONDS = 20.0
# From `up` (or `start`) of a stopped stack to every container healthy: a fresh stack takes
# about 15 s. One that waits longer is stuck (before the fix it never came back: redis-1 waited
# for a master that waited for redis-1).
RESTART_BUDGET_SECONDS = 60.0
NODES = ("redis-1", "redis-2", "redis-3", "sentinel-1", "sentinel-2", "sentinel-3")


def test_stack_comes_up_healthy_from_images_built_here(ha_stack: HaStack) -> None:
    states = {service: readiness(ha_stack.state(service)) for service in SERVICES}

    assert {s: r for s, r in states.items() if r not in ("healthy", "running")} == {}
    assert [s for s, r in states.items() if r == "running"] == ["redis-exporter", "prometheus"]
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
    jobs = ha_stack.wait_every_target_up()

    assert set(jobs) == {"prometheus", "gateway", "cart", "redis_exporter", "redis", "sentinel"}
    assert len(jobs) == 1 + 1 + 1 + 1 + 3 + 3


def test_sessions_survive_when_the_master_container_is_killed(ha_stack: HaStack) -> None:
    gateway = httpx.Client(base_url=ha_stack.url("gateway"), timeout=10)
    session_id = log_in(gateway, "kim")
    raw, _, signature = session_id.partition(".")
    assert len(raw) == len(signature) == 43, "ids are signed (SESSIONLIB_SIGNING_KEYS)"
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
    # The cart verified the propagated id with the same keys; a forged signature gets nothing.
    forged = {"X-Session-Id": f"{raw}.{'A' * 43}"}
    assert gateway.get("/me", headers=forged).status_code == 401
    new_master = ha_stack.master_address()
    assert new_master != old_master
    # The announced address works from the host too: the session is on the new master.
    assert ha_stack.master_client().hget(session_key(session_id), "_user") == "kim"
    # docker kill is not a crash that a restart policy undoes: the old master stays down.
    assert ha_stack.state(master_service)["Status"] == "exited"


def _fill_cart(gateway: httpx.Client, user: str) -> dict[str, str]:
    headers = {"X-Session-Id": log_in(gateway, user)}
    answer = gateway.post("/cart/items", json={"sku": "tea", "qty": 1}, headers=headers)
    assert answer.status_code == 201, answer.text
    return headers


def _kill_master_and_write(
    ha_stack: HaStack, gateway: httpx.Client, headers: dict[str, str]
) -> str:
    """docker kill of the master's container, then the next cart write retried until the new
    master takes it; the killed service's name."""
    killed = ha_stack.redis_service_on_port(ha_stack.master_address()[1])
    ha_stack.engine.docker("kill", ha_stack.container(killed))

    def cup_added() -> bool:
        answer = gateway.post("/cart/items", json={"sku": "cup", "qty": 2}, headers=headers)
        return answer.status_code == 201

    wait_until(cup_added, timeout=RECOVERY_BUDGET_SECONDS, what="a write after the failover")
    return killed


def _stack_back_whole(ha_stack: HaStack) -> None:
    """A killed node's container started again (as `make up-ha` would) and both replicas in
    sync."""
    for node in NODES:
        if ha_stack.state(node)["Status"] != "running":
            ha_stack.engine.docker("start", ha_stack.container(node))
    wait_until(lambda: ha_stack.replicas_in_sync() == 2, timeout=60, what="2 replicas in sync")
    wait_until(
        ha_stack.sentinels_ready_to_fail_over,
        timeout=60,
        what="every sentinel knowing both replicas and both other sentinels",
    )


def _assert_one_master_named_by_every_sentinel(
    ha_stack: HaStack, before: tuple[str, int]
) -> tuple[str, int]:
    """All three sentinels name one master, which really is master. Usually the one from
    before the restart; on a loaded machine Sentinel may have failed over once more around
    it, which is allowed as long as no session is lost (checked next by the callers)."""
    named = ha_stack.masters_named_by_each_sentinel()
    assert len(set(named)) == 1 and named[0] is not None, named
    master = named[0]
    if master != before:
        print(f"note: the sentinels moved the master from {before} to {master} around the restart")
    host, port = master
    with redis.Redis(host=host, port=port, decode_responses=True, **ha_stack.login()) as node:
        assert node.info("replication")["role"] == "master"
    return master


def _assert_session_and_cart_intact(ha_stack: HaStack, headers: dict[str, str], user: str) -> None:
    # A new client: the gateway restarted, its old connections are gone.
    gateway = httpx.Client(base_url=ha_stack.url("gateway"), timeout=10)
    assert gateway.get("/me", headers=headers).json()["user"] == user
    items = gateway.get("/cart", headers=headers).json()["items"]
    assert sorted((i["sku"], i["qty"]) for i in items) == [("cup", 2), ("tea", 1)]


def test_after_a_failover_down_and_up_bring_the_stack_back_with_every_session(
    ha_stack: HaStack,
) -> None:
    _stack_back_whole(ha_stack)
    gateway = httpx.Client(base_url=ha_stack.url("gateway"), timeout=10)
    headers = _fill_cart(gateway, "lee")
    killed = _kill_master_and_write(ha_stack, gateway, headers)
    # The old master back as a replica of the new one: its kept config then names a master
    # that `up` would start only after it (the restart that used to deadlock).
    _stack_back_whole(ha_stack)
    master = ha_stack.master_address()
    assert ha_stack.node(killed).info("replication")["role"] == "slave"

    ha_stack.ha("down")
    started = time.monotonic()
    ha_stack.ha("up", *SERVICES)
    came_back_after = time.monotonic() - started
    ha_stack.timings["up after a failover until healthy"] = came_back_after

    assert came_back_after < RESTART_BUDGET_SECONDS
    assert {s: readiness(ha_stack.state(s)) for s in NODES} == dict.fromkeys(NODES, "healthy")
    _assert_one_master_named_by_every_sentinel(ha_stack, before=master)
    _assert_session_and_cart_intact(ha_stack, headers, "lee")


def test_after_a_failover_stop_and_start_bring_the_stack_back_with_every_session(
    ha_stack: HaStack,
) -> None:
    _stack_back_whole(ha_stack)
    gateway = httpx.Client(base_url=ha_stack.url("gateway"), timeout=10)
    headers = _fill_cart(gateway, "max")
    killed = _kill_master_and_write(ha_stack, gateway, headers)
    master = ha_stack.master_address()

    # Stopped right after the failover, with the killed master still down: it comes back too.
    ha_stack.ha("stop")
    started = time.monotonic()
    ha_stack.ha("start")
    came_back_after = time.monotonic() - started
    ha_stack.timings["start after a failover until healthy"] = came_back_after

    assert came_back_after < RESTART_BUDGET_SECONDS
    assert {s: readiness(ha_stack.state(s)) for s in NODES} == dict.fromkeys(NODES, "healthy")
    master = _assert_one_master_named_by_every_sentinel(ha_stack, before=master)
    # The killed master came back as a replica of the master.
    wait_until(lambda: ha_stack.replicas_in_sync() == 2, timeout=30, what="2 replicas in sync")
    assert ha_stack.node(killed).info("replication")["master_port"] == master[1]
    _assert_session_and_cart_intact(ha_stack, headers, "max")
