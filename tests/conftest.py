"""Shared fixtures: free ports, real local Redis HA topologies and a standalone redis-server.
Everything runs on ports of its own in a tmp dir, so tests never meet a `make up-local` run."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.local.processes import port_in_use
from deploy.local.spec import TopologySpec
from deploy.local.standalone import StandaloneRedis
from deploy.local.topology import LocalTopology

# Below Linux's ephemeral range (32768 and up), so no outgoing connection takes a port between
# the check and the server binding it, and clear of the ports of `make up-local` (6380-6382,
# 26380-26382, 8080, 8081, 9090, 9121).
TEST_PORT_RANGE = range(20000, 26000)


def find_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports on `host` that nothing listens on right now."""
    chosen: list[int] = []
    while len(chosen) < count:
        # Random rather than sequential, so two test runs side by side rarely pick the same.
        port = random.choice(TEST_PORT_RANGE)
        if port not in chosen and not port_in_use(host, port):
            chosen.append(port)
    return chosen


@pytest.fixture
def free_ports() -> Callable[[int], list[int]]:
    """`free_ports(n)` -> n distinct free ports on 127.0.0.1."""
    return find_free_ports


def _running_topology(run_dir: Path) -> Iterator[LocalTopology]:
    ports = find_free_ports(6)
    spec = TopologySpec(redis_ports=tuple(ports[:3]), sentinel_ports=tuple(ports[3:]))
    topology = LocalTopology(run_dir, spec)
    try:
        topology.up()
        yield topology
    finally:
        topology.down()


@pytest.fixture
def local_topology(tmp_path: Path) -> Iterator[LocalTopology]:
    """A fresh, ready topology (1 master, 2 replicas, 3 sentinels) for one test to break."""
    yield from _running_topology(tmp_path / "topology")


@pytest.fixture(scope="session")
def shared_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTopology]:
    """One ready topology for the whole run: read and write through it, never break it."""
    yield from _running_topology(tmp_path_factory.mktemp("shared-topology"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[StandaloneRedis]:
    """A standalone redis-server with AOF on: `.url`, `.port`, `.kill()`, `.restart()`, ..."""
    server = StandaloneRedis(tmp_path / "redis", find_free_ports(1)[0])
    server.start()
    try:
        yield server
    finally:
        server.stop()
