"""The local stack: the Sentinel topology plus the gateway and cart services on top of it.

Services are recorded in the topology's state file like its nodes, so `down` stops them.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.local.errors import NotReady, PortInUse
from deploy.local.processes import ManagedProcess, liveness, log_tail, port_in_use
from deploy.local.serve import write_env_file
from deploy.local.topology import LocalTopology
from sessionlib.config import env_variable

REPO = Path(__file__).resolve().parents[2]
# The cart first: the gateway forwards to it.
SERVICE_ORDER = ("cart", "gateway")


@dataclass(frozen=True)
class ServicePorts:
    """Where the services listen (DESIGN §3)."""

    gateway: int = 8080
    cart: int = 8081

    def of(self, service: str) -> int:
        return int(getattr(self, service))


def settings_environment(path: str, settings: dict[str, Any]) -> dict[str, str]:
    """Nested sessionlib settings under `path` as the SESSIONLIB_* variables that set them
    (lists as JSON, booleans as true/false)."""
    env: dict[str, str] = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            env.update(settings_environment(f"{path}.{name}", value))
        elif isinstance(value, list):
            env[env_variable(f"{path}.{name}")] = json.dumps(value)
        elif isinstance(value, bool):
            env[env_variable(f"{path}.{name}")] = "true" if value else "false"
        else:
            env[env_variable(f"{path}.{name}")] = str(value)
    return env


def service_environment(topology: LocalTopology, ports: ServicePorts) -> dict[str, str]:
    """What both services are configured with: the dev profile on this topology (in secure
    mode as the `sessionlib` user over mutual TLS), with durability on (WAIT for one
    replica, refuse the write otherwise)."""
    return {
        "PYTHONUNBUFFERED": "1",
        "SESSIONLIB_PROFILE": "dev",
        **settings_environment("redis", topology.redis_settings()),
        "SESSIONLIB_SESSION__DURABILITY__REPLICAS": "1",
        "SESSIONLIB_SESSION__DURABILITY__ON_SHORTFALL": "fail",
        "GATEWAY_CART_URL": f"http://127.0.0.1:{ports.cart}",
    }


def service_url(ports: ServicePorts, service: str) -> str:
    return f"http://127.0.0.1:{ports.of(service)}"


def start_services(
    topology: LocalTopology, ports: ServicePorts, timeout: float = 30.0
) -> list[ManagedProcess]:
    """Start cart and gateway under uvicorn and wait until both answer `/readyz`."""
    for service in SERVICE_ORDER:
        if port_in_use("127.0.0.1", ports.of(service)):
            raise PortInUse(
                f"port {ports.of(service)} ({service}) is already in use; stop what holds it "
                "or choose other ports (--gateway-port/--cart-port)"
            )
    env_file = topology.run_dir / "services.env"
    write_env_file(env_file, service_environment(topology, ports))
    started = []
    for service in SERVICE_ORDER:
        process = ManagedProcess(
            name=service,
            kind="service",
            argv=[
                sys.executable,
                "-m",
                "deploy.local.serve",
                service,
                "--port",
                str(ports.of(service)),
                "--env-file",
                str(env_file),
            ],
            port=ports.of(service),
            log=str(topology.run_dir / "logs" / f"{service}.log"),
            cwd=str(REPO),
        )
        topology.start_process(process)
        started.append(process)
    deadline = time.monotonic() + timeout
    for process in started:
        wait_until_answering(process, "/readyz", deadline)
    return started


def wait_until_answering(process: ManagedProcess, path: str, deadline: float) -> None:
    """Poll `path` on the process until it answers 200; NotReady at `deadline` or when the
    process exits (with the end of its log)."""
    url = f"http://{process.address}{path}"
    last = "no answer yet"
    while time.monotonic() < deadline:
        if liveness(process) == "dead":
            raise NotReady(f"{process.name} exited; the end of {process.log}:\n{log_tail(process)}")
        try:
            answer = httpx.get(url, timeout=2.0)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.2)
    raise NotReady(f"{process.name} not answering 200 at {url}: {last}; log: {process.log}")


def running_services(topology: LocalTopology) -> list[ManagedProcess]:
    return [p for p in topology.processes if p.kind == "service"]
