"""The live systems the observability tests read: `up` of the local stack on free ports with
Prometheus scraping every second, some logins and carts, and a failover under load; once in
Sentinel mode, once in Cluster mode (with a short live migration of slots holding sessions)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.local.cluster import LocalCluster, slot_of
from deploy.local.observability import REDIS_EXPORTER_PROGRAMS
from deploy.local.processes import find_free_ports
from deploy.local.topology import LocalTopology
from tests.observability.prometheus_api import PrometheusAPI
from tests.support.topology_cli import (
    cluster_stack_port_flags,
    run_topology_cli,
    stack_port_flags,
)

SCRAPE_INTERVAL = 1.0
# Targets: Prometheus, gateway, cart, redis_exporter, 3 Redis nodes, 3 sentinels.
TARGETS = 10
# Targets in Cluster mode: Prometheus, gateway, cart, redis_exporter, 6 cluster nodes.
CLUSTER_TARGETS = 10
USERS = 8
# Traffic before and after the failover: enough for rates over several scrapes.
STEADY_SECONDS = 8.0
SETTLE_TIMEOUT = 20.0
# Cluster mode: sessions that stay logged in and are read all along, so the slots moved under
# them answer ASK while half-migrated and MOVED after; how long the slots stay half-migrated.
RESIDENTS = 8
ASK_SECONDS = 3.0
# A loaded 2-core machine takes longer than cluster-node-timeout's ~3 s to fail over.
CLUSTER_REPAIR_TIMEOUT = 60.0


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


def shopper(gateway: httpx.Client, number: int) -> None:
    shop(gateway, f"load{number % USERS}")


class BackgroundLoad:
    """Requests one after another from a thread, answered or not, until stopped: `visit`
    (the gateway, a running number) again and again, by default a shopper's visit."""

    def __init__(
        self, gateway_url: str, visit: Callable[[httpx.Client, int], None] = shopper
    ) -> None:
        self._stop = threading.Event()
        self._visit = visit
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
                    self._visit(gateway, number)
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


def drive_cluster_scenario(run_dir: Path, gateway_url: str, prometheus: PrometheusAPI) -> None:
    """Shoppers throughout, and residents whose sessions are read all along. The master owning
    a resident's session is SIGKILLed, its replica takes over, it comes back as a replica;
    then the slots of the residents' sessions on the new master move to another master
    (IMPORTING/MIGRATING, MIGRATE, a few seconds of ASK, SETSLOT NODE and then MOVED). Returns
    once Prometheus has seen the failover, the services' slot map reloads and MOVED and ASK."""
    cluster = LocalCluster(run_dir)
    with httpx.Client(base_url=gateway_url, timeout=10.0) as gateway:
        residents = [login(gateway, f"resident{i}") for i in range(RESIDENTS)]
    # The session key's hash tag is its id (DESIGN §2, default prefix).
    slots = [slot_of(f"sessionlib:s:{{{r['X-Session-Id']}}}") for r in residents]

    def read_resident(gateway: httpx.Client, number: int) -> None:
        gateway.get("/me", headers=residents[number % RESIDENTS])

    with BackgroundLoad(gateway_url), BackgroundLoad(gateway_url, read_resident):
        time.sleep(STEADY_SECONDS)
        old = cluster.master_of(slots[0])
        cluster.kill(old)
        source = cluster.wait_for_failover(old, timeout=CLUSTER_REPAIR_TIMEOUT)
        cluster.restart(old)
        cluster.wait_for_replica(old, timeout=CLUSTER_REPAIR_TIMEOUT)
        # A shard's first slot stays: LocalCluster's waits find the shard's master by it.
        kept = {first for first, _ in cluster.spec.slot_ranges()}
        moving = sorted({s for s in slots if s not in kept and cluster.master_of(s) == source})
        assert moving, f"no resident session to move on {source.name}: slots {slots}"
        target = next(node for node in cluster.live_masters() if node != source)
        cluster.open_slot_migration(source, target, moving)
        time.sleep(ASK_SECONDS)
        cluster.finish_slot_migration(source, target, moving)
        time.sleep(STEADY_SECONDS)

    def seen(expr: str) -> bool:
        return bool(prometheus.query(expr, time.time()))

    wait_for("the cluster failover", lambda: seen('ALERTS{alertname="RedisClusterFailover"}'))
    wait_for(
        "the services' slot map reloads",
        lambda: seen("sum(changes(sessionlib_cluster_topology_refreshes_total[10m])) > 0"),
    )
    redirections = 'redis_errors_total{job="redis-cluster", err=~"MOVED|ASK"}'
    wait_for("MOVED and ASK replies", lambda: seen(f"count(count by (err) ({redirections})) == 2"))


@contextmanager
def watched_system(
    run_dir: Path,
    up_flags: list[str],
    *,
    prometheus_port: int,
    gateway_port: int,
    targets: int,
    scenario: Callable[[Path, str, PrometheusAPI], None],
) -> Iterator[LiveSystem]:
    """`up` with `up_flags` in `run_dir`, every target scraped, `scenario` driven; `down` after."""
    if not observability_installed():
        pytest.skip("prometheus and redis_exporter are not installed (make setup installs them)")
    up = run_topology_cli("up", *up_flags, "--run-dir", str(run_dir), "--scrape-interval", "1s")
    try:
        assert up.returncode == 0, f"`up` failed; the end of its output:\n{up.stderr[-3000:]}"
        prometheus = PrometheusAPI(f"http://127.0.0.1:{prometheus_port}")
        wait_for(
            "every target scraped",
            lambda: len(prometheus.query("up == 1", time.time())) == targets,
        )
        started = time.time()
        scenario(run_dir, f"http://127.0.0.1:{gateway_port}", prometheus)
        yield LiveSystem(prometheus, up.stdout, started, time.time())
    finally:
        run_topology_cli("down", "--run-dir", str(run_dir))


@pytest.fixture(scope="module")
def live_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    """The local stack in Sentinel mode, started by the same command as `make up-local`,
    after the scenario."""
    ports = find_free_ports(10)
    with watched_system(
        tmp_path_factory.mktemp("observability") / "run",
        stack_port_flags(ports),
        prometheus_port=ports[8],
        gateway_port=ports[6],
        targets=TARGETS,
        scenario=drive_scenario,
    ) as system:
        yield system


@pytest.fixture(scope="module")
def live_cluster_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    """The local stack in Cluster mode, started by the same command as `make up-local
    MODE=cluster`, after the Cluster scenario."""
    ports = find_free_ports(16)
    with watched_system(
        tmp_path_factory.mktemp("observability-cluster") / "run",
        cluster_stack_port_flags(ports),
        prometheus_port=ports[14],
        gateway_port=ports[12],
        targets=CLUSTER_TARGETS,
        scenario=drive_cluster_scenario,
    ) as system:
        yield system
