"""The chart's Redis Cluster pods (redis.mode cluster), their scripts run as real redis-server
processes: the first install creates the cluster once, a pod back on a new IP with its kept
nodes.conf rejoins, all pods restarted at once on new IPs re-form with their data, and a
scale-out by one shard joins two nodes and moves slots onto them (then a drained scale-in)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis, RedisError
from redis.cluster import ClusterNode, RedisCluster

from tests.helm.chart import Rendered, render
from tests.helm.conftest import StartCommand
from tests.helm.pod import ACL_USERS, mount_files, run_script, wait_until
from tests.helm.pods import PodSet

pytestmark = pytest.mark.integration

FreePorts = Callable[[int], list[int]]
CLUSTER = {"redis": {"mode": "cluster"}}
PASSWORDS = {user: f"{user}-pw" for user in ACL_USERS}
SESSIONS = 300
# Fast enough on loopback: a node is failed after 1 s, and the keeper looks every second.
TIMINGS = {"CLUSTER_NODE_TIMEOUT_MS": "1000", "CLUSTER_KEEPER_INTERVAL_SECONDS": "1"}


def tls_options(certificates: dict[str, str] | None) -> dict[str, Any]:
    """redis-py's TLS options for the pods' certificate, which names the pods, not their IPs."""
    if certificates is None:
        return {}
    return {
        "ssl": True,
        "ssl_ca_certs": certificates["TLS_CA_FILE"],
        "ssl_certfile": certificates["TLS_CERT_FILE"],
        "ssl_keyfile": certificates["TLS_KEY_FILE"],
        "ssl_check_hostname": False,
    }


@dataclass(frozen=True)
class NodeLine:
    """One line of CLUSTER NODES."""

    node_id: str
    ip: str
    host: str
    flags: frozenset[str]
    master_id: str
    slots: int

    @classmethod
    def parse(cls, line: str) -> NodeLine:
        words = line.split()
        address, _, rest = words[1].partition("@")
        slots = 0
        for word in words[8:]:
            if not word.startswith("["):
                first, _, last = word.partition("-")
                slots += int(last or first) - int(first) + 1
        return cls(
            node_id=words[0],
            ip=address.rpartition(":")[0],
            host=rest.partition(",")[2],
            flags=frozenset(words[2].split(",")),
            master_id=words[3],
            slots=slots,
        )


class ClusterPods:
    """The chart's cluster StatefulSet on loopback, with what a test asks of it."""

    def __init__(self, pods: PodSet, bus_port: int, tls: dict[str, Any]) -> None:
        self.pods = pods
        self.bus_port = bus_port
        self.tls = tls

    def admin(self, index: int) -> Redis:
        host, _, port = self.pods.pods[index].redis.rpartition(":")
        return Redis(
            host=host,
            port=int(port),
            username="admin",
            password=PASSWORDS["admin"],
            socket_timeout=2,
            socket_connect_timeout=2,
            decode_responses=True,
            **self.tls,
        )

    def view(self, index: int) -> list[NodeLine]:
        with self.admin(index) as node:
            text = node.execute_command("CLUSTER", "NODES")
        return [NodeLine.parse(line) for line in str(text).splitlines() if line.strip()]

    def info(self, index: int) -> dict[str, str]:
        with self.admin(index) as node:
            text = str(node.execute_command("CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def role(self, index: int) -> str:
        with self.admin(index) as node:
            return str(node.execute_command("ROLE")[0])

    def shards(self, index: int = 0) -> dict[str, list[str]]:
        """{master pod name: [its replicas' pod names]}, as pod `index` sees the cluster."""
        view = [n for n in self.view(index) if "fail" not in n.flags]
        by_id = {n.node_id: n for n in view}
        masters: dict[str, list[str]] = {n.host: [] for n in view if "master" in n.flags}
        for node in view:
            if "slave" in node.flags and node.master_id in by_id:
                masters[by_id[node.master_id].host].append(node.host)
        return masters

    def whole(self, indexes: list[int], shards: int) -> bool:
        """Every pod sees the cluster ok with every slot served, knows exactly these pods at
        their current IPs, and every shard has a master with slots and one linked replica."""
        names = {self.pods.pods[i].name: self.pods.pods[i].ip for i in indexes}
        for i in indexes:
            info = self.info(i)
            if (
                info["cluster_state"] != "ok"
                or info["cluster_slots_ok"] != "16384"
                or int(info["cluster_known_nodes"]) != len(indexes)
                or int(info["cluster_size"]) != shards
            ):
                return False
            view = self.view(i)
            if {n.host: n.ip for n in view} != names or any("fail" in n.flags for n in view):
                return False
        layout = self.shards()
        return len(layout) == shards and all(len(r) == 1 for r in layout.values())

    def wait_whole(self, indexes: list[int], shards: int = 3, timeout: float = 90) -> float:
        """Seconds until the cluster is whole (see `whole`)."""
        started = time.monotonic()
        wait_until(
            f"the cluster of pods {indexes} is whole ({shards} shards)",
            lambda: self.whole(indexes, shards),
            timeout=timeout,
        )
        return time.monotonic() - started

    def session_client(self) -> RedisCluster:
        """A cluster client as a service has one, with the pods' names mapped to their IPs."""
        by_name = {p.name: p.ip for p in self.pods.pods}
        first = self.pods.pods[0]
        return RedisCluster(
            startup_nodes=[ClusterNode(first.ip, first.redis_port)],
            username="sessionlib",
            password=PASSWORDS["sessionlib"],
            address_remap=lambda address: (by_name.get(address[0], address[0]), address[1]),
            socket_timeout=5,
            **self.tls,
        )

    def write_sessions(self) -> None:
        with self.session_client() as cluster:
            for i in range(SESSIONS):
                cluster.hset(f"sessionlib:s:{{{i}}}", mapping={"_user": f"u{i}", "cart": "[]"})

    def sessions_kept(self) -> int:
        with self.session_client() as cluster:
            return sum(
                cluster.hmget(f"sessionlib:s:{{{i}}}", ["_user"]) == [f"u{i}".encode()]
                for i in range(SESSIONS)
            )


@pytest.fixture
def cluster_pods(
    start_command: StartCommand, free_ports: FreePorts, tmp_path: Path
) -> Iterator[Callable[..., ClusterPods]]:
    def make(shards: int = 3, certificates: dict[str, str] | None = None) -> ClusterPods:
        values: dict[str, Any] = {"redis": {"mode": "cluster", "cluster": {"shards": shards}}}
        if certificates is not None:
            values["tls"] = {"enabled": True, "existingSecret": "tls", "authClients": "yes"}
        rendered = render(values)
        files = mount_files(rendered, tmp_path / "files")
        # Every pod listens on the same two ports, each on its own IP, as pods do.
        redis_port, bus_port = free_ports(2)
        count = 2 * shards
        pods = PodSet(
            rendered,
            start_command,
            [redis_port, bus_port] * count,
            tmp_path,
            count,
            containers=("redis",),
            scripts_dir=files / "scripts",
            passwords=PASSWORDS,
            own_source=True,
            CLUSTER_BUS_PORT=str(bus_port),
            **TIMINGS,
            **(certificates or {}),
        )
        return ClusterPods(pods, bus_port, tls_options(certificates))

    yield make


def started_whole(cluster: ClusterPods) -> float:
    everyone = [p.index for p in cluster.pods.pods]
    cluster.pods.start(*everyone)
    return cluster.wait_whole(everyone)


def log_of(cluster: ClusterPods, index: int) -> str:
    return cluster.pods.pods[index].log("redis").read_text()


def all_logs(cluster: ClusterPods) -> str:
    return "".join(log_of(cluster, p.index) for p in cluster.pods.pods)


# --- first install ----------------------------------------------------------------------------


def test_a_first_install_creates_the_cluster_once_with_each_shards_first_pod_as_master(
    cluster_pods: Callable[..., ClusterPods], record_property: Callable[[str, object], None]
) -> None:
    cluster = cluster_pods()
    seconds = started_whole(cluster)
    record_property("creation_seconds", round(seconds, 1))
    print(f"\ncluster created and whole {seconds:.1f} s after all six pods started")

    names = [p.name for p in cluster.pods.pods]
    assert cluster.shards() == {names[0]: [names[1]], names[2]: [names[3]], names[4]: [names[5]]}
    assert log_of(cluster, 0).count("creating one of 3 shards") == 1
    assert all("creating" not in log_of(cluster, i) for i in range(1, 6))
    # Clients are handed the pods' names, never IPs.
    with cluster.admin(1) as node:
        hosts = {str(entry[2][0]) for entry in node.execute_command("CLUSTER", "SLOTS")}
    assert hosts == {names[0], names[2], names[4]}
    # What NOTES.txt tells an operator to run says the same.
    check = run_script(
        "cluster-check.sh",
        cluster.pods.env(cluster.pods.pods[0], "redis"),
        scripts_dir=cluster.pods.scripts_dir,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "cluster_state:ok" in check.stdout and "All 16384 slots covered" in check.stdout
    # Pod 0 deleted as Kubernetes does it: its preStop hands the master role to pod 1 first.
    ids = {n.host: n.node_id for n in cluster.view(1)}
    prestop = run_script(
        "cluster-prestop.sh",
        cluster.pods.env(cluster.pods.pods[0], "redis"),
        scripts_dir=cluster.pods.scripts_dir,
    )
    assert prestop.returncode == 0, prestop.stderr
    assert (cluster.role(0), cluster.role(1)) == ("slave", "master")
    cluster.pods.stop(0)
    cluster.pods.start(0)
    cluster.wait_whole(list(range(6)))
    # Back as pod 1's replica, the same node; the cluster it found was never created again.
    assert cluster.shards() == {names[1]: [names[0]], names[2]: [names[3]], names[4]: [names[5]]}
    assert {n.host: n.node_id for n in cluster.view(1)} == ids
    assert log_of(cluster, 0).count("creating one of 3 shards") == 1


def test_a_cluster_pod_runs_the_shared_config_with_its_name_announced_and_nodes_conf_kept(
    cluster_pods: Callable[..., ClusterPods],
) -> None:
    cluster = cluster_pods()
    started_whole(cluster)
    pod = cluster.pods.pods[2]
    config = (pod.directory / "redis" / "config" / "redis.conf").read_text()
    lines = {line.split(maxsplit=1)[0]: line for line in config.splitlines() if line[:1].isalpha()}

    assert lines["cluster-enabled"] == "cluster-enabled yes"
    assert lines["cluster-announce-hostname"] == f"cluster-announce-hostname {pod.name}"
    assert lines["cluster-preferred-endpoint-type"].endswith(" hostname")
    assert lines["cluster-node-timeout"] == "cluster-node-timeout 1000"
    assert lines["appendonly"] == "appendonly yes"
    assert lines["min-replicas-to-write"] == "min-replicas-to-write 1"
    assert lines["maxmemory"] == "maxmemory 256mb"
    assert "replicaof" not in lines
    assert (pod.directory / "redis" / "data" / "nodes.conf").is_file()


def test_with_tls_and_acl_the_cluster_forms_replicates_and_serves_over_tls_only(
    cluster_pods: Callable[..., ClusterPods], certificates: dict[str, str]
) -> None:
    cluster = cluster_pods(certificates=certificates)
    started_whole(cluster)
    cluster.write_sessions()

    assert cluster.sessions_kept() == SESSIONS
    config = (cluster.pods.pods[0].directory / "redis" / "config" / "redis.conf").read_text()
    assert "\ntls-cluster yes\n" in config and "\ntls-replication yes\n" in config
    # The plain-text port is closed: a client without TLS gets nowhere.
    first = cluster.pods.pods[0]
    with pytest.raises(RedisError), Redis(host=first.ip, port=first.redis_port) as plain:
        plain.ping()
    probe = run_script(
        "cluster-probe.sh",
        cluster.pods.env(cluster.pods.pods[1], "redis"),
        "cluster-ready",
        scripts_dir=cluster.pods.scripts_dir,
    )
    assert probe.returncode == 0, probe.stderr


# --- restarts ---------------------------------------------------------------------------------


def test_a_pod_back_on_a_new_ip_with_its_kept_nodes_conf_rejoins(
    cluster_pods: Callable[..., ClusterPods], record_property: Callable[[str, object], None]
) -> None:
    cluster = cluster_pods()
    started_whole(cluster)
    cluster.write_sessions()
    old_id = next(n.node_id for n in cluster.view(2) if "myself" in n.flags)

    # The master of shard 1 is recreated on another node: its replica takes over meanwhile.
    cluster.pods.stop(2)
    wait_until("pod 3 takes over shard 1", lambda: cluster.role(3) == "master")
    cluster.pods.move(2, "127.0.0.112")
    cluster.pods.start(2)
    seconds = cluster.wait_whole(list(range(6)))
    record_property("rejoin_seconds", round(seconds, 1))
    print(f"\npod 2 rejoined from its new IP in {seconds:.1f} s")

    assert next(n.node_id for n in cluster.view(2) if "myself" in n.flags) == old_id
    moved = cluster.pods.pods[2].name
    assert {n.ip for i in range(6) for n in cluster.view(i) if n.host == moved} == {"127.0.0.112"}
    assert cluster.sessions_kept() == SESSIONS


def test_a_pod_that_lost_its_volume_joins_as_its_shards_replica_and_its_old_id_is_forgotten(
    cluster_pods: Callable[..., ClusterPods],
) -> None:
    cluster = cluster_pods()
    started_whole(cluster)
    cluster.write_sessions()
    old_id = next(n.node_id for n in cluster.view(0) if "myself" in n.flags)

    # Pod 0, shard 0's master, is lost with its volume (nodes.conf and data).
    cluster.pods.stop(0, kill=True)
    wait_until("pod 1 takes over shard 0", lambda: cluster.role(1) == "master")
    cluster.pods.lose_volume(0)
    cluster.pods.start(0)
    cluster.wait_whole(list(range(6)))

    names = [p.name for p in cluster.pods.pods]
    assert cluster.shards()[names[1]] == [names[0]]
    assert all(n.node_id != old_id for i in range(6) for n in cluster.view(i))
    assert "forgetting failed node " + old_id in all_logs(cluster)
    assert log_of(cluster, 0).count("creating one of 3 shards") == 1
    assert cluster.sessions_kept() == SESSIONS


def test_all_pods_restarted_at_once_on_new_ips_re_form_the_cluster_with_every_session(
    cluster_pods: Callable[..., ClusterPods], record_property: Callable[[str, object], None]
) -> None:
    cluster = cluster_pods()
    started_whole(cluster)
    cluster.write_sessions()
    layout = cluster.shards()

    everyone = list(range(6))
    cluster.pods.stop(*everyone)
    for i in everyone:
        cluster.pods.move(i, f"127.0.0.{120 + i}")
    cluster.pods.start(*everyone)
    seconds = cluster.wait_whole(everyone, timeout=120)
    record_property("reformation_seconds", round(seconds, 1))
    print(f"\nall six pods back on new IPs: the cluster re-formed in {seconds:.1f} s")

    assert len(cluster.shards()) == len(layout) == 3
    assert cluster.sessions_kept() == SESSIONS
    assert "meeting" in log_of(cluster, 0)


# --- scaling ----------------------------------------------------------------------------------


def test_a_scale_out_by_one_shard_joins_two_nodes_and_moves_slots_onto_them_then_a_drained_scale_in(
    cluster_pods: Callable[..., ClusterPods],
    record_property: Callable[[str, object], None],
) -> None:
    cluster = cluster_pods()
    started_whole(cluster)
    cluster.write_sessions()

    # helm upgrade --set redis.cluster.shards=4: two new pods, with the new environment.
    four: Rendered = render({"redis": {"mode": "cluster", "cluster": {"shards": 4}}})
    ports = [cluster.pods.pods[0].redis_port, cluster.bus_port]
    cluster.pods.add_pods(four, ports * 2, 2)
    started = time.monotonic()
    cluster.pods.start(6, 7)
    seconds = cluster.wait_whole(list(range(8)), shards=4, timeout=120)
    wait_until(
        "the new shard holds an even share of the slots",
        lambda: min(n.slots for n in cluster.view(0) if "master" in n.flags) >= 0.9 * 4096,
        timeout=120,
    )
    balanced = time.monotonic() - started
    record_property("scale_out_seconds", round(balanced, 1))
    print(f"\nscale-out: 8 nodes whole {seconds:.1f} s, slots even {balanced:.1f} s after start")

    names = [p.name for p in cluster.pods.pods]
    assert cluster.shards()[names[6]] == [names[7]]
    assert cluster.sessions_kept() == SESSIONS

    # Scale-in back to 3 shards: drained first, then the two pods go and are forgotten.
    drain = run_script(
        "cluster-drain.sh",
        cluster.pods.env(cluster.pods.pods[0], "redis"),
        "3",
        timeout=300,
        scripts_dir=cluster.pods.scripts_dir,
    )
    assert drain.returncode == 0, drain.stderr
    assert all(n.slots == 0 for n in cluster.view(0) if n.host in names[6:])
    # A drained master hands itself to the node that took its last slot (Redis 7.0 replica
    # migration) and syncs from it: Redis refuses SIGTERM while writing that first AOF, and
    # only the grace period's SIGKILL would end it. Both nodes hold no slot: kill them.
    cluster.pods.stop(6, 7, kill=True)
    cluster.pods.publish(6, False)
    cluster.pods.publish(7, False)
    cluster.wait_whole(list(range(6)), timeout=120)
    assert "forgetting failed node" in all_logs(cluster)
    assert cluster.sessions_kept() == SESSIONS
