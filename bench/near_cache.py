"""The near cache (session.near_cache) at library level: how soon another store's logout is
refused here, what a cached session costs in memory, and how many reads of cached sessions
are served through a master SIGKILL, against a store without the near cache.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from redis import RedisError

from bench.failover import CALL_INTERVAL_SECONDS, MAX_IN_FLIGHT, REJOIN_TIMEOUT_SECONDS, Target
from bench.plan import Plan
from bench.servers import settings_with, store_settings
from bench.stats import Spread, percentile
from bench.workload import session_attributes
from deploy.local.topology import LocalTopology
from sessionlib.config import RedisSettings
from sessionlib.errors import SessionError
from sessionlib.near_cache import NearCache
from sessionlib.store import SessionStore

NEAR = "near cache"
PLAIN = "no near cache"
WAIT_SECONDS = 20.0  # for the channel to be trusted, a session to be cached, a logout seen
FAILOVER_SESSIONS = 16  # read in turn through the kill, each cached before it
# A read answered later than this counts as answered, but not as answered in time: a
# request that waits for the new master is served late, one answered from memory is not.
READ_BUDGET_SECONDS = 1.0
# Reads still in flight when the failover is over get this long (the store's own retry
# deadline is 5 s) before they count as unanswered.
SETTLE_SECONDS = 6.0


def _cache(store: SessionStore) -> NearCache:
    if store.near_cache is None:
        raise RuntimeError("the store was built without its near cache")
    return store.near_cache.cache


async def _until_trusted(store: SessionStore) -> None:
    """Any store call starts the invalidation channel; then wait for Redis to acknowledge."""
    await store.load_scripts()
    assert store.near_cache is not None
    if not await store.near_cache.wait_trusted(WAIT_SECONDS):
        raise RuntimeError(f"the near cache was not trusted within {WAIT_SECONDS:g}s")


async def _until_cached(store: SessionStore, session_id: str) -> None:
    """Load until the session is in the near cache (the first load after a write fills it)."""
    cache, deadline = _cache(store), time.monotonic() + WAIT_SECONDS
    while session_id not in cache or not cache.trusted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"session {session_id} was never cached")
        if await store.load(session_id) is None:
            raise RuntimeError(f"session {session_id} is gone")
        await asyncio.sleep(0)


async def _refused_after_logout(here: SessionStore, other: SessionStore) -> tuple[float, int]:
    """One logout on `other` of a session `here` has cached: seconds from the acknowledged
    delete to `here.load` answering None, and how many loads still answered in between."""
    session_id = await other.create(session_attributes())
    await _until_cached(here, session_id)
    await other.delete(session_id)
    acknowledged = time.perf_counter()
    answered = 0
    while await here.load(session_id) is not None:
        answered += 1
        if time.perf_counter() - acknowledged > WAIT_SECONDS:
            raise RuntimeError(f"a logout was not seen within {WAIT_SECONDS:g}s")
        # A hit never awaits: yield, or the channel could never read the invalidation.
        await asyncio.sleep(0)
    return time.perf_counter() - acknowledged, answered


async def invalidation_latency(redis_url: str, logouts: int) -> dict[str, Any]:
    """`logouts` times: a session cached here, deleted through another store (another
    service), and `here.load` polled tightly (yielding once per poll) until it is refused."""
    redis = RedisSettings(url=redis_url)
    here = SessionStore.from_settings(settings_with(redis, near_cache=True))
    other = SessionStore.from_settings(settings_with(redis))
    try:
        await _until_trusted(here)
        measured = [await _refused_after_logout(here, other) for _ in range(logouts)]
    finally:
        await here.close()
        await other.close()
    latencies_ms = [seconds * 1000 for seconds, _ in measured]
    answered = [count for _, count in measured]
    return {
        "logouts": logouts,
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms),
        "latency_ms": Spread.of(latencies_ms).to_json(),
        # Loads that still returned the session after the logout was acknowledged.
        "answered_after_logout": {"total": sum(answered), "max": max(answered)},
    }


async def cached_session_memory(redis_url: str, sessions: int) -> dict[str, Any]:
    """`sessions` of the benchmark's standard session cached in one store: the cache's own
    account (`size_bytes / len`) and what tracemalloc saw the process keep for them."""
    redis = RedisSettings(url=redis_url)
    store = SessionStore.from_settings(settings_with(redis, near_cache=True))
    writer = SessionStore.from_settings(settings_with(redis))
    try:
        ids = [await writer.create(session_attributes()) for _ in range(sessions + 1)]
        await _until_trusted(store)
        await _until_cached(store, ids[0])  # connection buffers and scripts, not counted
        cache = _cache(store)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for session_id in ids[1:]:
                await _until_cached(store, session_id)
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] - before
            # Before any other await: the channel drops what Redis says changed.
            cached, cached_bytes = len(cache), cache.size_bytes
        finally:
            tracemalloc.stop()
        stored = await store.redis.hgetall(store.session_key(ids[1]))
        for session_id in ids:
            await writer.delete(session_id)
        return {
            "sessions": cached,
            "payload_bytes": sum(len(name) + len(value) for name, value in stored.items()),
            "size_bytes_per_session": cached_bytes / cached,
            "traced_bytes_per_session": traced / sessions,
        }
    finally:
        await store.close()
        await writer.close()


async def run(redis_url: str, plan: Plan) -> dict[str, Any]:
    """Invalidation latency and memory per cached session, on the standalone Redis."""
    return {
        "invalidation": await invalidation_latency(redis_url, plan.near_cache_logouts),
        "memory": await cached_session_memory(redis_url, plan.near_cache_sessions),
    }


def http_summary(http: dict[str, Any], variant: str) -> dict[str, Any]:
    """The near cache variant's HTTP figures by mix: over the signed cookie, and its hit ratio."""
    return {
        mix: {key: comparison["variants"][variant][key] for key in ("ratio_to_cookie", "hit_ratio")}
        for mix, comparison in http.items()
        if variant in comparison["variants"]
    }


