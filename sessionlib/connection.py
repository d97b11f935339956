"""Builds the async redis-py client for the configured topology.

redis-py's own retries are switched off here: sessionlib keeps exactly one retry layer,
above this one, so failures are counted and bounded in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff

from sessionlib.cluster import RedisClient, SessionCluster, create_cluster, forget_loop
from sessionlib.config import RedisSettings
from sessionlib.discovery import ConcurrentSentinel
from sessionlib.errors import ConfigurationError
from sessionlib.failover import (
    Address,
    MasterVerifyingConnection,
    MasterVerifyingSSLConnection,
    SentinelWatcher,
    format_address,
)
from sessionlib.observer import StoreObserver
from sessionlib.replicas import ClusterReplicaReader, ReplicaReader, ReplicaReads
from sessionlib.serialization import as_text
from sessionlib.transport import DiagnosingConnection, DiagnosingTLSConnection


def _no_retries() -> Retry:
    return Retry(NoBackoff(), 0)


def _tls_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """redis-py's TLS keywords for a `Redis(...)` client (sentinels, replicas, watcher)."""
    if not settings.uses_tls:
        return {}
    return {"ssl": True, **_ssl_connection_kwargs(settings)}


def _ssl_connection_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """The keywords an `SSLConnection` takes: a connection class has no `ssl` switch."""
    tls = settings.tls
    return {
        "ssl_ca_certs": str(tls.ca_file) if tls.ca_file else None,
        "ssl_certfile": str(tls.cert_file) if tls.cert_file else None,
        "ssl_keyfile": str(tls.key_file) if tls.key_file else None,
        "ssl_check_hostname": tls.verify_hostname,
        "ssl_cert_reqs": "required",
    }


def _connection_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """Keywords for the data connections, as a connection class (not a client) takes them."""
    kwargs: dict[str, Any] = {
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else None,
        "socket_timeout": settings.socket_timeout_seconds,
        "socket_connect_timeout": settings.connect_timeout_seconds,
        "retry": _no_retries(),
        "decode_responses": False,
    }
    if settings.uses_tls:
        kwargs.update(_ssl_connection_kwargs(settings))
    return kwargs


def create_sentinel(settings: RedisSettings) -> ConcurrentSentinel:
    """A Sentinel handle whose own connections use the sentinel credentials, and which
    asks every sentinel at once, within the connect timeout."""
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_seconds,
        "socket_connect_timeout": settings.connect_timeout_seconds,
        "retry": _no_retries(),
        **_tls_kwargs(settings),
    }
    if settings.sentinel_password is not None:
        sentinel_kwargs["password"] = settings.sentinel_password.get_secret_value()
        sentinel_kwargs["username"] = settings.sentinel_username
    sentinel = ConcurrentSentinel(
        settings.sentinel_addresses(),
        discovery_timeout_seconds=settings.connect_timeout_seconds,
        sentinel_kwargs=sentinel_kwargs,
        **_connection_kwargs(settings),
    )
    # A client takes no connection class; its pool does.
    checked = DiagnosingTLSConnection if settings.uses_tls else DiagnosingConnection
    for client in sentinel.sentinels:
        client.connection_pool.connection_class = checked
    return sentinel


def create_redis(
    settings: RedisSettings, *, on_topology_refresh: Callable[[], None] | None = None
) -> RedisClient:
    """The client the session store talks through, for any supported topology;
    `on_topology_refresh` is called for each slot map a cluster client loads."""
    if settings.mode == "standalone":
        kwargs = {k: v for k, v in _connection_kwargs(settings).items() if v is not None}
        # The class decides TLS, also for a redis:// URL.
        kwargs["connection_class"] = (
            DiagnosingTLSConnection if settings.uses_tls else DiagnosingConnection
        )
        pool = ConnectionPool.from_url(
            settings.url, max_connections=settings.max_connections, **kwargs
        )
        return Redis.from_pool(pool)  # closing the client closes its pool
    if settings.mode == "sentinel":
        sentinel = create_sentinel(settings)
        master: Redis = sentinel.master_for(
            settings.master_name,
            db=settings.db,
            max_connections=settings.max_connections,
            connection_class=(
                MasterVerifyingSSLConnection if settings.uses_tls else MasterVerifyingConnection
            ),
        )
        return master
    return create_cluster(
        settings,
        connection_class=DiagnosingTLSConnection if settings.uses_tls else DiagnosingConnection,
        tls_kwargs=_tls_kwargs(settings),
        on_refresh=on_topology_refresh or (lambda: None),
    )


