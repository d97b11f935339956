"""The near cache's invalidation channel: Redis client-side caching (`CLIENT TRACKING`) in
BCAST mode on one dedicated connection per master, run as an asyncio task.

Each connection redirects its own invalidations to itself and subscribes to
`__redis__:invalidate` (RESP2, so every supported redis-py reads it the same way). BCAST
with the prefix `<prefix>:s:` reports every write to a session key, whichever client
made it, so the pooled data connections need no tracking of their own. The cache is
trusted only while every channel is acknowledged and answers its health-check PING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import NoPermissionError

from sessionlib.cluster import RedisClient
from sessionlib.config import NearCacheSettings, RedisSettings, Settings
from sessionlib.connection import create_redis, create_sentinel, node_client
from sessionlib.failover import Address, format_address
from sessionlib.near_cache import NearCache, NearCacheObserver
from sessionlib.refusals import describe_refusal, fix_for, is_refusal
from sessionlib.serialization import as_text

log = logging.getLogger("sessionlib.tracking")

INVALIDATE_CHANNEL = b"__redis__:invalidate"
# What the Redis user needs beyond the store's own commands, in ACL rule syntax.
TRACKING_ACL = "the user's ACL rules: +client|id +client|tracking +subscribe &__redis__:invalidate"


class ChannelLost(Exception):
    """An invalidation channel failed; `reason` is the flush's metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class TrackedNodes(Protocol):
    """Where the invalidation channels go: the master(s) the store writes to."""

    verify_master: bool

    async def masters(self) -> list[Address]: ...

    async def connection(self, address: Address) -> Connection: ...

    async def aclose(self) -> None: ...


class StandaloneNodes:
    """The one node of `redis.url`, reached as the store reaches it."""

    verify_master = False

    def __init__(self, settings: RedisSettings) -> None:
        client = create_redis(settings)
        assert isinstance(client, Redis)
        self._client = client

    async def masters(self) -> list[Address]:
        kwargs = self._client.connection_pool.connection_kwargs
        return [(str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379)))]

    async def connection(self, address: Address) -> Connection:
        made = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        assert isinstance(made, Connection)
        return made

    async def aclose(self) -> None:
        await self._client.aclose()


class SentinelNodes:
    """The master Sentinel names, asked through the store's own Sentinel handle when
    there is one (the same discovery), reached with the store's credentials and TLS."""

    verify_master = True

    def __init__(self, settings: RedisSettings, sentinel: Sentinel | None = None) -> None:
        self._settings = settings
        self._own_sentinel = sentinel is None
        self._sentinel: Sentinel = sentinel or create_sentinel(settings)

    async def masters(self) -> list[Address]:
        address = await self._sentinel.discover_master(self._settings.master_name)
        return [(str(address[0]), int(address[1]))]

    async def connection(self, address: Address) -> Connection:
        return await _node_connection(self._settings, address)

    async def aclose(self) -> None:
        if self._own_sentinel:
            for client in self._sentinel.sentinels:
                with contextlib.suppress(Exception):
                    await client.aclose()


class ClusterNodes:
    """Every master of the slot map, read by a cluster client of the tracker's own (a
    reload here never disturbs the store's client)."""

    verify_master = True

    def __init__(self, settings: RedisSettings) -> None:
        client = create_redis(settings)
        assert isinstance(client, RedisCluster)
        self._settings = settings
        self._client = client
        self._loaded = False

    async def masters(self) -> list[Address]:
        if self._loaded:
            await self._client.nodes_manager.initialize()
        else:
            await self._client.initialize()
            self._loaded = True
        # From the slot map itself: redis-py 7 keeps a node's old server type when a
        # reload finds it again, so `get_primaries()` still names a demoted master.
        slots = self._client.nodes_manager.slots_cache.values()
        return sorted({(str(nodes[0].host), int(nodes[0].port)) for nodes in slots if nodes})

    async def connection(self, address: Address) -> Connection:
        return await _node_connection(self._settings, address)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()


async def _node_connection(settings: RedisSettings, address: Address) -> Connection:
    """A connection of its own to `address`, built as connection.py builds the store's."""
    client = node_client(settings, address)
    made = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    await client.aclose()  # the pool never held `made`: this only drops the pool
    assert isinstance(made, Connection)
    return made


