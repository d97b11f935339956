"""`make up-local MODE=cluster` for real: the command line starts the Redis Cluster and both
services in Cluster mode on ports of the test's own, and `down` stops all of it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from deploy.local.cluster import LocalCluster
from deploy.local.processes import find_free_ports, port_in_use
from tests.e2e.harness import login
from tests.support.topology_cli import run_topology_cli

pytestmark = pytest.mark.integration


def test_the_cluster_stacks_services_share_a_session_stored_in_the_cluster(
    tmp_path: Path,
) -> None:
    ports = find_free_ports(14)
    gateway, cart = f"http://127.0.0.1:{ports[12]}", f"http://127.0.0.1:{ports[13]}"
    run_dir = ["--run-dir", str(tmp_path / "cluster-stack")]
    try:
        up = run_topology_cli(
            "up", "--mode", "cluster",
            "--cluster-ports", ",".join(map(str, ports[:6])),
            "--cluster-bus-ports", ",".join(map(str, ports[6:12])),
            "--gateway-port", str(ports[12]), "--cart-port", str(ports[13]),
            "--no-observability", *run_dir,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        session_id = login(gateway, "carol")
        added = httpx.post(
            f"{cart}/cart/items",
            json={"sku": "kettle", "qty": 2},
            headers={"X-Session-Id": session_id},
            timeout=10.0,
        )
        through_gateway = httpx.get(
            f"{gateway}/cart", headers={"X-Session-Id": session_id}, timeout=10.0
        )
        me = httpx.get(f"{gateway}/me", headers={"X-Session-Id": session_id}, timeout=10.0)
        cluster = LocalCluster(tmp_path / "cluster-stack")
        key = f"sessionlib:s:{{{session_id.partition('.')[0]}}}"
        with cluster.client(cluster.master_of(key)) as client:
            stored_in_cluster = client.exists(key)
        status = run_topology_cli("status", *run_dir)
        down = run_topology_cli("down", *run_dir)
    finally:
        LocalCluster(tmp_path / "cluster-stack").down()

    assert added.status_code == 201, added.text
    assert through_gateway.json()["items"] == [{"sku": "kettle", "qty": 2}]
    assert me.json()["user"] == "carol"
    assert stored_in_cluster == 1
    assert f"gateway  http://127.0.0.1:{ports[12]}" in status.stdout
    assert f"cart     http://127.0.0.1:{ports[13]}" in status.stdout
    assert down.stdout.startswith("stopped cart, gateway, cluster-1")
    assert not any(port_in_use("127.0.0.1", port) for port in ports[:6] + ports[12:])
