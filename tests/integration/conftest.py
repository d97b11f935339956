"""Store fixtures on a real standalone redis-server, with a client that counts its
round trips (one `send_packed_command` per trip, pipelines included), and on a real local
Redis Cluster."""

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Connection, ConnectionPool, Redis

from deploy.local.cluster import ClusterSpec, LocalCluster
from sessionlib.config import RedisSettings, RetrySettings, SessionSettings, Settings
from sessionlib.metrics import StoreMetrics
from sessionlib.store import SessionStore
from tests.support.faults import ReplyLosingConnection

FreePorts = Callable[[int], list[int]]


class CountingConnection(Connection):
    """A real connection that also counts the requests it sends."""

    sent = 0

    async def send_packed_command(self, command, check_health=True):  # type: ignore[override]
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


class RoundTrips:
    """Round trips since the last `reset()`."""

    def reset(self) -> None:
        CountingConnection.sent = 0

    @property
    def count(self) -> int:
        return CountingConnection.sent


@pytest.fixture
def round_trips() -> RoundTrips:
    counter = RoundTrips()
    counter.reset()
    return counter


@pytest.fixture
async def make_store(redis_server) -> AsyncIterator[Callable[..., SessionStore]]:
    """Build stores on the test's redis-server; settings as keyword arguments."""
    made: list[SessionStore] = []

    def build(**settings) -> SessionStore:
        pool = ConnectionPool.from_url(redis_server.url, connection_class=CountingConnection)
        store = SessionStore(Redis(connection_pool=pool), SessionSettings(**settings))
        made.append(store)
        return store

    yield build
    for store in made:
        await store.redis.flushdb()
        await store.close()


@pytest.fixture
async def lossy_store(redis_server):
    """A store whose connection can lose one reply (see ReplyLosingConnection)."""
    pool = ConnectionPool.from_url(redis_server.url, connection_class=ReplyLosingConnection)
    store = SessionStore(Redis(connection_pool=pool), SessionSettings())
    yield store
    await store.close()


@pytest.fixture
async def store(make_store) -> SessionStore:
    store = make_store()
    await store.load_scripts()  # the steady state, which round-trip counts speak of
    return store


@pytest.fixture
def cluster(tmp_path: Path, free_ports: FreePorts) -> Iterator[LocalCluster]:
    """Six nodes (and six bus ports) of the test's own, clear of `make up-local`'s."""
    ports = free_ports(12)
    spec = ClusterSpec(ports=tuple(ports[:6]), bus_ports=tuple(ports[6:]))
    with LocalCluster(tmp_path / "cluster", spec) as running:
        yield running


@pytest.fixture
async def make_cluster_store(
    cluster: LocalCluster,
) -> AsyncIterator[Callable[..., SessionStore]]:
    """Stores built as users build them: `SessionStore.from_settings` in Cluster mode."""
    made: list[SessionStore] = []

    def build(
        registry: CollectorRegistry | None = None,
        deadline_seconds: float = 5.0,
        nodes: list[str] | None = None,
        session: SessionSettings | None = None,
        **redis: Any,
    ) -> SessionStore:
        settings = Settings(
            redis=RedisSettings(
                mode="cluster",
                cluster_nodes=nodes or cluster.startup_nodes,
                retry=RetrySettings(deadline_seconds=deadline_seconds),
                **redis,
            ),
            session=session or SessionSettings(),
        )
        observer = StoreMetrics(registry or CollectorRegistry())
        made.append(SessionStore.from_settings(settings, observer=observer))
        return made[-1]

    yield build
    for store in made:
        await store.close()
