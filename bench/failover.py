"""Failover: time from SIGKILL of the master to the first success, and to the first success
after which every call succeeds, through sessionlib and through a plain redis-py client with
its defaults, both calling throughout and timed on the same kills. Sentinel mode: session
writes, against redis-py's Sentinel client. Cluster mode: session reads and writes in turn,
against redis-py's RedisCluster, killing the master that owns the sessions' slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis import RedisError
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from bench.plan import Plan
from bench.servers import store_settings
from bench.stats import Spread
from bench.workload import CHANGED, changed, changed_value, session_attributes
from deploy.local.cluster import LocalCluster
from deploy.local.spec import Node
from deploy.local.topology import LocalTopology
from sessionlib.errors import SessionError
from sessionlib.store import SessionStore

SESSIONLIB = "sessionlib"
PLAIN = "redis-py"
CALL_INTERVAL_SECONDS = 0.01  # a new call every 10 ms, as requests keep arriving
MAX_IN_FLIGHT = 64  # then no new call starts until one ends, like a busy server
OUTAGE_TIMEOUT_SECONDS = 30.0
# How long every call must have succeeded before the outage counts as over.
STEADY_SECONDS = 1.0
REJOIN_TIMEOUT_SECONDS = 60.0

Call = Callable[[int], Awaitable[bool]]  # True when the call succeeded (written, or read)


class OpenLoop:
    """Starts a call every 10 ms whether earlier ones ended or not (open loop, at most 64 at
    once), and records, for calls started after `watch_from`, the failures, when the first
    one succeeded, and when the first success came after which no call failed."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._since = float("inf")
        self._in_flight: set[asyncio.Task[None]] = set()
        self.recovered = asyncio.Event()
        self.recovered_at = 0.0
        self.steady_from: float | None = None  # None while the latest call failed
        self.started = 0
        self.failed = 0

    def watch_from(self, moment: float) -> None:
        self._since = moment
        self.recovered.clear()
        self.steady_from = None
        self.started = self.failed = 0

    async def run(self) -> None:
        try:
            for counter in itertools.count():
                if len(self._in_flight) < MAX_IN_FLIGHT:
                    task = asyncio.create_task(self._one(counter))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                await asyncio.sleep(CALL_INTERVAL_SECONDS)
        finally:
            in_flight = list(self._in_flight)
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(in_flight)

    async def settle(self) -> None:
        """Wait for the calls in flight now, so their failures are counted."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=OUTAGE_TIMEOUT_SECONDS)

    async def _one(self, counter: int) -> None:
        started = time.monotonic()
        try:
            succeeded = await self._call(counter)
        except (RedisError, SessionError, OSError):
            succeeded = False
        if started < self._since:
            return
        self.started += 1
        if not succeeded:
            self.failed += 1
            self.steady_from = None
            return
        now = time.monotonic()
        if self.steady_from is None:
            self.steady_from = now
        if not self.recovered.is_set():
            self.recovered_at = now
            self.recovered.set()


async def _outage(loop: OpenLoop, killed_at: float) -> float | None:
    """Seconds from the kill to the client's first success, None if it never came."""
    remaining = killed_at + OUTAGE_TIMEOUT_SECONDS - time.monotonic()
    try:
        await asyncio.wait_for(loop.recovered.wait(), max(0.0, remaining))
    except TimeoutError:
        return None
    return loop.recovered_at - killed_at


async def _steady_outage(loop: OpenLoop, killed_at: float) -> float | None:
    """Seconds from the kill to the first success after which every call succeeded for
    `STEADY_SECONDS` (and until the calls in flight ended); None if that never came."""
    deadline = killed_at + OUTAGE_TIMEOUT_SECONDS + STEADY_SECONDS
    while time.monotonic() < deadline:
        steady_from = loop.steady_from
        if steady_from is not None and time.monotonic() - steady_from >= STEADY_SECONDS:
            await loop.settle()
            if loop.steady_from == steady_from:
                return steady_from - killed_at
        await asyncio.sleep(0.05)
    return None


@dataclass(frozen=True)
class Target:
    """What is killed: a Sentinel topology's master, or the cluster master owning `key`."""

    topology: LocalTopology | LocalCluster
    key: str

    @property
    def agreed_by(self) -> str:
        return "cluster nodes" if isinstance(self.topology, LocalCluster) else "sentinels"

    def master(self) -> Node:
        if isinstance(self.topology, LocalCluster):
            return self.topology.master_of(self.key)
        return self.topology.node("master")

    def kill(self, node: Node) -> None:
        self.topology.kill(node)

    def wait_for_failover(self, old: Node) -> str:
        """Until the topology agrees on a new master (`host:port`) that reports ROLE master."""
        if isinstance(self.topology, LocalCluster):
            return self.topology.wait_for_failover(old, OUTAGE_TIMEOUT_SECONDS).address
        return self.topology.wait_for_failover(old.address, OUTAGE_TIMEOUT_SECONDS)

    def rejoin(self, old: Node) -> None:
        """The killed master back, as a replica: every kill starts from a healthy topology."""
        self.topology.restart(old)
        self.topology.wait_for_replica(old, REJOIN_TIMEOUT_SECONDS)

    def replicate(self) -> None:
        """Wait until every replica of `key`'s master has what was written so far."""
        with self.topology.client(self.master()) as client:
            client.execute_command("WAIT", 2, 5000)


