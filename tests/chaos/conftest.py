"""Fixtures of the chaos suite: the profile in force and a topology whose first master runs in
a network namespace of its own, so it can be partitioned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.netns import NamespaceUnavailable, NetworkNamespace
from deploy.local.processes import find_free_ports
from deploy.local.spec import TopologySpec
from deploy.local.topology import LocalTopology
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
