"""`make demo` end to end: it starts the stack on its own ports, tells the story, and
exits 0 only when no acknowledged cart item was lost across a killed master."""

import os
import re
import subprocess
import sys

import pytest

from deploy.local.cluster import ClusterSpec, LocalCluster
from deploy.local.processes import find_free_ports
from deploy.local.topology import LocalTopology

pytestmark = pytest.mark.integration


def test_the_demo_survives_a_killed_master_and_loses_nothing(tmp_path):
    ports = find_free_ports(8)
    run_dir = tmp_path / "demo"
    command = [
        sys.executable,
        "-m",
        "deploy.local.demo",
        "--mode",
        "sentinel",
        "--run-dir",
        str(run_dir),
        "--redis-ports",
        ",".join(map(str, ports[:3])),
        "--sentinel-ports",
        ",".join(map(str, ports[3:6])),
        "--gateway-port",
        str(ports[6]),
        "--cart-port",
        str(ports[7]),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert ", 0 lost" in output
        assert "rejoins as a replica" in output
        assert "Stop everything" in output
    finally:
        LocalTopology(run_dir).down()
    assert not LocalTopology(run_dir).is_running()


def test_the_cluster_demo_kills_the_master_of_the_sessions_slot_and_loses_nothing(tmp_path):
    ports = find_free_ports(14)
    spec = ClusterSpec(ports=tuple(ports[:6]), bus_ports=tuple(ports[6:12]))
    run_dir = tmp_path / "cluster-demo"
    command = [
        sys.executable,
        "-m",
        "deploy.local.demo",
        "--mode",
        "cluster",
        "--run-dir",
        str(run_dir),
        "--cluster-ports",
        ",".join(map(str, spec.ports)),
        "--cluster-bus-ports",
        ",".join(map(str, spec.bus_ports)),
        "--gateway-port",
        str(ports[12]),
        "--cart-port",
        str(ports[13]),
    ]
    # Wide enough that rich keeps each narrated line on one line.
    env = {**os.environ, "COLUMNS": "200"}
    cluster = LocalCluster(run_dir, spec)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        killed, slot = re.search(
            r"Kill (\S+), the master of the session's slot (\d+) \(SIGKILL\)", output
        ).groups()
        promoted = re.search(r"the cluster promoted (\S+) in", output).group(1)
        rejoined = re.search(rf"{re.escape(killed)} replicates from (\S+)", output).group(1)
        # What the cluster itself says after the demo, not what the demo printed.
        owner_at_start = _first_master_of(spec, int(slot))
        session_keys = _session_keys(cluster)
        serving_now = cluster.master_of(int(slot)).address
        replica_of = cluster.wait_for_replica(killed, timeout=30.0).address
    finally:
        cluster.down()

    assert "durability: each write WAITs for 1 replica(s)" in " ".join(output.split())
    assert ", 0 lost" in output
    assert "rejoins as a replica" in output
    assert killed == f"127.0.0.1:{owner_at_start}"
    assert [slot_of_key for _, slot_of_key in session_keys] == [int(slot)]
    assert promoted == serving_now == rejoined == replica_of
    assert promoted != killed
    assert not cluster.is_running()


def _first_master_of(spec: ClusterSpec, slot: int) -> int:
    """The port of the master that `up` gives `slot` (the first ports, in slot order)."""
    masters = spec.ports[: spec.master_count]
    for port, (first, last) in zip(masters, spec.slot_ranges(), strict=True):
        if first <= slot <= last:
            return port
    raise AssertionError(f"no master starts with slot {slot}")


def _session_keys(cluster: LocalCluster) -> list[tuple[str, int]]:
    """Every session key in the cluster with its slot, as the masters holding them say."""
    found = []
    for node in cluster.nodes:
        with cluster.client(node) as client:
            if client.execute_command("ROLE")[0] != "master":
                continue
            for key in client.scan_iter(match="sessionlib:s:*"):
                found.append((key, int(client.execute_command("CLUSTER", "KEYSLOT", key))))
    return found