# -- reads during failover ----------------------------------------------------------------


class ReadLoop:
    """Starts a load every 10 ms (at most 64 at once), the sessions in turn, and keeps each
    one's start (time.monotonic()), duration and outcome: current, stale, none, failed,
    or unfinished (still waiting when the loop was stopped)."""

    def __init__(self, store: SessionStore, session_ids: Sequence[str]) -> None:
        self._store = store
        self._ids = session_ids
        self._in_flight: set[asyncio.Task[None]] = set()
        self.reads: list[tuple[float, float, str]] = []

    async def run(self) -> None:
        for counter in itertools.count():
            if len(self._in_flight) < MAX_IN_FLIGHT:
                task = asyncio.create_task(self._one(self._ids[counter % len(self._ids)]))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            await asyncio.sleep(CALL_INTERVAL_SECONDS)

    async def settle(self) -> None:
        """Give the reads in flight until `SETTLE_SECONDS`, then cancel the rest."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=SETTLE_SECONDS)
        left = list(self._in_flight)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)

    async def _one(self, session_id: str) -> None:
        started = time.monotonic()
        outcome = "unfinished"
        try:
            loaded = await self._store.load(session_id)
            outcome = "none" if loaded is None else "stale" if loaded.stale else "current"
        except (RedisError, SessionError, OSError):
            outcome = "failed"
        finally:
            self.reads.append((started, time.monotonic() - started, outcome))


def _served(reads: list[tuple[float, float, str]], since: float, until: float) -> dict[str, Any]:
    """The reads started in [since, until): how many were answered with the session (stale
    included), how many within the budget, and how long the answered ones took."""
    window = [read for read in reads if since <= read[0] < until]
    answered = [seconds for _, seconds, outcome in window if outcome in ("current", "stale")]
    outcomes = {
        name: sum(1 for *_, outcome in window if outcome == name)
        for name in ("current", "stale", "none", "failed", "unfinished")
    }
    return {
        "reads": len(window),
        "answered": len(answered),
        "answered_in_time": sum(1 for seconds in answered if seconds <= READ_BUDGET_SECONDS),
        "outcomes": outcomes,
        "p50_ms": percentile(answered, 50) * 1000 if answered else None,
        "p99_ms": percentile(answered, 99) * 1000 if answered else None,
    }


async def _read_through_kill(
    target: Target, stores: dict[str, SessionStore], session_ids: list[str]
) -> dict[str, Any]:
    """Both stores read the cached sessions through one kill of the master; the reads
    that count started between the kill and the sentinels' agreement on a new master."""
    for store in stores.values():
        for session_id in session_ids:  # cached (or, without the cache, read) just before
            if store.near_cache is not None:
                await _until_cached(store, session_id)
            elif await store.load(session_id) is None:
                raise RuntimeError(f"session {session_id} is gone")
    master = await asyncio.to_thread(target.master)
    loops = {name: ReadLoop(store, session_ids) for name, store in stores.items()}
    tasks = [asyncio.create_task(loop.run()) for loop in loops.values()]
    try:
        await asyncio.sleep(0.2)  # reading before the kill too, as a busy service is
        killed_at = time.monotonic()
        await asyncio.to_thread(target.kill, master)
        new_master = await asyncio.to_thread(target.wait_for_failover, master)
        agreed_at = time.monotonic()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for loop in loops.values():
        await loop.settle()
    return {
        "killed": master.address,
        "new_master": new_master,
        "agreed_seconds": agreed_at - killed_at,
        "stores": {name: _served(loop.reads, killed_at, agreed_at) for name, loop in loops.items()},
    }


