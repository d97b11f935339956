"""Listens to what every sentinel announces (`+sdown`, `+odown`, `+switch-master`, ...) and
marks it on the run's timeline, independently of the library's own watcher."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis

from deploy.local.spec import Node
from deploy.local.topology import LocalTopology
from tests.chaos.records import RunRecord

# The announcements that tell the story of a failover; the rest is noise on a timeline.
WATCHED = ("+sdown", "-sdown", "+odown", "-odown", "+switch-master", "+convert-to-slave")


class SentinelEvents:
    """One subscription per sentinel, re-established while its sentinel is down."""

    def __init__(self, topology: LocalTopology, record: RunRecord) -> None:
        self.topology = topology
        self.record = record
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._follow(s)) for s in self.topology.sentinel_nodes]

    async def stop(self) -> None:
        # redis-py can turn a cancellation inside a read into a ConnectionError: the flag
        # ends the loops, the timeout bounds the wait.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)

    def summary(self) -> dict[str, Any]:
        return {"sentinel_events": self.story()}

    def story(self, echo_seconds: float = 5.0) -> list[str]:
        """What the sentinels announced, each announcement once (all of them repeat it)."""
        told: dict[str, float] = {}
        story = []
        for mark in self.record.marks_of("sentinel"):
            if mark.time - told.get(mark.label, -echo_seconds) >= echo_seconds:
                story.append(f"{mark.time:.3f}s {mark.label}")
            told[mark.label] = mark.time
        return story

    async def _follow(self, sentinel: Node) -> None:
        # In secure mode as the admin user over mutual TLS, like the topology's own probes.
        login = self.topology.login().client_kwargs(sentinel)
        while not self._stopping:
            client = Redis(
                host=sentinel.host, port=sentinel.port, socket_connect_timeout=1.0, **login
            )
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(*WATCHED)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            channel, data = message["channel"].decode(), message["data"].decode()
                            self.record.mark("sentinel", f"{channel} {data}")
            except asyncio.CancelledError:
                raise
            except Exception:  # a dead sentinel: its subscription is re-made shortly
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
