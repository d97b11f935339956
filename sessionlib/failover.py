"""Following the master through Sentinel failovers, faster than errors would.

A connection checks `ROLE` before it is used, and a watcher subscribes to
`+switch-master` on every sentinel and drops the pool's connections at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from sessionlib.transport import DiagnosingConnection

log = logging.getLogger("sessionlib.failover")

Address = tuple[str, int]


def format_address(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


class MasterVerifyingConnection(DiagnosingConnection, SentinelManagedConnection):
    """A Sentinel-managed connection that refuses to serve unless the node says it is
    the master: Sentinel's answer can lag behind a demotion by a moment."""

    # `connect_to` is the one hook every supported redis-py (5.2 to 7.x) runs for each
    # new Sentinel-managed connection; `on_connect_check_health` only exists from 6.0.
    async def connect_to(self, address: Address) -> None:
        await super().connect_to(address)  # type: ignore[no-untyped-call]
        if not self.connection_pool.is_master:
            return
        await self.send_command("ROLE")
        role = await self.read_response()
        if role and role[0] in (b"master", "master"):
            return
        await self.disconnect()
        raise redis_errors.ConnectionError(
            f"{self.host}:{self.port} is not a master (ROLE says {role[0]!r})"
        )


class MasterVerifyingSSLConnection(MasterVerifyingConnection, SSLConnection):
    """The same check over TLS (redis-py's `SentinelManagedSSLConnection`, verified)."""


class SentinelWatcher:
    """Subscribes to `+switch-master` on every known sentinel and reports new masters.

    Each sentinel gets its own task that reconnects when its sentinel dies; the list of
    sentinels is refreshed from `SENTINEL SENTINELS` so added sentinels are followed.
    """

    def __init__(
        self,
        sentinel: Sentinel,
        master_name: str,
        pool: SentinelConnectionPool,
        on_master: Callable[[Address], None],
        *,
        refresh_seconds: float = 10.0,
        reconnect_seconds: float = 0.5,
    ) -> None:
        self._sentinel = sentinel
        self._master_name = master_name
        self._pool = pool
        self._on_master = on_master
        self._refresh_seconds = refresh_seconds
        self._reconnect_seconds = reconnect_seconds
        self._tasks: dict[Address, asyncio.Task[None]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self.current: Address | None = None
        self._stopping = False
        self._switched: asyncio.Event | None = None

    @property
    def started(self) -> bool:
        return self._refresher is not None

    @property
    def watched_sentinels(self) -> list[Address]:
        """The sentinels whose `+switch-master` this watcher is subscribed to (or trying)."""
        return sorted(self._tasks)

    def start(self) -> None:
        """Start watching (idempotent); needs a running event loop."""
        if self._refresher is not None:
            return
        self._stopping = False
        for client in self._sentinel.sentinels:
            self._watch(_address_of(client))
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        # redis-py can turn a cancellation inside a read into a ConnectionError, which
        # the loops would survive: the flag ends them, the timeout bounds the wait.
        self._stopping = True
        tasks = [*self._tasks.values(), *([self._refresher] if self._refresher else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._tasks.clear()
        self._refresher = None

    def forget_loop(self) -> None:
        """Drop tasks of an event loop that is gone; the next store call starts anew."""
        self._tasks.clear()
        self._refresher = None
        self._switched = None
        self.current = None

    async def switch_to(self, address: Address) -> None:
        """Point the pool at `address` and drop every connection to the old master,
        in use or idle: commands in flight fail fast and are retried on the new one."""
        if address == self.current:
            return
        learning = self.current is None and self._pool.master_address in (None, address)
        self.current = address
        self._pool.master_address = address
        if not learning:
            # On the first answer, connections made meanwhile already go to `address`:
            # cutting them would break a command in flight (start-up's script load).
            with contextlib.suppress(Exception):
                await self._pool.disconnect(inuse_connections=True)
        self._on_master(address)
        if self._switched is not None:
            # Wake every retry napping in its backoff; later naps wait for the next switch.
            self._switched.set()
            self._switched = None

    async def nap(self, seconds: float) -> None:
        """Sleep for a retry's backoff, cut short when a new master is announced."""
        if self._switched is None:
            self._switched = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._switched.wait(), seconds)

    async def confirm(self) -> None:
        """Ask Sentinel who the master is, before a retry: after a missed announcement
        (or a paused master that came back still calling itself master) the pool may
        hold connections to a node that can no longer take writes."""
        address = await self._sentinel.discover_master(self._master_name)
        if address != self.current:
            await self.switch_to(address)
        else:
            # Idle connections reconnect through Sentinel on their next use.
            await self._pool.disconnect(inuse_connections=False)

    def _watch(self, address: Address) -> None:
        if address not in self._tasks:
            self._tasks[address] = asyncio.create_task(self._subscribe_forever(address))

    async def _subscribe_forever(self, address: Address) -> None:
        while not self._stopping:
            client = Redis(host=address[0], port=address[1], **self._client_kwargs())
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe("+switch-master")
                    async for message in pubsub.listen():
                        await self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dead sentinel: try again shortly, quietly
                log.debug("sentinel %s: %s", format_address(address), exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(self._reconnect_seconds)

    async def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        data = message["data"]
        fields = (data.decode() if isinstance(data, bytes) else str(data)).split()
        # "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
        if len(fields) == 5 and fields[0] == self._master_name:
            new = (fields[3], int(fields[4]))
            log.info("sentinel announced a new master: %s", format_address(new))
            await self.switch_to(new)

    async def _refresh_forever(self) -> None:
        # Learns the master at start, and catches a `+switch-master` that was missed.
        while not self._stopping:
            with contextlib.suppress(Exception):
                await self.switch_to(await self._sentinel.discover_master(self._master_name))
                await self.refresh_sentinels()
            await asyncio.sleep(self._refresh_seconds)

    async def refresh_sentinels(self) -> None:
        """Learn sentinels added since start-up from the ones we know."""
        for client in list(self._sentinel.sentinels):
            try:
                peers = await client.sentinel_sentinels(self._master_name)  # type: ignore[no-untyped-call]
            except redis_errors.RedisError:
                continue
            for peer in peers:
                address = (str(peer["ip"]), int(peer["port"]))
                if address not in self._tasks:
                    self._sentinel.sentinels.append(
                        Redis(host=address[0], port=address[1], **self._sentinel.sentinel_kwargs)
                    )
                    self._watch(address)
            return

    def _client_kwargs(self) -> dict[str, Any]:
        # Subscriptions wait for messages indefinitely: no read timeout on them.
        kwargs = dict(self._sentinel.sentinel_kwargs)
        kwargs["socket_timeout"] = None
        return kwargs


def _address_of(client: Redis) -> Address:
    kwargs = client.connection_pool.connection_kwargs
    return (str(kwargs["host"]), int(kwargs["port"]))
