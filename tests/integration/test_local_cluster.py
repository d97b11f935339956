"""The local Redis Cluster (DESIGN §3a) against six real redis-server processes.
Each test states one behaviour of `make up-local MODE=cluster` and of the tool's chaos commands."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from deploy.local.cluster import CLUSTER_STATE_FILE, SLOT_COUNT, ClusterSpec, LocalCluster
from tests.integration.test_local_topology import live_processes_on
from tests.support.topology_cli import cluster_stack_port_flags, run_topology_cli

pytestmark = pytest.mark.integration

# With cluster-node-timeout 1000 a failover takes about 3 s and a rejoin about as long; the
# bounds leave room for a loaded CI machine.
FAILOVER_TIMEOUT = 30.0
REJOIN_TIMEOUT = 30.0

FreePorts = Callable[[int], list[int]]


def cluster_spec(ports: list[int]) -> ClusterSpec:
    """Six node ports and six bus ports of the test's own, clear of 7001-7006 and 17001-17006."""
    return ClusterSpec(ports=tuple(ports[:6]), bus_ports=tuple(ports[6:12]))


@pytest.fixture
def local_cluster(tmp_path: Path, free_ports: FreePorts) -> Iterator[LocalCluster]:
    """A fresh, ready cluster (3 masters, a replica each) for one test to break."""
    with LocalCluster(tmp_path / "cluster", cluster_spec(free_ports(12))) as cluster:
        yield cluster


def owner_by_cluster_slots(cluster: LocalCluster, key: str) -> str:
    """`host:port` serving `key`, as CLUSTER KEYSLOT and CLUSTER SLOTS of a live node say."""
    with cluster.client(cluster.nodes[1]) as client:
        slot = client.execute_command("CLUSTER", "KEYSLOT", key)
        for first, last, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return f"{master[0]}:{master[1]}"
    raise AssertionError(f"no master serves slot {slot}")


def test_up_creates_three_masters_each_with_its_own_replica_and_covers_every_slot(
    local_cluster: LocalCluster,
) -> None:
    masters, replicas = local_cluster.nodes[:3], local_cluster.nodes[3:]

    report = local_cluster.check()

    assert f"[OK] All {SLOT_COUNT} slots covered." in report
    assert "[OK] All nodes agree about slots configuration." in report
    for node in local_cluster.nodes:
        with local_cluster.client(node) as client:
            info = client.execute_command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert f"cluster_slots_ok:{SLOT_COUNT}" in info
        assert "cluster_known_nodes:6" in info
    for master, replica in zip(masters, replicas, strict=True):
        with local_cluster.client(master) as client:
            assert client.execute_command("ROLE")[0] == "master"
        with local_cluster.client(replica) as client:
            role = client.execute_command("ROLE")
        assert (role[0], int(role[2]), role[3]) == ("slave", master.port, "connected")


def test_master_of_names_the_node_that_cluster_slots_says_serves_the_key(
    local_cluster: LocalCluster,
) -> None:
    keys = ["sessionlib:s:{abc}", "sessionlib:u:{alice}", "foo", "{123}"]

    named = {key: local_cluster.master_of(key).address for key in keys}

    assert named == {key: owner_by_cluster_slots(local_cluster, key) for key in keys}
    assert local_cluster.master_of(0) == local_cluster.nodes[0]
    assert local_cluster.master_of("16383") == local_cluster.nodes[2]
    assert local_cluster.master_of("123") == local_cluster.nodes[0], "digits are a slot"
    with local_cluster.client(local_cluster.master_of("foo")) as client:
        assert client.set("foo", "served here, no MOVED")


def test_killing_the_master_of_a_key_promotes_its_replica_and_the_old_one_rejoins_as_replica(
    local_cluster: LocalCluster,
) -> None:
    key = "sessionlib:s:{killed}"
    old = local_cluster.master_of(key)
    replica = local_cluster.nodes[local_cluster.nodes.index(old) + 3]
    with local_cluster.client(old) as client:
        client.set(key, "before")
        client.execute_command("WAIT", "1", "1000")

    started = time.monotonic()
    local_cluster.kill(old)
    new = local_cluster.wait_for_failover(old, timeout=FAILOVER_TIMEOUT)
    failover_seconds = time.monotonic() - started
    # min-replicas-to-write 1: the promoted master has no replica of its own yet.
    with (
        local_cluster.client(new) as client,
        pytest.raises(redis.ResponseError, match="NOREPLICAS"),
    ):
        client.set(key, "too early")
    local_cluster.restart(old)
    rejoined_under = local_cluster.wait_for_replica(old, timeout=REJOIN_TIMEOUT)

    assert new == replica
    assert failover_seconds < FAILOVER_TIMEOUT
    assert local_cluster.master_of(key) == new
    assert rejoined_under == new
    with local_cluster.client(new) as client:
        assert client.get(key) == "before"
        assert client.set(key, "after")
    local_cluster.wait_for_health(timeout=REJOIN_TIMEOUT)
    assert "[OK] All 16384 slots covered." in local_cluster.check()


