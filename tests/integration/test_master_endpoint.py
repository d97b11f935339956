"""The master endpoint (HAProxy with a role check, deploy/haproxy/haproxy.cfg) on the real local
topology: it follows a killed master within Sentinel's failover time plus one check interval,
and never leads to a replica, the old master that rejoins as one included."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from deploy.local import probes
from deploy.local.haproxy import (
    DEFAULT_CHECK_INTERVAL_MS,
    endpoint_node,
    find_haproxy,
    start_master_endpoint,
)
from deploy.local.processes import find_free_ports, port_in_use
from deploy.local.spec import Node
from deploy.local.topology import LocalTopology
from tests.support.topology_cli import run_topology_cli, stack_port_flags

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_haproxy() is None,
        reason="HAProxy is not installed (apt-get install haproxy, or `make setup`)",
    ),
]

COUNTER = "sessionlib:master-endpoint-test:writes"
CHECK_INTERVAL = DEFAULT_CHECK_INTERVAL_MS / 1000
# A noisy 2-core machine: bounds with a generous margin (an election Sentinel retries, a
# replica reattaching under load), not tight times; the figures are printed with -s.
MARGIN = 10.0


@dataclass(frozen=True)
class Endpoint:
    topology: LocalTopology
    node: Node

    def write(self) -> str:
        """One INCR of COUNTER on a new connection through the endpoint: "ok", "connection"
        (refused, cut or timed out) or the Redis error code (READONLY, NOREPLICAS, ...)."""
        try:
            with probes.connect(self.node, self.topology.login()) as client:
                client.incr(COUNTER)
        except (redis.ConnectionError, redis.TimeoutError):
            return "connection"
        except redis.ResponseError as exc:
            return str(exc).split()[0]
        return "ok"

    def role(self) -> str | None:
        """The role of the node a new connection through the endpoint reaches (None: none)."""
        try:
            return str(probes.ask(self.node, self.topology.login(), probes.role)[0])
        except redis.RedisError:
            return None


def sentinel_failover_bound(topology: LocalTopology) -> float:
    """Seconds Sentinel may take to promote a replica after the master dies: down-after, then
    (generously) an election that fails once and is retried after twice the failover timeout."""
    spec = topology.spec
    return (spec.down_after_ms + 2 * spec.failover_timeout_ms) / 1000


def _endpoint(topology: LocalTopology) -> Iterator[Endpoint]:
    port = find_free_ports(1)[0]
    start_master_endpoint(topology, port)
    # The topology fixture's `down` stops HAProxy with the rest: it is recorded like a node.
    yield Endpoint(topology, endpoint_node(port))


@pytest.fixture
def endpoint(local_topology: LocalTopology) -> Iterator[Endpoint]:
    yield from _endpoint(local_topology)


@pytest.fixture
def secure_endpoint(secure_topology: LocalTopology) -> Iterator[Endpoint]:
    yield from _endpoint(secure_topology)


def is_master(topology: LocalTopology, node: Node) -> bool:
    try:
        return bool(probes.ask(node, topology.login(), probes.role)[0] == "master")
    except redis.RedisError:
        return False


def master_count(topology: LocalTopology, node: Node) -> int:
    with topology.client(node) as client:
        return int(client.get(COUNTER) or 0)


@pytest.mark.parametrize("mode", ["plain", "secure"])
def test_writes_through_the_endpoint_follow_a_killed_master_within_failover_time_plus_a_check(
    mode: str, request: pytest.FixtureRequest
) -> None:
    fixture = "endpoint" if mode == "plain" else "secure_endpoint"
    endpoint: Endpoint = request.getfixturevalue(fixture)
    topology = endpoint.topology
    assert endpoint.write() == "ok"
    old = topology.node("master")
    others = [node for node in topology.redis_nodes if node != old]

    killed = time.monotonic()
    topology.kill(old)
    promoted = followed = written = None
    outcomes: Counter[str] = Counter()
    deadline = killed + 30.0
    while None in (promoted, followed, written) and time.monotonic() < deadline:
        if promoted is None and any(is_master(topology, node) for node in others):
            promoted = time.monotonic()
        if followed is None and endpoint.role() == "master":
            followed = time.monotonic()
        if written is None:
            outcome = endpoint.write()
            outcomes[outcome] += 1
            if outcome == "ok":
                written = time.monotonic()
        time.sleep(0.02)

    assert promoted is not None and followed is not None and written is not None, outcomes
    bound = sentinel_failover_bound(topology) + CHECK_INTERVAL + MARGIN
    print(
        f"\n[{mode}] master killed; Sentinel promoted a replica after {promoted - killed:.2f} s, "
        f"the endpoint led to it after {followed - killed:.2f} s "
        f"({followed - promoted:+.2f} s), first write through it after {written - killed:.2f} s "
        f"(bound {bound:.1f} s); outcomes meanwhile: {dict(outcomes)}"
    )
    assert followed - killed <= bound
    assert written - killed <= bound
    # Only a master, or nothing, was ever reached: no write was refused as READONLY.
    assert set(outcomes) <= {"ok", "connection", "NOREPLICAS"}, outcomes
    # Settled: every new connection reaches the new master and writes there. Sentinel may
    # still be re-pointing the other replica, and meanwhile the new master refuses writes
    # for want of one (NOREPLICAS, min-replicas-to-write): a master's answer all the same
    # (a replica says READONLY), so such a write is sent again, as a client would.
    new_master = topology.node(topology.wait_for_failover(old.address))
    before = master_count(topology, new_master)
    settled: Counter[str] = Counter()
    for _ in range(30):
        deadline = time.monotonic() + 30.0
        while (outcome := endpoint.write()) == "NOREPLICAS" and time.monotonic() < deadline:
            settled[outcome] += 1
            time.sleep(0.05)
        settled[outcome] += 1
    assert set(settled) <= {"ok", "NOREPLICAS"} and settled["ok"] == 30, settled
    assert master_count(topology, new_master) == before + 30
    if topology.spec.secure:
        # The check as the exporter user never ran a command that user may not.
        for node in others:
            with topology.client(node) as client:
                assert client.acl_log() == []


def test_the_old_master_rejoining_as_a_replica_is_never_written_through_the_endpoint(
    endpoint: Endpoint,
) -> None:
    topology = endpoint.topology
    old = topology.kill("master")
    new_master = topology.node(topology.wait_for_failover(old.address))
    deadline = time.monotonic() + 30.0
    while endpoint.write() != "ok":
        assert time.monotonic() < deadline, "the endpoint did not follow the failover"
        time.sleep(0.05)
    before = master_count(topology, new_master)

    # The old master comes back from its own config as a master (no replicas) until Sentinel
    # turns it into a replica of the new one; writes go on through the endpoint meanwhile.
    topology.restart(old)
    outcomes: Counter[str] = Counter()
    rejoined_at = None
    settle_until = time.monotonic() + 60.0
    while time.monotonic() < settle_until:
        outcomes[endpoint.write()] += 1
        if rejoined_at is None and not is_master(topology, old):
            topology.wait_for_replica(old)
            rejoined_at = time.monotonic()
            # A few more check intervals of writes with the old master a linked replica.
            settle_until = rejoined_at + 3 * CHECK_INTERVAL
        time.sleep(0.02)

    assert rejoined_at is not None, "the old master never rejoined as a replica"
    # Refused connections at most (two nodes claimed master for a moment): never a write
    # on the old node, which would answer READONLY as a replica or NOREPLICAS as a lone master.
    assert set(outcomes) <= {"ok", "connection"}, outcomes
    assert endpoint.role() == "master"
    assert master_count(topology, new_master) == before + outcomes["ok"]


def test_up_with_haproxy_starts_the_endpoint_and_down_stops_it(tmp_path: Path) -> None:
    ports = find_free_ports(7)
    run_dir = str(tmp_path / "run")
    flags = [*stack_port_flags(ports[:6]), "--no-services", "--haproxy-port", str(ports[6])]
    try:
        up = run_topology_cli("up", "--run-dir", run_dir, "--haproxy", *flags)
        assert up.returncode == 0, up.stderr
        assert f"master endpoint (HAProxy, for clients without Sentinel): 127.0.0.1:{ports[6]}" in (
            up.stdout
        )
        endpoint = Endpoint(LocalTopology(run_dir), endpoint_node(ports[6]))
        assert endpoint.role() == "master"
    finally:
        down = run_topology_cli("down", "--run-dir", run_dir)
    assert "haproxy" in down.stdout
    assert not port_in_use("127.0.0.1", ports[6])
