"""Fixtures of the chaos suite: the profile in force, a topology (or a Redis Cluster) whose
first master runs in a network namespace of its own, so it can be partitioned, and the
clusters of the Cluster-mode scenarios with the durability they run with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.cluster import ClusterSpec, LocalCluster
from deploy.local.netns import NamespaceUnavailable, NetworkNamespace
from deploy.local.processes import find_free_ports
from deploy.local.spec import TopologySpec
from deploy.local.topology import LocalTopology
from sessionlib.config import RedisSettings, SessionSettings, Settings
from tests.chaos.partitionable_cluster import PartitionableCluster, PartitionableClusterSpec
from tests.chaos.profile import ChaosProfile, current_profile


@pytest.fixture(scope="session")
def profile() -> ChaosProfile:
    return current_profile()


@pytest.fixture
def namespace() -> Iterator[NetworkNamespace]:
    """A fresh network namespace with a veth pair into this one; removed afterwards."""
    try:
        created = NetworkNamespace.create_free()
    except NamespaceUnavailable as exc:
        pytest.skip(f"this kernel or user cannot make network namespaces: {exc}")
    with created:
        yield created


@pytest.fixture
def partitionable_topology(tmp_path: Path, namespace: NetworkNamespace) -> Iterator[LocalTopology]:
    """A ready topology whose master runs in `namespace`; the rest binds the namespace's
    peer address in this one, so the master can be cut off from them alone."""
    ports = find_free_ports(6, namespace.peer_address)
    spec = TopologySpec(
        redis_ports=tuple(ports[:3]),
        sentinel_ports=tuple(ports[3:]),
        host=namespace.peer_address,
        netns=namespace.name,
        netns_host=namespace.inside_address,
    )
    with LocalTopology(tmp_path / "topology", spec) as topology:
        yield topology


@pytest.fixture
def chaos_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A fresh, ready Redis Cluster (3 masters, a replica each) on ports of its own."""
    ports = find_free_ports(12)
    spec = ClusterSpec(ports=tuple(ports[:6]), bus_ports=tuple(ports[6:]))
    with LocalCluster(tmp_path / "cluster", spec) as cluster:
        yield cluster


@pytest.fixture
def partitionable_cluster(tmp_path: Path, namespace: NetworkNamespace) -> Iterator[LocalCluster]:
    """A ready cluster whose first master runs in `namespace`; the other nodes bind the
    namespace's peer address in this one, so that master can be cut off from them alone."""
    ports = find_free_ports(12, namespace.peer_address)
    spec = PartitionableClusterSpec(
        ports=tuple(ports[:6]),
        bus_ports=tuple(ports[6:]),
        host=namespace.peer_address,
        netns=namespace.name,
        netns_host=namespace.inside_address,
    )
    with PartitionableCluster(tmp_path / "cluster", spec) as cluster:
        yield cluster


def _cluster_accepts_wait() -> bool:
    """Whether sessionlib runs `WAIT` in Cluster mode yet (its settings refuse it before)."""
    try:
        Settings(
            redis=RedisSettings(mode="cluster", cluster_nodes=["127.0.0.1:7001"]),
            session=SessionSettings(durability={"replicas": 1}),
        )
    except ValueError:
        return False
    return True


@pytest.fixture(params=[True, False], ids=["durability-on", "durability-off"])
def cluster_durability(request: pytest.FixtureRequest, profile: ChaosProfile) -> bool:
    """Durability (WAIT 1 after each write) for a Cluster scenario: on whenever sessionlib
    supports it; off as well in the full profile, or instead of on until it does."""
    wanted: bool = request.param
    supported = _cluster_accepts_wait()
    if wanted and not supported:
        pytest.skip("sessionlib refuses session.durability.replicas > 0 in Cluster mode yet")
    if not wanted and supported and not profile.cluster_durability_off_too:
        pytest.skip(f"the {profile.name} profile runs Cluster scenarios with durability on only")
    return wanted
