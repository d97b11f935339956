"""The live system the observability tests read: `up` of the local stack on free ports with
Prometheus scraping every second, some logins and carts, and one failover under load."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.local.observability import REDIS_EXPORTER_PROGRAMS
from deploy.local.processes import find_free_ports
from deploy.local.topology import LocalTopology
from tests.observability.prometheus_api import PrometheusAPI
from tests.support.topology_cli import run_topology_cli, stack_port_flags

SCRAPE_INTERVAL = 1.0
# Targets: Prometheus, gateway, cart, redis_exporter, 3 Redis nodes, 3 sentinels.
TARGETS = 10
USERS = 8
# Traffic before and after the failover: enough for rates over several scrapes.
STEADY_SECONDS = 8.0
SETTLE_TIMEOUT = 20.0


@dataclass(frozen=True)
class LiveSystem:
    """What the scenario left behind: a Prometheus that watched it from `started` to `ended`."""

    prometheus: PrometheusAPI
    up_output: str
    started: float
    ended: float

    @property
    def window(self) -> float:
        return self.ended - self.started


def observability_installed() -> bool:
    exporter = any(shutil.which(program) for program in REDIS_EXPORTER_PROGRAMS)
    return exporter and shutil.which("prometheus") is not None


def wait_for(what: str, check: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> None:
    """Poll `check` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not seen within {timeout:g}s: {what}")
        time.sleep(0.25)


def login(
    gateway: httpx.Client, user: str, session: dict[str, str] | None = None
) -> dict[str, str]:
    """Log in (on `session`'s id, if given); returns the header carrying the new session id."""
    answer = gateway.post("/login", json={"username": user, "password": "demo"}, headers=session)
    return {"X-Session-Id": answer.headers["X-Session-Id"]}


def shop(gateway: httpx.Client, user: str) -> None:
    """What one user does: log in, look at the session, fill a cart, read it, log in again
    on the same session (a regenerated id), log out."""
    session = login(gateway, user)
    gateway.get("/me", headers=session)
    for sku in ("apple", "pear"):
        gateway.post("/cart/items", json={"sku": sku, "qty": 2}, headers=session)
    gateway.get("/cart", headers=session)
    gateway.post("/logout", headers=login(gateway, user, session))


class BackgroundLoad:
    """Requests one after another from a thread, answered or not, until stopped."""

    def __init__(self, gateway_url: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gateway_url,), daemon=True)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self, gateway_url: str) -> None:
        with httpx.Client(base_url=gateway_url, timeout=10.0) as gateway:
            number = 0
            while not self._stop.is_set():
                number += 1
                try:
                    shop(gateway, f"load{number % USERS}")
                except (httpx.HTTPError, KeyError):
                    time.sleep(0.05)  # a 503 without a session id, or no answer at all


def drive_scenario(run_dir: Path, gateway_url: str, prometheus: PrometheusAPI) -> None:
    """Shoppers throughout; after a while the master is killed and they carry on with the new
    one. Returns once Prometheus has scraped the failover from the services and sentinels."""
    topology = LocalTopology(run_dir)
    with BackgroundLoad(gateway_url):
        time.sleep(STEADY_SECONDS)
        old_master = topology.master_address()
        topology.kill("master")
        topology.wait_for_failover(old_master)
        time.sleep(STEADY_SECONDS)

    def seen(expr: str) -> bool:
        return bool(prometheus.query(expr, time.time()))

    wait_for("the services' failover", lambda: seen("sum(sessionlib_failovers_total) >= 2"))
    wait_for(
        "the sentinels' failover",
        lambda: seen("max(master_name:redis_sentinel_master_addresses:count5m) > 1"),
    )
    wait_for("the retries of the failover", lambda: seen("sum(sessionlib_store_retries_total) > 0"))


@pytest.fixture(scope="module")
def live_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    """The local stack, started by the same command as `make up-local`, after the scenario."""
    if not observability_installed():
        pytest.skip("prometheus and redis_exporter are not installed (make setup installs them)")
    run_dir = tmp_path_factory.mktemp("observability") / "run"
    ports = find_free_ports(10)
    up = run_topology_cli(
        "up", *stack_port_flags(ports), "--run-dir", str(run_dir), "--scrape-interval", "1s"
    )
    try:
        assert up.returncode == 0, f"`up` failed; the end of its output:\n{up.stderr[-3000:]}"
        prometheus = PrometheusAPI(f"http://127.0.0.1:{ports[8]}")
        wait_for(
            "every target scraped",
            lambda: len(prometheus.query("up == 1", time.time())) == TARGETS,
        )
        started = time.time()
        drive_scenario(run_dir, f"http://127.0.0.1:{ports[6]}", prometheus)
        yield LiveSystem(prometheus, up.stdout, started, time.time())
    finally:
        run_topology_cli("down", "--run-dir", str(run_dir))