async def _kill_master_and_time(target: Target, loops: dict[str, OpenLoop]) -> dict[str, Any]:
    """One failover: kill the master, then time each client's recovery."""
    master = await asyncio.to_thread(target.master)
    killed_at = time.monotonic()
    await asyncio.to_thread(target.kill, master)
    # Only calls started after the signal count: one in flight may still have succeeded.
    for loop in loops.values():
        loop.watch_from(time.monotonic())
    new_master = await asyncio.to_thread(target.wait_for_failover, master)
    agreed = time.monotonic() - killed_at
    outages = {name: await _outage(loop, killed_at) for name, loop in loops.items()}
    steady = {name: await _steady_outage(loop, killed_at) for name, loop in loops.items()}
    for loop in loops.values():
        await loop.settle()
    return {
        "killed": master.address,
        "new_master": new_master,
        "agreed_seconds": agreed,
        "outage_seconds": outages,
        "steady_outage_seconds": steady,
        "calls_started": {name: loop.started for name, loop in loops.items()},
        "calls_failed": {name: loop.failed for name, loop in loops.items()},
    }


async def _kills(target: Target, calls: dict[str, Call], plan: Plan) -> list[dict[str, Any]]:
    """`plan.failovers` kills while each client calls in an open loop."""
    await asyncio.to_thread(target.replicate)
    loops = {name: OpenLoop(call) for name, call in calls.items()}
    tasks = [asyncio.create_task(loop.run()) for loop in loops.values()]
    try:
        rounds: list[dict[str, Any]] = []
        for number in range(plan.failovers):
            if number:
                killed = await asyncio.to_thread(target.topology.node, rounds[-1]["killed"])
                await asyncio.to_thread(target.rejoin, killed)
            rounds.append(await _kill_master_and_time(target, loops))
        return rounds
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _session(store: SessionStore) -> tuple[str, Any]:
    """A new 1 KB session and its loaded snapshot."""
    sid = await store.create(session_attributes())
    snapshot = await store.load(sid)
    if snapshot is None:
        raise RuntimeError("the session just created could not be loaded")
    return sid, snapshot


def _summary(rounds: list[dict[str, Any]], target: Target, workload: str) -> dict[str, Any]:
    clients: dict[str, Any] = {}
    for name in (SESSIONLIB, PLAIN):
        clients[name] = {"calls_started": 0, "calls_failed": 0}
        for figure in ("outage_seconds", "steady_outage_seconds"):
            times = [r[figure][name] for r in rounds]
            measured = [t for t in times if t is not None]
            clients[name][figure] = Spread.of(measured).to_json() if measured else None
            if figure == "steady_outage_seconds":
                clients[name]["never_recovered"] = len(times) - len(measured)
        for count in ("calls_started", "calls_failed"):
            clients[name][count] = sum(r[count][name] for r in rounds)
    ratios = [
        r["steady_outage_seconds"][SESSIONLIB] / r["steady_outage_seconds"][PLAIN]
        for r in rounds
        if r["steady_outage_seconds"][SESSIONLIB] and r["steady_outage_seconds"][PLAIN]
    ]
    return {
        "workload": workload,
        "timeout_seconds": OUTAGE_TIMEOUT_SECONDS,
        "steady_seconds": STEADY_SECONDS,
        "clients": clients,
        "agreed_by": target.agreed_by,
        "agreed_seconds": Spread.of([r["agreed_seconds"] for r in rounds]).to_json(),
        "ratio_sessionlib_to_redis_py": Spread.of(ratios).to_json() if ratios else None,
        "rounds": rounds,
    }


async def run(plan: Plan, topology: LocalTopology) -> dict[str, Any]:
    """Sentinel mode: session writes through sessionlib (with its Sentinel watcher) and
    through redis-py's Sentinel client with every setting at its default."""
    attributes = session_attributes()
    store = SessionStore.from_settings(store_settings(topology))
    plain = Sentinel(topology.sentinel_addresses).master_for(topology.master_name)
    try:
        sid, snapshot = await _session(store)
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

        target = Target(topology, store.session_key(sid))
        calls = {SESSIONLIB: sessionlib_write, PLAIN: plain_write}
        summary = _summary(await _kills(target, calls, plan), target, "writes")
        return {**summary, "down_after_ms": topology.spec.down_after_ms}
    finally:
        await store.close()
        await plain.aclose()


async def run_cluster(plan: Plan, cluster: LocalCluster) -> dict[str, Any]:
    """Cluster mode: a session read, then a write, in turn, through sessionlib and through
    redis-py's RedisCluster with every setting at its default; both sessions share a hash
    tag, so the kill of their slot's master hits both."""
    attributes = session_attributes()
    store = SessionStore.from_settings(store_settings(cluster))
    nodes = (address.rpartition(":") for address in cluster.startup_nodes)
    plain = RedisCluster(startup_nodes=[ClusterNode(host, int(port)) for host, _, port in nodes])
    try:
        sid, snapshot = await _session(store)
        plain_key = f"plain:s:{{{sid}}}"
        await plain.hset(plain_key, mapping=attributes)
        ttl_ms = store.settings.idle_timeout_seconds * 1000

        async def sessionlib_call(counter: int) -> bool:
            if counter % 2:
                return (await store.save(snapshot, changed(attributes, counter))).written
            return await store.load(sid) is not None

        async def plain_call(counter: int) -> bool:
            if counter % 2:
                pipe = plain.pipeline()
                pipe.hset(plain_key, CHANGED, json.dumps(changed_value(counter)))
                pipe.pexpire(plain_key, ttl_ms)
                await pipe.execute()
                return True
            return bool(await plain.hgetall(plain_key))

        target = Target(cluster, store.session_key(sid))
        calls = {SESSIONLIB: sessionlib_call, PLAIN: plain_call}
        return _summary(await _kills(target, calls, plan), target, "reads and writes in turn")
    finally:
        await store.close()
        await plain.aclose()