def node_client(settings: RedisSettings, address: Address, *, sentinel: bool = False) -> Redis:
    """A client for one node as the store reaches it (same credentials, TLS and timeouts,
    no retries), or for one sentinel with the sentinel credentials: for checks that must
    name the node that fails, such as `sessionlib doctor`."""
    kwargs = _connection_kwargs(settings)
    if sentinel:
        password = settings.sentinel_password
        kwargs["username"] = settings.sentinel_username if password is not None else None
        kwargs["password"] = password.get_secret_value() if password is not None else None
    else:
        kwargs["db"] = settings.db
    checked = DiagnosingTLSConnection if settings.uses_tls else DiagnosingConnection
    pool = ConnectionPool(
        connection_class=checked, host=address[0], port=address[1], max_connections=4, **kwargs
    )
    return Redis.from_pool(pool)  # closing the client closes its pool


def read_replicas(redis: RedisClient, settings: RedisSettings) -> ReplicaReads | None:
    """Replica access for stale reads during a failover (Sentinel and Cluster mode)."""
    if isinstance(redis, SessionCluster):
        return ClusterReplicaReader(redis, timeout_seconds=settings.socket_timeout_seconds)
    if settings.mode != "sentinel" or isinstance(redis, RedisCluster):
        return None
    pool = redis.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    return ReplicaReader(
        pool.sentinel_manager,
        settings.master_name,
        {**_connection_kwargs(settings), **_tls_kwargs(settings), "db": settings.db},
        timeout_seconds=settings.socket_timeout_seconds,
    )


def watch_master(
    redis: RedisClient,
    settings: RedisSettings,
    observer: StoreObserver,
    on_failover: Callable[[], None] | None = None,
) -> SentinelWatcher | None:
    """A watcher that switches `redis`'s pool on `+switch-master` (Sentinel mode only);
    `on_failover` runs at each master change after the first (the near cache's flush)."""
    if settings.mode != "sentinel" or not settings.watch_sentinels:
        return None
    if isinstance(redis, RedisCluster):
        raise ConfigurationError("watch_master needs a Sentinel client made by create_redis()")
    known: list[Address] = []

    def report(address: Address) -> None:
        observer.master_changed(format_address(address), failover=bool(known))
        if known and on_failover is not None:
            on_failover()
        known.append(address)

    pool = redis.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        raise ConfigurationError("watch_master needs a client made by create_redis()")
    return SentinelWatcher(pool.sentinel_manager, settings.master_name, pool, on_master=report)


def endpoint_of(redis: RedisClient) -> tuple[str, str | None]:
    """`host:port` of the node `redis` talks to (the master, in Sentinel mode; the
    startup nodes, in Cluster mode), and the user it logs in as: what a refusal message
    must name."""
    if isinstance(redis, RedisCluster):
        nodes = ", ".join(redis.nodes_manager.startup_nodes)
        return f"cluster {nodes}", redis.connection_kwargs.get("username")
    pool = redis.connection_pool
    kwargs = pool.connection_kwargs
    address = getattr(pool, "master_address", None) or (kwargs.get("host"), kwargs.get("port"))
    return f"{address[0]}:{address[1]}", kwargs.get("username")


class EventLoopBinding:
    """Keeps a client usable when the running event loop changes.

    Connections belong to the loop that opened them. A second `TestClient`, or a server
    that restarts its loop in the same process, would otherwise get "attached to a
    different loop" errors: on a new loop every pool is emptied (and its lock renewed),
    and `on_new_loop` callbacks let loop-bound helpers (watcher tasks, replica clients)
    start afresh.
    """

    def __init__(self, redis: RedisClient, on_new_loop: list[Callable[[], None]]) -> None:
        self._redis = redis
        self._on_new_loop = on_new_loop
        self._loop: asyncio.AbstractEventLoop | None = None

    def follow_running_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        moved = self._loop is not None
        self._loop = loop
        if not moved:
            return
        if isinstance(self._redis, RedisCluster):
            forget_loop(self._redis)
        for pool in _pools_of(self._redis):
            pool.reset()  # type: ignore[no-untyped-call]
            if hasattr(pool, "_lock"):
                pool._lock = asyncio.Lock()
        for callback in self._on_new_loop:
            callback()


def _pools_of(redis: RedisClient) -> Iterator[ConnectionPool]:
    if isinstance(redis, RedisCluster):
        return
    pool = redis.connection_pool
    yield pool
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            yield sentinel.connection_pool


@dataclass(frozen=True)
class WriteNodeRole:
    """What `ROLE` says on a node the store writes to."""

    role: str
    replicas: int  # replicas connected to it (0 unless it is a master)


async def write_node_roles(redis: RedisClient) -> list[WriteNodeRole]:
    """`ROLE` of the node(s) the store writes to: the one master, or in Cluster mode every
    master of the slot map."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # the slot map names the masters; load it if stale
        primaries = redis.get_primaries()
        replies = [await redis.execute_command("ROLE", target_nodes=n) for n in primaries]
    else:
        replies = [await redis.execute_command("ROLE")]  # type: ignore[no-untyped-call]
    roles = [as_text(reply[0]) for reply in replies]
    return [
        WriteNodeRole(role, len(reply[2]) if role == "master" else 0)
        for role, reply in zip(roles, replies, strict=True)
    ]
