"""The end-to-end harness: real uvicorn processes of gateway and cart on free ports, and a
redis-server for them, configured only through the environment, as an operator would.

A module of its own (not conftest) so tests import one copy of these helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

# `find_free_ports` is re-exported for the e2e tests: one port picker for the whole suite.
from deploy.local.processes import find_free_ports
from deploy.local.standalone import StandaloneRedis

REPO = Path(__file__).resolve().parents[2]
SIGNING_KEY = "e2e-signing-key"
STARTUP_TIMEOUT = 30.0
# Small enough that the oversize test reaches it in a few dozen adds, large enough for
# the concurrency test's lines.
MAX_SESSION_BYTES = 8192
MODULES = {"gateway": "services.gateway.app:app", "cart": "services.cart.app:app"}


@dataclass
class ServiceProcess:
    """One uvicorn process serving a service on 127.0.0.1."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def service_env(redis_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a service process: this one's, minus any sessionlib or gateway
    settings of the developer's, plus the test system's (`extra` wins)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONLIB_", "GATEWAY_"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "SESSIONLIB_PROFILE": "dev",
            "SESSIONLIB_REDIS__MODE": "standalone",
            "SESSIONLIB_REDIS__URL": redis_url,
            "SESSIONLIB_SESSION__SIGNING_KEYS": f'["{SIGNING_KEY}"]',
            "SESSIONLIB_SESSION__MAX_SESSION_BYTES": str(MAX_SESSION_BYTES),
            # A dead Redis should answer 503 quickly in tests, not after 5 s of retries.
            "SESSIONLIB_REDIS__RETRY__DEADLINE_SECONDS": "0.5",
        }
    )
    env.update(extra or {})
    return env


def start_services(
    specs: list[tuple[str, int, dict[str, str]]], log_dir: Path
) -> list[ServiceProcess]:
    """Start every (service, port, env) at once, then wait until each answers /healthz."""
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[ServiceProcess] = []
    try:
        for name, port, env in specs:
            log = log_dir / f"{name}-{port}.log"
            argv = [
                sys.executable,
                "-m",
                "uvicorn",
                MODULES[name],
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--timeout-graceful-shutdown",
                "2",
            ]
            with log.open("wb") as out:
                process = subprocess.Popen(
                    argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            started.append(ServiceProcess(name, port, process, log))
        for service in started:
            _wait_until_alive(service)
    except BaseException:
        for service in started:
            service.stop()
        raise
    return started


def _wait_until_alive(service: ServiceProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited at start-up:\n{service.log_text()[-3000:]}")
        try:
            if httpx.get(f"{service.url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    tail = service.log_text()[-3000:]
    raise RuntimeError(f"{service.name} not up in {STARTUP_TIMEOUT}s:\n{tail}")


@dataclass
class System:
    """Redis, cart and a gateway that forwards to that cart."""

    redis: StandaloneRedis
    gateway: ServiceProcess
    cart: ServiceProcess

    def stop(self) -> None:
        for service in (self.gateway, self.cart):
            service.stop()
        self.redis.stop()


def start_services_pair(env: dict[str, str], run_dir: Path) -> tuple[ServiceProcess, ...]:
    """(cart, gateway) with the same settings, the gateway forwarding to this cart."""
    cart_port, gateway_port = find_free_ports(2)
    gateway_env = {**env, "GATEWAY_CART_URL": f"http://127.0.0.1:{cart_port}"}
    return tuple(
        start_services(
            [("cart", cart_port, env), ("gateway", gateway_port, gateway_env)], run_dir / "logs"
        )
    )


def start_system(run_dir: Path) -> System:
    """A system with a standalone redis-server of its own, free to be broken."""
    redis = StandaloneRedis(run_dir / "redis", find_free_ports(1)[0])
    redis.start()
    try:
        cart, gateway = start_services_pair(service_env(redis.url), run_dir)
    except BaseException:
        redis.stop()
        raise
    return System(redis, gateway, cart)


def login(gateway_url: str, username: str = "ann", session_id: str | None = None) -> str:
    """Log in at the gateway; returns the session id it hands out in `X-Session-Id`."""
    headers = {"X-Session-Id": session_id} if session_id else {}
    answer = httpx.post(
        f"{gateway_url}/login",
        json={"username": username, "password": "demo"},
        headers=headers,
        timeout=5.0,
    )
    assert answer.status_code == 200, answer.text
    return answer.headers["X-Session-Id"]
