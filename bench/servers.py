"""The processes a benchmark run stands up: a fresh redis-server, and one uvicorn process
(one worker) per app variant; each context manager stops what it started, also on failure.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from deploy.local.probes import wait_until
from deploy.local.processes import ManagedProcess, find_free_ports, spawn, stop_processes
from deploy.local.standalone import StandaloneRedis

REPO = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 30.0


@contextmanager
def fresh_redis(run_dir: Path) -> Iterator[StandaloneRedis]:
    """An empty redis-server with the shipped configuration, on a free port."""
    server = StandaloneRedis(run_dir / "redis", find_free_ports(1)[0])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class AppServer:
    variant: str
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{self.process.address}"

    @property
    def pid(self) -> int:
        if self.process.pid is None:
            raise RuntimeError(f"the {self.variant} app was never started")
        return self.process.pid


def _health_problems(url: str) -> list[str]:
    try:
        status = httpx.get(f"{url}/healthz", timeout=1.0).status_code
    except httpx.TransportError as exc:
        return [f"{url}/healthz: {exc!r}"]
    return [] if status == 200 else [f"{url}/healthz answered {status}"]


@contextmanager
def app_servers(
    variants: Sequence[str], redis_url: str, run_dir: Path
) -> Iterator[dict[str, AppServer]]:
    """`bench.app` served by uvicorn for each variant at once, ready when yielded."""
    started: list[AppServer] = []
    try:
        for variant, port in zip(variants, find_free_ports(len(variants)), strict=True):
            process = ManagedProcess(
                name=f"app-{variant}",
                kind="app",
                argv=[sys.executable, "-m", "bench.app", variant, str(port), redis_url],
                port=port,
                log=str(run_dir / f"app-{variant}.log"),
                cwd=str(REPO),
            )
            spawn(process)
            started.append(AppServer(variant, process))
        for server in started:
            wait_until(
                time.monotonic() + STARTUP_SECONDS,
                f"the {server.variant} app did not answer within {STARTUP_SECONDS:g}s",
                partial(_health_problems, server.url),
                [server.process],
            )
        yield {server.variant: server for server in started}
    finally:
        stop_processes([server.process for server in started])
