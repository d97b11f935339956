"""Shared fixtures: free ports, real local Redis HA topologies and a standalone redis-server.
Everything runs on ports of its own in a tmp dir, so tests never meet a `make up-local` run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.local.processes import FREE_PORT_RANGE, FREE_PORT_RANGE_VARIABLE, find_free_ports
from deploy.local.spec import TopologySpec
from deploy.local.standalone import StandaloneRedis
from deploy.local.topology import LocalTopology

__all__ = ["find_free_ports"]  # tests import it from here too


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker (and what it starts) picks free ports from a slice of
    its own: a port one worker found free could otherwise be bound by another first."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or workers < 2:
        return
    width = len(FREE_PORT_RANGE) // workers
    start = FREE_PORT_RANGE.start + int(worker.removeprefix("gw")) * width
    os.environ[FREE_PORT_RANGE_VARIABLE] = f"{start}-{start + width}"


@pytest.fixture
def free_ports() -> Callable[[int], list[int]]:
    """`free_ports(n)` -> n distinct free ports on 127.0.0.1."""
    return find_free_ports


def _running_topology(run_dir: Path, *, secure: bool = False) -> Iterator[LocalTopology]:
    ports = find_free_ports(6)
    spec = TopologySpec(
        redis_ports=tuple(ports[:3]), sentinel_ports=tuple(ports[3:]), secure=secure
    )
    with LocalTopology(run_dir, spec) as topology:
        yield topology


@pytest.fixture
def local_topology(tmp_path: Path) -> Iterator[LocalTopology]:
    """A fresh, ready topology (1 master, 2 replicas, 3 sentinels) for one test to break."""
    yield from _running_topology(tmp_path / "topology")


@pytest.fixture(scope="session")
def shared_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTopology]:
    """One ready topology for the whole run: read and write through it, never break it."""
    yield from _running_topology(tmp_path_factory.mktemp("shared-topology"))


@pytest.fixture
def secure_topology(tmp_path: Path) -> Iterator[LocalTopology]:
    """Like `local_topology`, in secure mode (DESIGN §3b): TLS only, ACL users; its
    `redis_settings()` log in as `sessionlib`, its `client()` as `admin`."""
    yield from _running_topology(tmp_path / "secure-topology", secure=True)


@pytest.fixture(scope="session")
def shared_secure_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTopology]:
    """One ready secure topology for the whole run: read and write through it, never break it."""
    yield from _running_topology(tmp_path_factory.mktemp("shared-secure-topology"), secure=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[StandaloneRedis]:
    """A standalone redis-server with AOF on: `.url`, `.port`, `.kill()`, `.restart()`, ..."""
    with StandaloneRedis(tmp_path / "redis", find_free_ports(1)[0]) as server:
        yield server
