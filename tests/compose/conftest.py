"""Fixtures for docker-compose.ha.yml: the stack run for real on a private Docker engine.
That run (marker `compose_engine`) takes minutes, so it runs only in `make test-compose`."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.compose.engine import DEFAULT_STATE_DIR, PrivateDockerEngine
from deploy.images.standins import build_standins
from deploy.local.processes import find_free_ports, port_in_use
from tests.compose.stack import (
    CLUSTER_SERVICES,
    PORT_NAMES,
    REPO,
    SERVICE_PORT_NAMES,
    SERVICES,
    HaStack,
)

RUN_VARIABLE = "SESSIONLIB_COMPOSE_ENGINE"
# Where the engine keeps its data root (the image cache) between runs.
STATE_VARIABLE = "SESSIONLIB_DOCKER_STATE_DIR"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "compose_engine: runs docker-compose.ha.yml on a private Docker engine "
        f"(make test-compose, or {RUN_VARIABLE}=1)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get(RUN_VARIABLE) == "1":
        return
    skip = pytest.mark.skip(
        reason=f"the real compose run is `make test-compose` ({RUN_VARIABLE}=1)"
    )
    for item in items:
        if "compose_engine" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[PrivateDockerEngine]:
    """dockerd of our own (no bridge, no iptables), stopped at the end even after a failure."""
    state_dir = Path(os.environ.get(STATE_VARIABLE) or REPO / DEFAULT_STATE_DIR)
    engine = PrivateDockerEngine(state_dir)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module", params=["plain", "tls"])
def ha_stack(
    request: pytest.FixtureRequest,
    docker_engine: PrivateDockerEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HaStack]:
    """The Sentinel stack built from local images only and up and healthy, on ports of its own,
    plain and then with TLS (deploy/compose/tls.yml), ACL users in both; torn down with its
    volumes at the end of each. Timings go to .run/compose/timings-<variant>.json."""
    variant = str(request.param)
    with _running_stack(
        docker_engine,
        tmp_path_factory,
        variant,
        ports=find_free_ports(len(PORT_NAMES)),
        services=SERVICES,
        tls=variant == "tls",
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def cluster_stack(
    docker_engine: PrivateDockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HaStack]:
    """The Cluster stack (docker-compose.cluster.yml) up and healthy on ports of its own, torn
    down with its volumes at the end. Timings go to .run/compose/timings-cluster.json."""
    with _running_stack(
        docker_engine,
        tmp_path_factory,
        "cluster",
        ports=_cluster_node_ports() + find_free_ports(len(SERVICE_PORT_NAMES)),
        services=CLUSTER_SERVICES,
        mode="cluster",
    ) as stack:
        yield stack


def _cluster_node_ports() -> list[int]:
    """Six free ports whose cluster bus ports (port + 10000, host-network mode) are free too and
    below Linux's ephemeral range."""
    ports: list[int] = []
    while len(ports) < 6:
        port = find_free_ports(1)[0]
        bus = port + 10000
        if port not in ports and bus < 32768 and not port_in_use("127.0.0.1", bus):
            ports.append(port)
    return ports


@contextlib.contextmanager
def _running_stack(
    engine: PrivateDockerEngine,
    tmp_path_factory: pytest.TempPathFactory,
    variant: str,
    ports: list[int],
    services: tuple[str, ...],
    tls: bool = False,
    mode: str = "sentinel",
) -> Iterator[HaStack]:
    """A stack of stand-in images and the services' own Dockerfile, up until healthy, then
    its logs saved and the stack down with its volumes, timings written."""
    report_dir = REPO / ".run" / "compose"
    report_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings: dict[str, float] = {}
    for image, seconds in build_standins(
        engine.docker, engine.env(), REPO / ".run" / "images"
    ).items():
        timings[f"stand-in {image}"] = seconds
    timings["stand-ins"] = time.monotonic() - started

    stack = HaStack.create(
        engine,
        tmp_path_factory.mktemp(f"compose-{variant}"),
        ports,
        project=f"sessionlib-test-{variant}-{os.getpid()}",
        tls=tls,
        mode=mode,
    )
    stack.timings.update(timings)
    timings = stack.timings
    try:
        mark = time.monotonic()
        # The services' own Dockerfile, unchanged, on the stand-in python:3.11-slim.
        stack.ha("build", "cart", "gateway")
        timings["build services"] = time.monotonic() - mark
        mark = time.monotonic()
        stack.ha("up", *services)
        timings["up until healthy"] = time.monotonic() - mark
        yield stack
    finally:
        stack.save_logs(report_dir / f"last-run-logs-{variant}.txt")
        mark = time.monotonic()
        stack.ha("down", "--volumes", "--timeout", "5")
        timings["down"] = time.monotonic() - mark
        timings["total"] = time.monotonic() - started
        (report_dir / f"timings-{variant}.json").write_text(json.dumps(timings, indent=2) + "\n")
