"""`make up-local SECURE=1` end to end: the stack started by its command line, the gateway and
cart on Sentinel over mutual TLS as the ACL user `sessionlib`, redis_exporter and Prometheus
(when installed) scraping every node as `exporter`, and no secret where others can read it."""

from __future__ import annotations

import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.local.processes import find_free_ports
from deploy.local.topology import LocalTopology
from tests.support.topology_cli import run_topology_cli, stack_port_flags

pytestmark = pytest.mark.integration

SCRAPE_TIMEOUT = 30.0


@dataclass(frozen=True)
class SecureStack:
    topology: LocalTopology
    ports: list[int]  # Redis x3, Sentinel x3, gateway, cart, Prometheus, redis_exporter
    up_output: str

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports[6]}"

    @property
    def cart(self) -> str:
        return f"http://127.0.0.1:{self.ports[7]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    run_dir = tmp_path_factory.mktemp("secure-stack")
    ports = find_free_ports(10)
    try:
        up = run_topology_cli("up", "--secure", *stack_port_flags(ports), "--run-dir", str(run_dir))
        assert up.returncode == 0, up.stderr
        yield SecureStack(LocalTopology(run_dir), ports, up.stdout)
    finally:
        LocalTopology(run_dir).down()


def test_login_cart_and_logout_work_through_both_services_over_tls_and_acl(
    stack: SecureStack,
) -> None:
    with httpx.Client(timeout=10.0) as client:
        login = client.post(f"{stack.gateway}/login", json={"username": "ann", "password": "demo"})
        session = {"X-Session-Id": login.headers["X-Session-Id"]}
        added = client.post(
            f"{stack.gateway}/cart/items", json={"sku": "mug", "qty": 2}, headers=session
        )
        in_cart = client.get(f"{stack.cart}/cart", headers=session)
        me = client.get(f"{stack.gateway}/me", headers=session)
        logout = client.post(f"{stack.gateway}/logout", headers=session)
        after = client.get(f"{stack.cart}/cart", headers=session)

    assert login.status_code == 200
    assert added.status_code == 201
    assert in_cart.json() == {"items": [{"sku": "mug", "qty": 2}]}
    assert me.json()["user"] == "ann"
    assert logout.status_code == 204
    assert after.status_code == 401


def test_the_services_log_in_as_sessionlib_from_a_private_env_file(stack: SecureStack) -> None:
    env_file = stack.topology.run_dir / "services.env"
    settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    services = [p for p in stack.topology.processes if p.kind == "service"]
    credentials = stack.topology.credentials
    assert credentials is not None
    command_lines = [Path(f"/proc/{p.pid}/cmdline").read_bytes().decode() for p in services]

    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert settings["SESSIONLIB_REDIS__USERNAME"] == "sessionlib"
    assert settings["SESSIONLIB_REDIS__SENTINEL_USERNAME"] == "sessionlib"
    assert settings["SESSIONLIB_REDIS__TLS__ENABLED"] == "true"
    assert settings["SESSIONLIB_REDIS__TLS__CERT_FILE"] == str(credentials.client.cert_file)
    assert len(services) == 2
    assert not [pw for pw in credentials.passwords.values() for line in command_lines if pw in line]
    for url in (stack.gateway, stack.cart):
        assert httpx.get(f"{url}/readyz", timeout=5.0).status_code == 200


def test_up_prints_how_to_connect_with_redis_cli(stack: SecureStack) -> None:
    run_dir = stack.topology.run_dir
    tls = run_dir / "tls"
    assert "TLS only, mutual" in stack.up_output
    assert f"passwords: {run_dir / 'users.json'}" in stack.up_output
    assert f"redis-cli --tls --cacert {tls / 'ca.crt'} --cert {tls / 'client.crt'}" in (
        stack.up_output
    )
    assert f"--user sessionlib --askpass -p {stack.ports[0]}" in stack.up_output


def test_status_and_master_work_on_the_secure_stack(stack: SecureStack) -> None:
    run_dir = ["--run-dir", str(stack.topology.run_dir)]
    status = run_topology_cli("status", *run_dir)
    master = run_topology_cli("master", *run_dir)

    assert status.returncode == 0, status.stderr
    roles = [line.split()[4] for line in status.stdout.splitlines()[1:7]]
    assert roles == ["master", "replica", "replica", "sentinel", "sentinel", "sentinel"]
    assert status.stdout.count("2 replicas, 2 other sentinels") == 3
    assert master.stdout.strip() == f"127.0.0.1:{stack.ports[0]}"


@pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-redis-exporter")),
    reason="Prometheus and prometheus-redis-exporter are not installed",
)
def test_prometheus_scrapes_every_node_and_sentinel_through_the_exporter_user(
    stack: SecureStack,
) -> None:
    prometheus = f"http://127.0.0.1:{stack.ports[8]}"
    wanted = {f"127.0.0.1:{port}" for port in stack.ports[:6]}
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while True:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5.0).json()["data"]
        health = {
            t["labels"]["instance"]: (t["health"], t["lastError"])
            for t in targets["activeTargets"]
            if t["labels"]["job"] in ("redis", "sentinel")
        }
        if set(health) == wanted and all(h == "up" for h, _ in health.values()):
            break
        assert time.monotonic() < deadline, f"not every node scraped: {health}"
        time.sleep(0.5)
    up = httpx.get(f"{prometheus}/api/v1/query", params={"query": "redis_up"}, timeout=5.0)

    assert {r["value"][1] for r in up.json()["data"]["result"]} == {"1"}
    assert len(up.json()["data"]["result"]) == 6
    for node in [*stack.topology.redis_nodes, *stack.topology.sentinel_nodes]:
        with stack.topology.client(node) as admin:
            assert admin.execute_command("ACL", "LOG") == [], node.name