def _replicated(topology: LocalTopology) -> None:
    """Until both replicas hold what the master has (so the master a kill promotes has
    every session), asking `WAIT` for less than the node client's 1 s socket timeout."""
    deadline = time.monotonic() + REJOIN_TIMEOUT_SECONDS
    while True:
        try:
            with topology.client("master") as client:
                if int(client.execute_command("WAIT", 2, 500)) >= 2:
                    return
        except RedisError:
            pass  # a replica still resyncing after a rejoin: ask again
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replicas did not catch up within {REJOIN_TIMEOUT_SECONDS:g}s")
        time.sleep(0.1)


def _failover_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    stores: dict[str, Any] = {}
    for name in (NEAR, PLAIN):
        figures = [r["stores"][name] for r in rounds]
        reads = sum(f["reads"] for f in figures)
        answered = sum(f["answered"] for f in figures)
        in_time = sum(f["answered_in_time"] for f in figures)
        stores[name] = {
            "reads": reads,
            "served_share": answered / reads if reads else None,
            "served_in_time_share": in_time / reads if reads else None,
            "outcomes": {
                outcome: sum(f["outcomes"][outcome] for f in figures)
                for outcome in figures[0]["outcomes"]
            },
        }
    return {
        "sessions": FAILOVER_SESSIONS,
        "read_budget_seconds": READ_BUDGET_SECONDS,
        "agreed_seconds": Spread.of([r["agreed_seconds"] for r in rounds]).to_json(),
        "stores": stores,
        "rounds": rounds,
    }


async def failover_reads(
    plan: Plan, topology: LocalTopology, killed_before: str | None = None
) -> dict[str, Any]:
    """`plan.near_cache_failovers` master kills in Sentinel mode, read through by a store
    with the near cache and one without (same settings otherwise, same sessions). The
    master `killed_before` (by the failover benchmark) rejoins first, as a replica."""
    target = Target(topology, key="")
    if killed_before is not None:
        await asyncio.to_thread(
            target.rejoin, await asyncio.to_thread(topology.node, killed_before)
        )
    stores = {
        NEAR: SessionStore.from_settings(store_settings(topology, near_cache=True)),
        PLAIN: SessionStore.from_settings(store_settings(topology)),
    }
    try:
        session_ids = [
            await stores[PLAIN].create(session_attributes()) for _ in range(FAILOVER_SESSIONS)
        ]
        rounds: list[dict[str, Any]] = []
        for number in range(plan.near_cache_failovers):
            if number:
                killed = await asyncio.to_thread(topology.node, rounds[-1]["killed"])
                await asyncio.to_thread(target.rejoin, killed)
            await asyncio.to_thread(_replicated, topology)
            await _until_trusted(stores[NEAR])
            rounds.append(await _read_through_kill(target, stores, session_ids))
        return _failover_summary(rounds)
    finally:
        for store in stores.values():
            await store.close()