def tracked_nodes(settings: RedisSettings, redis: RedisClient | None = None) -> TrackedNodes:
    """The nodes to track for `settings`' topology; pass the store's client so Sentinel
    mode asks the same Sentinel handle the store follows."""
    if settings.mode == "standalone":
        return StandaloneNodes(settings)
    if settings.mode == "sentinel":
        sentinel = None
        if isinstance(redis, Redis) and isinstance(redis.connection_pool, SentinelConnectionPool):
            sentinel = redis.connection_pool.sentinel_manager
        return SentinelNodes(settings, sentinel)
    return ClusterNodes(settings)


class InvalidationChannel:
    """One tracking connection: open it, then listen until it fails."""

    def __init__(
        self,
        connection: Connection,
        cache: NearCache,
        key_prefix: str,
        *,
        health_check_interval_seconds: float,
        pong_timeout_seconds: float,
    ) -> None:
        self.connection = connection
        self.client_id: int | None = None
        self._cache = cache
        self._tracked_prefix = f"{key_prefix}:s:".encode()
        self._key_start = len(self._tracked_prefix) + 1  # past "{"
        self._interval = health_check_interval_seconds
        self._pong_timeout = pong_timeout_seconds

    @property
    def address(self) -> str:
        return f"{self.connection.host}:{self.connection.port}"

    async def open(self, *, verify_master: bool) -> None:
        """Connect, check the node is a master, and switch tracking on; returns once
        Redis acknowledged both `CLIENT TRACKING` and the subscription."""
        connection = self.connection
        await connection.connect()  # type: ignore[no-untyped-call]
        if verify_master:
            role = await self._ask("ROLE")
            if as_text(role[0]) != "master":
                raise ChannelLost("channel_lost", f"{self.address} is not a master")
        self.client_id = int(await self._ask("CLIENT", "ID"))
        # Redirected to itself: in RESP2 only a subscribed connection can receive them,
        # and one connection means one thing to watch.
        reply = await self._ask(
            "CLIENT",
            "TRACKING",
            "ON",
            "REDIRECT",
            self.client_id,
            "BCAST",
            "PREFIX",
            self._tracked_prefix,
        )
        if as_text(reply) != "OK":
            raise ChannelLost("channel_lost", f"CLIENT TRACKING answered {reply!r}")
        subscribed = await self._ask("SUBSCRIBE", INVALIDATE_CHANNEL)
        if not (isinstance(subscribed, list) and as_text(subscribed[0]) == "subscribe"):
            raise ChannelLost("channel_lost", f"SUBSCRIBE answered {subscribed!r}")

    async def listen(self) -> None:
        """Apply invalidations as they come; PING every interval and raise ChannelLost
        when a pong is late, the connection drops or anything else goes wrong."""
        connection = self.connection
        ping_due = time.monotonic() + self._interval
        pong_by: float | None = None
        while True:
            now = time.monotonic()
            if pong_by is not None and now >= pong_by:
                raise ChannelLost(
                    "health_check", f"{self.address}: no pong within {self._pong_timeout:g}s"
                )
            if pong_by is None and now >= ping_due:
                await connection.send_command("PING")
                pong_by = now + self._pong_timeout
            wake = pong_by if pong_by is not None else ping_due
            message = await connection.read_response(timeout=max(wake - time.monotonic(), 0.001))
            if message is None:
                continue
            if self._is_pong(message):
                pong_by = None
                ping_due = time.monotonic() + self._interval
            else:
                self._apply(message)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.connection.disconnect()

    async def _ask(self, *args: Any) -> Any:
        """One command while opening, within the connection's socket timeout."""
        await self.connection.send_command(*args)
        return await self.connection.read_response()

    @staticmethod
    def _is_pong(message: Any) -> bool:
        return isinstance(message, list) and len(message) == 2 and message[0] in (b"pong", "pong")

    def _apply(self, message: Any) -> None:
        if not (isinstance(message, list) and len(message) == 3 and message[0] == b"message"):
            return
        if message[1] != INVALIDATE_CHANNEL:
            return
        keys = message[2]
        if keys is None:  # FLUSHALL / FLUSHDB: every key is gone
            self._cache.flush("flush_all")
            return
        self._cache.invalidate_many(self._session_ids(keys), "key")

    def _session_ids(self, keys: Sequence[bytes]) -> list[str]:
        """`<prefix>:s:{<sid>}` -> `<sid>`; other keys under the prefix name no session."""
        found = []
        for key in keys:
            if key.startswith(self._tracked_prefix) and key.endswith(b"}"):
                found.append(key[self._key_start : -1].decode(errors="replace"))
        return found


