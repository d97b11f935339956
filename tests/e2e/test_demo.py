"""`make demo` end to end: it starts the stack on its own ports, tells the story, and
exits 0 only when no acknowledged cart item was lost across a killed master."""

import subprocess
import sys

import pytest

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
