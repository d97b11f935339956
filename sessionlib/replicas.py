"""Reading a session hash from the replicas while no master answers (opt-in).

Only for the failover window: every replica Sentinel lists (in Cluster mode: every
replica of the key's slot) is asked at once, with a short timeout, and the caller keeps
the freshest copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from sessionlib.cluster import SessionCluster
from sessionlib.failover import Address


class ReplicaReads(Protocol):
    """What the store needs for stale reads, whatever the topology."""

    async def read_hash(self, key: str) -> list[dict[bytes, bytes]]:
        """The hash as each answering replica holds it (empty dicts included)."""

    def forget_loop(self) -> None:
        """Drop connections that belong to an event loop that is gone."""

    async def close(self) -> None: ...


class ClusterReplicaReader:
    """Asks the replicas of a key's slot (`READONLY` on each) for one hash."""

    def __init__(self, cluster: SessionCluster, timeout_seconds: float) -> None:
        self._cluster = cluster
        self._timeout = timeout_seconds

    async def read_hash(self, key: str) -> list[dict[bytes, bytes]]:
        replies = await self._cluster.ask_replicas(("HGETALL", key), self._timeout)
        # A flat field, value list where redis-py has no HGETALL callback for the node.
        return [
            reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
            for reply in replies
        ]

    def forget_loop(self) -> None:
        """Nothing of its own: it reads through the cluster client's connections."""

    async def close(self) -> None:
        """Nothing of its own to close (the cluster client is the store's)."""


class ReplicaReader:
    """Asks each live replica of a Sentinel-managed master for one hash."""

    def __init__(
        self,
        sentinel: Sentinel,
        master_name: str,
        connection_kwargs: dict[str, Any],
        timeout_seconds: float,
    ) -> None:
        self._sentinel = sentinel
        self._master_name = master_name
        self._connection_kwargs = connection_kwargs
        self._timeout = timeout_seconds
        self._clients: dict[Address, Redis] = {}

    async def read_hash(self, key: str) -> list[dict[bytes, bytes]]:
        """The hash as each answering replica holds it (empty dicts included)."""
        addresses = await self._sentinel.discover_slaves(self._master_name)
        clients = [self._client((str(host), int(port))) for host, port in addresses]
        replies = await asyncio.gather(
            *(asyncio.wait_for(_hgetall(client, key), self._timeout) for client in clients),
            return_exceptions=True,
        )
        return [reply for reply in replies if isinstance(reply, dict)]

    def _client(self, address: Address) -> Redis:
        if address not in self._clients:
            self._clients[address] = Redis(
                host=address[0], port=address[1], **self._connection_kwargs
            )
        return self._clients[address]

    def forget_loop(self) -> None:
        """Drop clients whose connections belong to an event loop that is gone."""
        self._clients.clear()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


async def _hgetall(client: Redis, key: str) -> dict[bytes, bytes]:
    return await cast(Awaitable[dict[bytes, bytes]], client.hgetall(key))
