"""The compose Redis entrypoint choosing a node's role at start, against a real running
topology (the local secure one: the same ACL users and mutual TLS as the compose TLS variant):
a master that comes back without its data never starts as master while another node holds
some."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy.local.credentials import USERS
from deploy.local.spec import Node
from deploy.local.topology import LocalTopology
from tests.compose.stack import REPO

pytestmark = pytest.mark.integration

ENTRYPOINT = REPO / "deploy" / "compose" / "redis-entrypoint.sh"
# Sentinel's down-after plus the election, generously.
PROMOTION_TIMEOUT_SECONDS = 60


def start_node_on_a_new_volume(topology: LocalTopology, node: Node, volume: Path) -> str:
    """Run the entrypoint as compose would for `node`, up to the rendered config (it would
    exec redis-server next), on an empty volume; returns what it printed."""
    credentials = topology.credentials
    assert credentials is not None
    volume.mkdir()
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "redis"],
        env={
            "PATH": os.environ["PATH"],
            "SESSIONLIB_TEMPLATE_DIR": str(REPO / "deploy" / "redis"),
            "SESSIONLIB_DATA_DIR": str(volume),
            "SESSIONLIB_RENDER_ONLY": "1",
            "TLS_SOURCE_DIR": str(credentials.ca_file.parent),
            "REDIS_PORT": str(node.port),
            "REDIS_BIND": node.host,
            "REDIS_ANNOUNCE_HOST": node.host,
            "REDIS_NODES": " ".join(n.address for n in topology.redis_nodes),
            "SENTINEL_NODES": " ".join(s.address for s in topology.sentinel_nodes),
            "SENTINEL_MASTER_NAME": topology.master_name,
            **{f"{user.upper()}_PASSWORD": credentials.password(user) for user in USERS},
        },
        capture_output=True,
        text=True,
        timeout=PROMOTION_TIMEOUT_SECONDS,
        check=True,
    )
    return result.stdout


def hold_off_failovers(topology: LocalTopology) -> None:
    """Sentinel waits 5 s, not 2, before it counts a master down: the entrypoint asks the
    sentinels while they still name the killed master, on a loaded machine too."""
    for sentinel in topology.sentinel_nodes:
        with topology.client(sentinel) as client:
            client.sentinel_set(topology.master_name, "down-after-milliseconds", 5000)


def replicaof(volume: Path) -> str | None:
    """The master the rendered config replicates, "host:port" (None: it starts as master)."""
    for line in (volume / "redis.conf").read_text().splitlines():
        if line.startswith("replicaof "):
            _, host, port = line.split()
            return f"{host}:{port}"
    return None


def test_a_master_back_without_its_data_waits_for_the_promotion_and_replicates_the_new_one(
    secure_topology: LocalTopology, tmp_path: Path
) -> None:
    with secure_topology.client("master") as master:
        master.set("sessionlib:kept", "1")
        assert master.wait(2, 5000) == 2
    hold_off_failovers(secure_topology)

    # Back at once on a new volume: the sentinels still name it master.
    old = secure_topology.kill("master")
    printed = start_node_on_a_new_volume(secure_topology, old, tmp_path / "volume")

    new = secure_topology.master_address()
    assert new != old.address
    assert replicaof(tmp_path / "volume") == new
    assert "waiting for them to promote a replica" in printed
    with secure_topology.client(new) as master:
        assert master.get("sessionlib:kept") == "1"


def test_a_master_back_without_data_where_no_node_holds_any_starts_as_master_at_once(
    secure_topology: LocalTopology, tmp_path: Path
) -> None:
    with secure_topology.client("master") as master:
        assert master.dbsize() == 0
    hold_off_failovers(secure_topology)

    old = secure_topology.kill("master")
    printed = start_node_on_a_new_volume(secure_topology, old, tmp_path / "volume")

    assert replicaof(tmp_path / "volume") is None
    assert "no other node that answers holds any either" in printed
