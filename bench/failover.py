"""Failover: time from SIGKILL of the master to the first successful session write, through
sessionlib (with its Sentinel watcher) and through a plain redis-py Sentinel client with its
defaults. Both write throughout and are timed on the same kills of a local Sentinel topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis import RedisError
from redis.asyncio.sentinel import Sentinel

from bench.plan import Plan
from bench.stats import Spread
from bench.workload import CHANGED, changed, changed_value, session_attributes
from deploy.local.processes import find_free_ports
from deploy.local.spec import TopologySpec
from deploy.local.topology import LocalTopology
from sessionlib.config import RedisSettings, SessionSettings, Settings
from sessionlib.errors import SessionError
from sessionlib.store import SessionStore

SESSIONLIB = "sessionlib"
PLAIN = "redis-py"
WRITE_INTERVAL_SECONDS = 0.01  # a new write every 10 ms, as requests keep arriving
MAX_IN_FLIGHT = 64  # then no new write starts until one ends, like a busy server
OUTAGE_TIMEOUT_SECONDS = 30.0
REJOIN_TIMEOUT_SECONDS = 60.0

Write = Callable[[int], Awaitable[bool]]  # True when the write was acknowledged


class Writer:
    """Starts a session write every 10 ms whether earlier ones ended or not (open loop, at
    most 64 at once), and counts, for writes started after `watch_from`, the failures and
    the moment the first one succeeded."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._since = float("inf")
        self._in_flight: set[asyncio.Task[None]] = set()
        self.recovered = asyncio.Event()
        self.recovered_at = 0.0
        self.started = 0
        self.failed = 0

    def watch_from(self, moment: float) -> None:
        self._since = moment
        self.recovered.clear()
        self.started = self.failed = 0

    async def run(self) -> None:
        try:
            for counter in itertools.count():
                if len(self._in_flight) < MAX_IN_FLIGHT:
                    task = asyncio.create_task(self._one(counter))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                await asyncio.sleep(WRITE_INTERVAL_SECONDS)
        finally:
            in_flight = list(self._in_flight)
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(in_flight)

    async def settle(self) -> None:
        """Wait for the writes in flight now, so their failures are counted."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=OUTAGE_TIMEOUT_SECONDS)

    async def _one(self, counter: int) -> None:
        started = time.monotonic()
        try:
            acknowledged = await self._write(counter)
        except (RedisError, SessionError, OSError):
            acknowledged = False
        if started < self._since:
            return
        self.started += 1
        if not acknowledged:
            self.failed += 1
        elif not self.recovered.is_set():
            self.recovered_at = time.monotonic()
            self.recovered.set()


async def _outage(writer: Writer, killed_at: float) -> float | None:
    """Seconds from the kill to the writer's first success, None if it never came."""
    remaining = killed_at + OUTAGE_TIMEOUT_SECONDS - time.monotonic()
    try:
        await asyncio.wait_for(writer.recovered.wait(), max(0.0, remaining))
    except TimeoutError:
        return None
    return writer.recovered_at - killed_at


async def _kill_master_and_time(
    topology: LocalTopology, writers: dict[str, Writer]
) -> dict[str, Any]:
    """One failover: kill the master, then time each writer's recovery."""
    master = await asyncio.to_thread(topology.node, "master")
    killed_at = time.monotonic()
    await asyncio.to_thread(topology.kill, master)
    # Only writes started after the signal count: one in flight may still have succeeded.
    for writer in writers.values():
        writer.watch_from(time.monotonic())
    new_master = await asyncio.to_thread(topology.wait_for_failover, master.address)
    agreed = time.monotonic() - killed_at
    outages = {name: await _outage(writer, killed_at) for name, writer in writers.items()}
    for writer in writers.values():
        await writer.settle()
    return {
        "killed": master.address,
        "new_master": new_master,
        "sentinels_agreed_seconds": agreed,
        "outage_seconds": outages,
        "writes_started": {name: writer.started for name, writer in writers.items()},
        "writes_failed": {name: writer.failed for name, writer in writers.items()},
    }


