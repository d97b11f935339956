"""`make up-local` with Prometheus and redis_exporter: started on loopback when installed,
skipped with a note when not, and stopped by `make down-local` like every other process."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from deploy.local.processes import find_free_ports, liveness
from deploy.local.topology import LocalTopology
from tests.observability.conftest import observability_installed
from tests.support.topology_cli import run_topology_cli, stack_port_flags

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not observability_installed(), reason="make setup installs both"),
]


def test_up_starts_prometheus_and_redis_exporter_on_loopback_and_down_stops_them(
    tmp_path: Path,
) -> None:
    ports = find_free_ports(10)
    run_dir = str(tmp_path / "run")

    up = run_topology_cli("up", *stack_port_flags(ports), "--no-services", "--run-dir", run_dir)
    recorded = {p.name: p for p in LocalTopology(run_dir).processes if p.kind == "observability"}
    ready = httpx.get(f"http://127.0.0.1:{ports[8]}/-/ready", timeout=5.0).status_code
    exporter = httpx.get(f"http://127.0.0.1:{ports[9]}/metrics", timeout=5.0).text
    down = run_topology_cli("down", "--run-dir", run_dir)

    assert up.returncode == 0, up.stderr
    assert sorted(recorded) == ["prometheus", "redis_exporter"]
    assert {p.address for p in recorded.values()} == {
        f"127.0.0.1:{ports[8]}",
        f"127.0.0.1:{ports[9]}",
    }
    assert ready == 200
    assert "redis_exporter_build_info" in exporter
    assert "prometheus" in down.stdout and "redis_exporter" in down.stdout
    assert all(liveness(process) == "dead" for process in recorded.values())


def test_up_without_prometheus_installed_starts_the_rest_and_says_how_to_install_it(
    tmp_path: Path,
) -> None:
    only_redis = tmp_path / "bin"
    only_redis.mkdir()
    for program in ("redis-server", "redis-sentinel"):
        (only_redis / program).symlink_to(shutil.which(program) or program)
    run_dir = str(tmp_path / "run")

    up = run_topology_cli(
        "up",
        *stack_port_flags(find_free_ports(10)),
        "--no-services",
        "--run-dir",
        run_dir,
        path=str(only_redis),
    )
    kinds = {p.kind for p in LocalTopology(run_dir).processes}
    run_topology_cli("down", "--run-dir", run_dir)

    assert up.returncode == 0, up.stderr
    assert kinds == {"redis", "sentinel"}
    assert "prometheus is not installed" in up.stderr
    assert "apt-get install prometheus prometheus-redis-exporter" in up.stderr
