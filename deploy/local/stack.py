"""The local stack: the gateway and cart services on top of the Sentinel topology or the Redis
Cluster. Services are recorded in the same state file as the nodes, so `down` stops them.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from deploy.local.errors import NotReady, PortInUse
from deploy.local.processes import ManagedProcess, liveness, log_tail, port_in_use
from deploy.local.serve import write_env_file
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


class ServiceHost(Protocol):
    """What the services run on: the Sentinel topology (LocalTopology) or the Redis Cluster
    (LocalCluster), each of which records processes and says how sessionlib reaches it."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def processes(self) -> list[ManagedProcess]: ...

    def start_process(self, process: ManagedProcess) -> None: ...

    def redis_settings(self) -> dict[str, Any]: ...


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


def session_settings() -> dict[str, Any]:
    """The services' session settings on top of the dev profile, the same in both modes:
    durability on (WAIT for one replica, refuse the write otherwise)."""
    return {"durability": {"replicas": 1, "on_shortfall": "fail"}}


def service_environment(host: ServiceHost, ports: ServicePorts) -> dict[str, str]:
    """What both services are configured with: the dev profile on this topology or cluster
    (in secure mode as the `sessionlib` user over mutual TLS) and `session_settings`."""
    return {
        "PYTHONUNBUFFERED": "1",
        "SESSIONLIB_PROFILE": "dev",
        **settings_environment("redis", host.redis_settings()),
        **settings_environment("session", session_settings()),
        "GATEWAY_CART_URL": f"http://127.0.0.1:{ports.cart}",
    }


def service_url(ports: ServicePorts, service: str) -> str:
    return f"http://127.0.0.1:{ports.of(service)}"


def start_services(
    host: ServiceHost, ports: ServicePorts, timeout: float = 30.0
) -> list[ManagedProcess]:
    """Start cart and gateway under uvicorn and wait until both answer `/readyz`."""
    for service in SERVICE_ORDER:
        if port_in_use("127.0.0.1", ports.of(service)):
            raise PortInUse(
                f"port {ports.of(service)} ({service}) is already in use; stop what holds it "
                "or choose other ports (--gateway-port/--cart-port)"
            )
    env_file = host.run_dir / "services.env"
    write_env_file(env_file, service_environment(host, ports))
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
            log=str(host.run_dir / "logs" / f"{service}.log"),
            cwd=str(REPO),
        )
        host.start_process(process)
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


def running_services(host: ServiceHost) -> list[ManagedProcess]:
    return [p for p in host.processes if p.kind == "service"]