def _sentinel_settings(topology: LocalTopology) -> Settings:
    redis = RedisSettings(
        mode="sentinel",
        sentinels=[f"{host}:{port}" for host, port in topology.sentinel_addresses],
        master_name=topology.master_name,
    )
    # Every field given, so no SESSIONLIB_* variable of the caller's changes the benchmark.
    return Settings(profile="dev", redis=redis, session=SessionSettings())


async def _measure(topology: LocalTopology, plan: Plan) -> list[dict[str, Any]]:
    attributes = session_attributes()
    store = SessionStore.from_settings(_sentinel_settings(topology))
    # redis-py as a user would first write it: every setting left at its default.
    plain = Sentinel(topology.sentinel_addresses).master_for(topology.master_name)
    tasks: list[asyncio.Task[None]] = []
    try:
        sid = await store.create(attributes)
        snapshot = await store.load(sid)
        if snapshot is None:
            raise RuntimeError("the session just created could not be loaded")
        plain_key = f"plain:s:{{{sid}}}"
        await plain.hset(plain_key, mapping=attributes)
        ttl_ms = store.settings.idle_timeout_seconds * 1000

        async def sessionlib_write(counter: int) -> bool:
            return (await store.save(snapshot, changed(attributes, counter))).written

        async def plain_write(counter: int) -> bool:
            pipe = plain.pipeline(transaction=False)
            pipe.hset(plain_key, CHANGED, json.dumps(changed_value(counter)))
            pipe.pexpire(plain_key, ttl_ms)
            await pipe.execute()
            return True

        writers = {SESSIONLIB: Writer(sessionlib_write), PLAIN: Writer(plain_write)}
        tasks = [asyncio.create_task(writer.run()) for writer in writers.values()]
        rounds: list[dict[str, Any]] = []
        for number in range(plan.failovers):
            if number:
                # The old master back as a replica: every kill starts from a healthy topology.
                killed = rounds[-1]["killed"]
                await asyncio.to_thread(topology.restart, killed)
                await asyncio.to_thread(topology.wait_for_replica, killed, REJOIN_TIMEOUT_SECONDS)
            rounds.append(await _kill_master_and_time(topology, writers))
        return rounds
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await store.close()
        await plain.aclose()


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    clients: dict[str, Any] = {}
    for name in (SESSIONLIB, PLAIN):
        times = [r["outage_seconds"][name] for r in rounds]
        measured = [t for t in times if t is not None]
        clients[name] = {
            "outage_seconds": Spread.of(measured).to_json() if measured else None,
            "never_recovered": len(times) - len(measured),
            "writes_started": sum(r["writes_started"][name] for r in rounds),
            "writes_failed": sum(r["writes_failed"][name] for r in rounds),
        }
    ratios = [
        r["outage_seconds"][SESSIONLIB] / r["outage_seconds"][PLAIN]
        for r in rounds
        if r["outage_seconds"][SESSIONLIB] and r["outage_seconds"][PLAIN]
    ]
    return {
        "timeout_seconds": OUTAGE_TIMEOUT_SECONDS,
        "clients": clients,
        "sentinels_agreed_seconds": Spread.of(
            [r["sentinels_agreed_seconds"] for r in rounds]
        ).to_json(),
        "ratio_sessionlib_to_redis_py": Spread.of(ratios).to_json() if ratios else None,
        "rounds": rounds,
    }


async def run(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """`plan.failovers` kills on a fresh topology on free ports, stopped afterwards."""
    ports = find_free_ports(6)
    spec = TopologySpec(redis_ports=tuple(ports[:3]), sentinel_ports=tuple(ports[3:]))
    topology = LocalTopology(run_dir, spec)
    await asyncio.to_thread(topology.up)
    try:
        return _summary(await _measure(topology, plan))
    finally:
        await asyncio.to_thread(topology.down)