def test_pausing_a_master_beyond_the_node_timeout_fails_over_and_the_resumed_one_follows(
    local_cluster: LocalCluster,
) -> None:
    key = "sessionlib:s:{paused}"
    old = local_cluster.master_of(key)

    local_cluster.pause(old)
    new = local_cluster.wait_for_failover(old, timeout=FAILOVER_TIMEOUT)
    local_cluster.resume(old)
    local_cluster.wait_for_replica(old, timeout=REJOIN_TIMEOUT)

    assert new != old
    # redis-py 5.2 raises a plain ResponseError ("MOVED <slot> <address>") on a non-cluster
    # client, later versions its MovedError subclass ("<slot> <address>"): both end alike.
    with local_cluster.client(old) as client, pytest.raises(redis.ResponseError) as moved:
        client.set(key, "not on a replica")
    assert str(moved.value).endswith(f" {new.host}:{new.port}")
    with local_cluster.client(new) as client:
        assert client.set(key, "on the new master")


def test_down_stops_every_node_including_a_paused_one_and_leaves_no_process(
    local_cluster: LocalCluster,
) -> None:
    ports = [*local_cluster.spec.ports, *local_cluster.spec.cluster_bus_ports]
    local_cluster.pause("cluster-2")

    stopped = local_cluster.down()

    assert sorted(stopped) == [node.name for node in local_cluster.nodes]
    assert live_processes_on(ports) == []
    assert not local_cluster.state_path.exists()
    assert local_cluster.down() == []


def test_cli_up_in_cluster_mode_starts_only_redis_and_status_master_kill_down_work(
    tmp_path: Path, free_ports: FreePorts
) -> None:
    ports = free_ports(12)
    run_dir = ["--run-dir", str(tmp_path / "cli-cluster")]
    node_ports = ",".join(map(str, ports[:6]))
    bus_ports = ",".join(map(str, ports[6:]))
    try:
        up = run_topology_cli(
            "up", "--mode", "cluster", "--cluster-ports", node_ports,
            "--cluster-bus-ports", bus_ports, "--no-services", "--no-observability", *run_dir,
        )  # fmt: skip
        status = run_topology_cli("status", *run_dir)
        master = run_topology_cli("master", "16383", *run_dir)
        sentinel_up = run_topology_cli("up", "--no-services", "--no-observability", *run_dir)
        kill = run_topology_cli("kill", f"127.0.0.1:{ports[5]}", *run_dir)
        down = run_topology_cli("down", *run_dir)
    finally:
        LocalCluster(tmp_path / "cli-cluster").down()

    assert up.returncode == 0, up.stderr
    assert "cluster_state:ok, 16384/16384 slots ok" in up.stdout
    assert "gateway" not in status.stdout
    assert "prometheus" not in status.stdout
    assert status.stdout.count(" alive ") == 6
    assert status.stdout.count(" master ") == 3
    assert master.stdout.strip() == f"127.0.0.1:{ports[2]}"
    assert sentinel_up.returncode == 1
    assert "already running" in sentinel_up.stderr
    assert kill.stdout.startswith("kill: cluster-6")
    assert down.returncode == 0
    assert down.stdout.startswith("stopped cluster-1")
    assert not (tmp_path / "cli-cluster" / CLUSTER_STATE_FILE).exists()
    assert live_processes_on(ports) == []


def cluster_up_flags(ports: list[int]) -> list[str]:
    return ["up", *cluster_stack_port_flags(ports)]


def test_up_with_a_bus_port_in_use_names_it_and_starts_nothing(
    tmp_path: Path, free_ports: FreePorts
) -> None:
    ports = free_ports(12)
    run_dir = tmp_path / "busy-bus"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[8]))
        squatter.listen()

        result = run_topology_cli(*cluster_up_flags(ports), "--run-dir", str(run_dir))

    assert result.returncode == 1
    assert f"port {ports[8]} on 127.0.0.1 (wanted for cluster-3's cluster bus)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / CLUSTER_STATE_FILE).exists()
    assert live_processes_on(ports) == []


def test_up_that_is_not_ready_in_time_says_what_is_missing_and_stops_what_it_started(
    tmp_path: Path, free_ports: FreePorts
) -> None:
    ports = free_ports(12)
    run_dir = tmp_path / "too-quick"

    # Creating the cluster takes about 2 s: 0.3 s is too short.
    result = run_topology_cli(
        *cluster_up_flags(ports), "--run-dir", str(run_dir), "--timeout", "0.3"
    )

    assert result.returncode == 1
    assert "after 0.3s; logs in" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / CLUSTER_STATE_FILE).exists()
    assert live_processes_on(ports) == []


def test_the_spec_splits_slots_as_redis_cli_does_and_pairs_replicas_in_order() -> None:
    spec = ClusterSpec()

    assert spec.slot_ranges() == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert spec.cluster_bus_ports == (17001, 17002, 17003, 17004, 17005, 17006)
    assert [spec.group(node) for node in spec.nodes] == [0, 1, 2, 0, 1, 2]
