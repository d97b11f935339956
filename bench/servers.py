"""The processes a benchmark run stands up: a fresh redis-server, a Sentinel topology, a
Redis Cluster, and one uvicorn process (one worker) per app variant; each context manager
stops what it started, also on failure.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from deploy.local.cluster import ClusterSpec, LocalCluster
from deploy.local.probes import wait_until
from deploy.local.processes import ManagedProcess, find_free_ports, spawn, stop_processes
from deploy.local.spec import TopologySpec
from deploy.local.standalone import StandaloneRedis
from deploy.local.topology import LocalTopology
from sessionlib.config import NearCacheSettings, RedisSettings, SessionSettings, Settings

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


@contextmanager
def sentinel_topology(run_dir: Path) -> Iterator[LocalTopology]:
    """The local Sentinel topology (a master, two replicas, three sentinels) on free ports."""
    ports = find_free_ports(6)
    spec = TopologySpec(redis_ports=tuple(ports[:3]), sentinel_ports=tuple(ports[3:]))
    with LocalTopology(run_dir / "topology", spec) as topology:
        yield topology


@contextmanager
def redis_cluster(run_dir: Path) -> Iterator[LocalCluster]:
    """A local Redis Cluster on free ports with the shipped settings, but two replicas per
    master: each shard then has the Sentinel topology's shape (a master, two replicas, and
    min-replicas-to-write 1), so writes go on after a failover there as here. With one
    replica the promoted master refuses writes (NOREPLICAS) until the killed one is back."""
    ports = find_free_ports(18)
    spec = ClusterSpec(ports=tuple(ports[:9]), bus_ports=tuple(ports[9:]), replicas_per_master=2)
    with LocalCluster(run_dir / "cluster", spec) as cluster:
        yield cluster


def settings_with(redis: RedisSettings, *, near_cache: bool = False) -> Settings:
    """sessionlib's settings around `redis`: every field given, so no SESSIONLIB_* variable
    of the caller's changes the benchmark. Durability off (no WAIT), as in every row; the
    near cache (session.near_cache) at its defaults when asked for, off otherwise."""
    session = SessionSettings(near_cache=NearCacheSettings(enabled=near_cache))
    return Settings(profile="dev", redis=redis, session=session)


def store_settings(topology: LocalTopology | LocalCluster, *, near_cache: bool = False) -> Settings:
    """sessionlib's settings for a Sentinel topology or a cluster."""
    if isinstance(topology, LocalCluster):
        redis = RedisSettings(mode="cluster", cluster_nodes=topology.startup_nodes)
        return settings_with(redis, near_cache=near_cache)
    return settings_with(
        RedisSettings(
            mode="sentinel",
            sentinels=[f"{host}:{port}" for host, port in topology.sentinel_addresses],
            master_name=topology.master_name,
        ),
        near_cache=near_cache,
    )


def redis_pids(processes: LocalTopology | LocalCluster | StandaloneRedis) -> tuple[int, ...]:
    """The redis-server processes (not sentinels) whose CPU time a request costs."""
    if isinstance(processes, StandaloneRedis):
        found = [processes.pid]
    else:
        found = [p.pid for p in processes.processes if p.kind == "redis"]
    if not found or None in found:
        raise RuntimeError("a redis-server of the benchmark has no pid")
    return tuple(pid for pid in found if pid is not None)


def master_urls(cluster: LocalCluster) -> list[str]:
    """`redis://` URLs of the masters serving the cluster's slots now."""
    masters = [cluster.master_of(first) for first, _ in cluster.spec.slot_ranges()]
    return [f"redis://{master.address}/0" for master in masters]


@dataclass(frozen=True)
class AppServer:
    variant: str
    process: ManagedProcess
    redis_pids: tuple[int, ...]  # the redis-server processes behind it (CPU per request)

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
    variants: Sequence[str],
    redis: StandaloneRedis,
    run_dir: Path,
    topologies: Mapping[str, LocalTopology | LocalCluster] | None = None,
) -> Iterator[dict[str, AppServer]]:
    """`bench.app` served by uvicorn for each variant at once, ready when yielded: each on
    the standalone `redis`, or sessionlib on the topology `topologies` gives the variant."""
    topologies = topologies or {}
    started: list[AppServer] = []
    try:
        for variant, port in zip(variants, find_free_ports(len(variants)), strict=True):
            behind = topologies.get(variant)
            target = redis.url if behind is None else store_settings(behind).redis.model_dump_json()
            process = ManagedProcess(
                name=f"app-{variant}",
                kind="app",
                argv=[sys.executable, "-m", "bench.app", variant, str(port), target],
                port=port,
                log=str(run_dir / f"app-{variant}.log"),
                cwd=str(REPO),
            )
            spawn(process)
            started.append(AppServer(variant, process, redis_pids(behind or redis)))
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
