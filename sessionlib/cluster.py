"""Builds redis-py's async `RedisCluster` for `redis.mode: cluster`, with its own retries
off (MOVED and ASK stay with it) and each reload of its slot map reported.

sessionlib's one retry layer (resilience.py) retries everything else, so attempts stay
bounded and counted in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError

from sessionlib.config import RedisSettings

# The client the store talks through, whatever the topology.
RedisClient = Union[Redis, RedisCluster]  # noqa: UP007 (a runtime alias, used in isinstance)

# redis-py 6 moved the cluster's retry count from `cluster_error_retry_attempts` (and
# `connection_error_retry_attempts`, now gone) to its `retry` object; 5.2 still reads the
# counts and gives `retry` to every connection.
_RETRY_IN_OBJECT = int(redis.__version__.split(".")[0]) >= 6


def _no_retry_kwargs() -> dict[str, Any]:
    if _RETRY_IN_OBJECT:
        return {"retry": Retry(NoBackoff(), 0)}
    return {"cluster_error_retry_attempts": 0, "connection_error_retry_attempts": 0}


class SessionCluster(RedisCluster):
    """A `RedisCluster` that calls `on_refresh` once for every slot map it loads.

    redis-py reloads the map (`NodesManager.initialize`, which builds a new slots cache)
    from `RedisCluster.initialize` after a connection error, CLUSTERDOWN or repeated
    MOVED. `NodesManager` has `__slots__`, so the hook sits here, one level up: a reload
    is a slots cache this client has not seen, so concurrent callers count it once.
    """

    def __init__(self, *args: Any, on_refresh: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_refresh = on_refresh
        self._counted_map: object = None

    async def initialize(self) -> RedisCluster:
        try:
            return await super().initialize()
        except RedisClusterException as exc:
            failure = exc
        finally:
            slots = self.nodes_manager.slots_cache
            if slots and slots is not self._counted_map:
                self._counted_map = slots
                self._on_refresh()
        # redis-py wraps "no startup node answered" around the node's own error, and says
        # "not all slots are covered" mid-failover, in an exception outside RedisError:
        # hand the retry layer what it classifies (outage, refusal) instead. Raised
        # outside the `except`, so the cause keeps its own chain (a TLS refusal's).
        cause = failure.__cause__
        if isinstance(cause, RedisError):
            raise cause
        raise ClusterDownError(str(failure)) from failure


def create_cluster(
    settings: RedisSettings,
    *,
    connection_class: type[Connection],
    tls_kwargs: dict[str, Any],
    on_refresh: Callable[[], None],
) -> SessionCluster:
    """The cluster client for `settings.cluster_nodes`, with the same credentials,
    timeouts and TLS as the other modes; `connection_class` is used for every node."""
    addresses = (address.rpartition(":") for address in settings.cluster_nodes)
    startup = [ClusterNode(host, int(port)) for host, _, port in addresses]
    password = settings.password.get_secret_value() if settings.password else None
    client = SessionCluster(
        startup_nodes=startup,
        on_refresh=on_refresh,
        username=settings.username,
        password=password,
        socket_timeout=settings.socket_timeout_seconds,
        socket_connect_timeout=settings.connect_timeout_seconds,
        max_connections=settings.max_connections,
        decode_responses=False,
        **_no_retry_kwargs(),
        **tls_kwargs,
    )
    # RedisCluster picks Connection or SSLConnection itself; nodes found later are built
    # from these same keywords, the startup nodes already exist.
    client.connection_kwargs["connection_class"] = connection_class
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = connection_class
    return client


def forget_loop(client: RedisCluster) -> None:
    """Drop every node's connections: they belong to an event loop that is gone."""
    for node in client.get_nodes():
        node._free.clear()
        node._connections.clear()
