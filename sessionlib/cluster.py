"""Builds redis-py's async `RedisCluster` for `redis.mode: cluster`, with its own retries
off (MOVED and ASK stay with it) and each reload of its slot map reported.

sessionlib's one retry layer (resilience.py) retries everything else, so attempts stay
bounded and counted in one place. What the client cannot do is added here: a command
followed by another on the same connection of the owning node (a `WAIT` counts only the
writes of its own connection), following MOVED and ASK for that pair itself, and reads
from a slot's replicas. Where the client is wrong it is worked around here too, each with
its test: connections kept out of a node's pool after a failed send (`_send_together`,
`_ReleasingNode`), the command table reloaded from a lost master (`_CommandTable`), and
error wrappers the retry layer could not classify (`SessionCluster.initialize`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

import redis
from redis import exceptions as redis_errors
from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import REPLICA
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)

from sessionlib.cluster_views import reply_fields
from sessionlib.config import RedisSettings
from sessionlib.serialization import as_text

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


# How often one command may be redirected (MOVED, ASK) before the retry layer takes over:
# a failover or a slot migration needs one or two; more means the map is changing under us.
_REDIRECTS = 5
# Failures after which the slot may have another master.
_BROKEN_LINK = (redis_errors.ConnectionError, redis_errors.TimeoutError)


async def _send_together(
    node: ClusterNode, commands: Sequence[Sequence[Any]], options: dict[str, Any] | None = None
) -> list[Any]:
    """Send `commands` to `node` at once on one connection; each reply, or its error reply
    (`options` are redis-py's parsing options of a single command).

    The connection goes back to the node's pool whatever happens: redis-py's node keeps it
    out for good when sending fails (the node is down), and after `max_connections` such
    failures the node refuses every later request, also once it is back. A failed send
    has closed the connection; it reconnects on next use.
    """
    connection = node.acquire_connection()
    try:
        await _reconnect_if_marked(connection)
        await connection.send_packed_command(connection.pack_commands(commands), False)
        replies: list[Any] = []
        for command in commands:
            try:
                replies.append(
                    await node.parse_response(connection, command[0], **dict(options or {}))
                )
            except redis_errors.ResponseError as exc:
                replies.append(exc)
        return replies
    finally:
        # A node dropped from the slot map meanwhile must not keep an open connection.
        await _reconnect_if_marked(connection)
        node._free.append(connection)


async def _reconnect_if_marked(connection: Connection) -> None:
    """Close a connection redis-py 7 marked after a topology change; it reconnects on use."""
    if getattr(connection, "should_reconnect", bool)():
        await connection.disconnect()


class _ReleasingNode(ClusterNode):
    """A `ClusterNode` whose single commands, too, give their connection back when the
    send fails (see `_send_together`): the client sends its own (COMMAND while it loads
    the slot map, for one) through here."""

    __slots__ = ()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        reply = (await _send_together(self, [args], kwargs))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


def _adopt(nodes: Iterable[ClusterNode]) -> None:
    """Make redis-py's nodes `_ReleasingNode`s: the same slots, so the same layout."""
    for node in nodes:
        if type(node) is ClusterNode:
            node.__class__ = _ReleasingNode


class _CommandTable(AsyncCommandsParser):
    """redis-py's COMMAND table, loaded once from any node that answers.

    redis-py reloads it with every slot map, from the map's first master: when that master
    is the one that died (its shard lost, still listed), every reload fails and the client
    stops for all shards. The table does not change with the topology.
    """

    def __init__(self, nodes: NodesManager) -> None:
        super().__init__()
        self._nodes = nodes

    async def initialize(self, node: ClusterNode | None = None) -> None:
        if self.commands:
            return
        # The node redis-py chose first, then every other node of the map.
        first = [node] if node is not None else []
        candidates = {c.name: c for c in [*first, *self._nodes.nodes_cache.values()]}
        failure: Exception = ClusterDownError("no cluster node to read the command table from")
        for candidate in candidates.values():
            try:
                await super().initialize(candidate)
                return
            except _BROKEN_LINK as exc:
                failure = exc
        raise failure


def _key_of(command: Sequence[Any]) -> Any:
    """The key that places a sessionlib command: scripts take theirs after the key count,
    and a script's keys share one slot."""
    if str(command[0]).upper() in ("EVALSHA", "EVAL"):
        return command[3]
    return command[1]


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
                _adopt(self.nodes_manager.nodes_cache.values())
                self._on_refresh()
        # redis-py wraps "no startup node answered" around the node's own error, and says
        # "not all slots are covered" mid-failover, in an exception outside RedisError:
        # hand the retry layer what it classifies (outage, refusal) instead. Raised
        # outside the `except`, so the cause keeps its own chain (a TLS refusal's).
        cause = failure.__cause__
        # redis-py words any error of CLUSTER SLOTS (a NOPERM too) as "Cluster mode is not
        # enabled on this node": the node's own error is that exception's context.
        if isinstance(cause, RedisClusterException) and isinstance(cause.__context__, RedisError):
            cause = cause.__context__
        if isinstance(cause, RedisError):
            raise cause
        raise ClusterDownError(str(failure)) from failure

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """As redis-py runs it, with its two cluster errors outside the retry layer's
        classes told as what they mean: a slot no node serves is a cluster down, a
        command redirected without end needs the retry layer's backoff."""
        try:
            return await super().execute_command(*args, **kwargs)
        except SlotNotCoveredError as exc:
            raise ClusterDownError(str(exc)) from exc

    async def run_then(
        self, command: Sequence[Any], then: Sequence[Any], scripts: Sequence[str] = ()
    ) -> tuple[Any, Any]:
        """Run `command` (one key) on the master owning its key, and `then` right behind
        it on the same connection; returns both replies. Follows MOVED and ASK itself
        (the client's redirects cannot keep two commands on one connection). A node that
        does not know the script (a promoted replica) gets `scripts` loaded on the same
        connection and runs the pair again; any other error of the command is raised as
        the client would raise it."""
        await self.initialize()
        slot = self.keyslot(_key_of(command))
        asking = False
        preload: list[tuple[str, str, str]] = []
        try:
            node = self.nodes_manager.get_node_from_slot(slot)
        except SlotNotCoveredError as exc:
            raise ClusterDownError(str(exc)) from exc
        for _ in range(_REDIRECTS):
            _adopt([node])
            batch = [*preload, ("ASKING",), command, then] if asking else [*preload, command, then]
            try:
                *_, reply, after = await _send_together(node, batch)
            except _BROKEN_LINK:
                self._reload_without(node)
                raise
            if isinstance(reply, NoScriptError) and scripts and not preload:
                preload = [("SCRIPT", "LOAD", source) for source in scripts]
                continue
            if isinstance(reply, AskError) and not isinstance(reply, MovedError):
                target = self.get_node(host=reply.host, port=reply.port)
                if target is None:
                    self._initialize = True
                    break
                node, asking = target, True
                continue
            if isinstance(reply, MovedError):
                self._initialize = True
                await self.initialize()
                node, asking = self.nodes_manager.get_node_from_slot(slot), False
                continue
            for outcome in (reply, after):
                if isinstance(outcome, ClusterDownError):
                    self._initialize = True
                if isinstance(outcome, Exception):
                    raise outcome
            return reply, after
        raise ClusterError(f"slot {slot} was still redirected after {_REDIRECTS} tries")

    def _reload_without(self, node: ClusterNode) -> None:
        """Reload the slot map before the next command (the slot may have a new master),
        asking `node` last, as redis-py does after a failed command of its own."""
        self._initialize = True
        move_to_end = getattr(self.nodes_manager, "move_node_to_end_of_cached_nodes", None)
        if move_to_end is not None:  # redis-py 7
            move_to_end(node.name)

    async def ask_replicas(self, command: Sequence[Any], timeout_seconds: float) -> list[Any]:
        """`command` (one key, read-only) on each replica of its key's slot, all at once,
        each after `READONLY` on the same connection. The replies of those that answered
        within `timeout_seconds`."""
        slot = self.keyslot(_key_of(command))
        nodes = await self._replicas_of(slot, timeout_seconds)
        replies = await asyncio.gather(
            *(
                asyncio.wait_for(_send_together(node, [("READONLY",), command]), timeout_seconds)
                for node in nodes
            ),
            return_exceptions=True,
        )
        return [
            reply[1]
            for reply in replies
            if isinstance(reply, list) and not isinstance(reply[1], Exception)
        ]

    async def _replicas_of(self, slot: int, timeout_seconds: float) -> list[ClusterNode]:
        """The replicas of `slot`'s master. CLUSTER SLOTS names a replica only once the
        node asked has heard (by gossip) that it replicated something, so a map loaded on
        a fresh cluster names none: then the other masters are asked CLUSTER SHARDS, which
        names every replica, and the map learns them. A replica with nothing yet answers
        an empty hash, which proves nothing, so the load goes on waiting for the master."""
        serving = self.nodes_manager.slots_cache.get(slot)
        if not serving:
            return []
        if len(serving) > 1:
            return serving[1:]
        others = [node for node in self.get_primaries() if node is not serving[0]]
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(_send_together(node, [("CLUSTER", "SHARDS")]), timeout_seconds)
                for node in others
            ),
            return_exceptions=True,
        )
        port_field = "tls-port" if self._speaks_tls() else "port"
        for answer in answers:
            if not isinstance(answer, list) or isinstance(answer[0], Exception):
                continue
            addresses = _replica_addresses(answer[0], slot, port_field)
            if addresses:
                found = [self._node_at(host, port) for host, port in addresses]
                serving.extend(found)  # shared by every slot of the range
                return found
        return []

    def _speaks_tls(self) -> bool:
        connection_class = self.nodes_manager.connection_kwargs.get("connection_class")
        return isinstance(connection_class, type) and issubclass(connection_class, SSLConnection)

    def _node_at(self, host: str, port: int) -> ClusterNode:
        known = self.get_node(host=host, port=port)
        if known is not None:
            return known
        node = _ReleasingNode(host, port, REPLICA, **self.nodes_manager.connection_kwargs)
        self.nodes_manager.set_nodes(self.nodes_manager.nodes_cache, {node.name: node})
        return node


def _replica_addresses(shards: Any, slot: int, port_field: str) -> list[tuple[str, int]]:
    """Where the live replicas of the shard serving `slot` answer, from a CLUSTER SHARDS
    reply (RESP2 pairs or RESP3 maps): each one's preferred endpoint and client port."""
    for shard in shards:
        fields = reply_fields(shard)
        bounds = [int(bound) for bound in fields.get("slots", [])]
        ranges = zip(bounds[::2], bounds[1::2], strict=True)
        if not any(start <= slot <= end for start, end in ranges):
            continue
        replicas = (reply_fields(node) for node in fields.get("nodes", []))
        return [
            (as_text(node["endpoint"]), int(node[port_field]))
            for node in replicas
            if as_text(node.get("role", b"")) == "replica"
            and as_text(node.get("health", b"")) != "failed"
            and as_text(node.get("endpoint", b"?")) not in ("", "?")
            and port_field in node
        ]
    return []


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
    _adopt(client.nodes_manager.startup_nodes.values())
    client.commands_parser = _CommandTable(client.nodes_manager)
    return client


def forget_loop(client: RedisCluster) -> None:
    """Drop every node's connections: they belong to an event loop that is gone."""
    for node in client.get_nodes():
        node._free.clear()
        node._connections.clear()