class InvalidationTracker:
    """Keeps one invalidation channel open to each master and the cache's trust in
    step with them: trusted once every channel is acknowledged, flushed and untrusted at
    the first sign of a gap (a drop, an error, a late pong, a new master)."""

    def __init__(
        self,
        cache: NearCache,
        nodes: TrackedNodes,
        key_prefix: str,
        *,
        health_check_interval_seconds: float = 1.0,
        pong_timeout_seconds: float | None = None,
        topology_check_seconds: float = 5.0,
        reconnect_seconds: float = 0.1,
        max_reconnect_seconds: float = 2.0,
    ) -> None:
        self.cache = cache
        self._nodes = nodes
        self._key_prefix = key_prefix
        self._interval = health_check_interval_seconds
        self._pong_timeout = pong_timeout_seconds or health_check_interval_seconds
        self._topology_check = topology_check_seconds
        self._reconnect = reconnect_seconds
        self._max_reconnect = max_reconnect_seconds
        self._task: asyncio.Task[None] | None = None
        self._restart: asyncio.Event | None = None
        self._channels: list[InvalidationChannel] = []
        self._stopping = False
        self.connected_once = False

    @classmethod
    def from_settings(
        cls,
        cache: NearCache,
        redis_settings: RedisSettings,
        near_cache: NearCacheSettings,
        key_prefix: str,
        *,
        redis: RedisClient | None = None,
    ) -> InvalidationTracker:
        return cls(
            cache,
            tracked_nodes(redis_settings, redis),
            key_prefix,
            health_check_interval_seconds=near_cache.health_check_interval_seconds,
        )

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def client_ids(self) -> list[int]:
        """`CLIENT ID` of each open channel (for `CLIENT KILL ID` in tests and tools)."""
        return [c.client_id for c in self._channels if c.client_id is not None]

    @property
    def tracked(self) -> list[str]:
        """`host:port` of each open channel."""
        return [c.address for c in self._channels]

    def start(self) -> None:
        """Start the channel task (idempotent); needs a running event loop."""
        if self._task is not None:
            return
        self._stopping = False
        self._restart = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=2.0)
        await self._close_channels()
        self.cache.mark_untrusted("stopped")

    async def aclose(self) -> None:
        """Stop, and close what the tracker opened to find the nodes."""
        await self.stop()
        await self._nodes.aclose()

    def forget_loop(self) -> None:
        """Drop the task and connections of an event loop that is gone."""
        self._task = None
        self._restart = None
        self._channels = []
        self.cache.mark_untrusted("channel_lost")

    async def wait_trusted(self, timeout: float) -> bool:
        """Wait until the cache is trusted (for start-up and tests)."""
        deadline = time.monotonic() + timeout
        while not self.cache.trusted:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def flush_on_switch_master(self) -> None:
        """A new master was announced: flush now, and reopen the channel(s) to the
        master(s) as discovery names them. Sync, so a watcher calls it inline."""
        self.restart("switch_master")

    def restart(self, reason: str) -> None:
        """Flush and mark untrusted at once, then reconnect every channel."""
        self.cache.mark_untrusted(reason)
        if self._restart is not None:
            self._restart.set()

    # -- the task ------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            assert self._restart is not None
            self._restart.clear()
            reason, detail, refusal = "channel_lost", "", None
            try:
                addresses = await self._open_channels()
                # A reconnect, or a restart asked for while opening: nothing cached
                # meanwhile (untrusted), and the new epoch refuses reads begun in the gap.
                if self.connected_once:
                    self.cache.flush("reconnect")
                if self._restart.is_set():
                    continue
                self.cache.mark_trusted()
                self.connected_once = True
                failures = 0
                log.info("near cache trusted: tracking on %s", ", ".join(self.tracked))
                reason, detail = await self._watch(addresses)
            except asyncio.CancelledError:
                raise
            except ChannelLost as exc:
                reason, detail = exc.reason, str(exc)
            except Exception as exc:  # any failure is a gap: flush, try again
                refusal = self._refusal(exc)
                detail = refusal or f"{type(exc).__name__}: {exc}"
            finally:
                if self.cache.trusted:
                    self.cache.mark_untrusted(reason)
                await self._close_channels()
            if self._stopping:
                break
            if reason in ("restart", "switch_master"):
                continue  # a new master is named already: no pause
            failures += 1
            # Loud when trust is lost, quiet while the node stays away.
            level = logging.DEBUG if failures > 1 else logging.ERROR if refusal else logging.WARNING
            log.log(level, "near cache untrusted (%s): %s", reason, detail or "no detail")
            pause = min(self._reconnect * 2 ** (failures - 1), self._max_reconnect)
            with contextlib.suppress(TimeoutError):
                # A restart (a new master announced) cuts the pause short.
                await asyncio.wait_for(self._restart.wait(), pause)

    def _refusal(self, exc: Exception) -> str | None:
        """A refusal told in one line, with the ACL rules tracking needs."""
        if not is_refusal(exc):
            return None
        where = ", ".join(self.tracked) or "Redis"
        user = self._channels[0].connection.username if self._channels else None
        fix = TRACKING_ACL if isinstance(exc, NoPermissionError) else fix_for(exc)
        return "the near cache stays off: " + describe_refusal(exc, where, user, fix)

    async def _open_channels(self) -> list[Address]:
        addresses = await self._nodes.masters()
        if not addresses:
            raise ChannelLost("channel_lost", "no master to track")
        for address in addresses:
            channel = InvalidationChannel(
                await self._nodes.connection(address),
                self.cache,
                self._key_prefix,
                health_check_interval_seconds=self._interval,
                pong_timeout_seconds=self._pong_timeout,
            )
            self._channels.append(channel)
        await asyncio.gather(
            *(c.open(verify_master=self._nodes.verify_master) for c in self._channels)
        )
        return addresses

    async def _watch(self, addresses: list[Address]) -> tuple[str, str]:
        """Listen on every channel until one fails, a restart is asked, or the masters
        changed (a failover or resharding nobody announced); returns why it ended."""
        assert self._restart is not None
        listeners = [asyncio.create_task(c.listen()) for c in self._channels]
        restart = asyncio.create_task(self._restart.wait())
        checker = asyncio.create_task(self._masters_changed(addresses))
        watched = {*listeners, restart, checker}
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watched:
                task.cancel()
            await asyncio.wait(watched, timeout=2.0)
        if restart in done:
            return "restart", "a restart was asked for"
        if checker in done and not checker.cancelled() and checker.exception() is None:
            return "switch_master", f"masters are now {checker.result()}"
        for task in done:
            if task.cancelled():
                continue
            failure = task.exception()
            if isinstance(failure, ChannelLost):
                return failure.reason, str(failure)
            if failure is not None:
                return "channel_lost", f"{type(failure).__name__}: {failure}"
        return "channel_lost", "a channel ended"

    async def _masters_changed(self, addresses: list[Address]) -> str:
        """Returns (ends the watch) once discovery names other masters than `addresses`."""
        while True:
            await asyncio.sleep(self._topology_check)
            try:
                now = await self._nodes.masters()
            except Exception as exc:  # no answer is no news: the channels' checks still run
                log.debug("near cache: could not list the masters: %s", exc)
                continue
            if sorted(now) != sorted(addresses):
                return ", ".join(format_address(a) for a in now)

    async def _close_channels(self) -> None:
        channels, self._channels = self._channels, []
        for channel in channels:
            await channel.close()


def near_cache_tracker(
    settings: Settings, redis: RedisClient, observer: NearCacheObserver | None = None
) -> InvalidationTracker | None:
    """The near cache and the channel that keeps it honest, when `session.near_cache` is
    on (the store holds the tracker and reads its `cache`); None when it is off."""
    near = settings.session.near_cache
    if not near.enabled:
        return None
    cache = NearCache(
        max_entries=near.max_entries,
        max_bytes=near.max_bytes,
        max_staleness_seconds=near.max_staleness_seconds,
        refresh_throttle_seconds=settings.session.refresh_throttle_seconds,
        observer=observer,
    )
    return InvalidationTracker.from_settings(
        cache, settings.redis, near, settings.session.key_prefix, redis=redis
    )
