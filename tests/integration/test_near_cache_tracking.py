"""The near cache against real Redis: client-side caching (CLIENT TRACKING, BCAST)
invalidates what other clients write, a read that an invalidation overtakes is never
cached, and any gap in the channel (a killed connection, a restart, a hung server, a new
master, a failover) flushes the cache until tracking is acknowledged again."""

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from sessionlib.config import NearCacheSettings, RedisSettings, Settings, load_settings
from sessionlib.ids import redact
from sessionlib.metrics import NearCacheMetrics
from sessionlib.near_cache import NearCache
from sessionlib.scripts import LuaScript
from sessionlib.store import SessionStore
from sessionlib.tracking import InvalidationTracker, StandaloneNodes

pytestmark = pytest.mark.integration

PREFIX = "sessionlib"
LOAD = LuaScript("load")
THROTTLE_MS = 60_000


@dataclass
class RecordingNearCacheObserver:
    requests: Counter = field(default_factory=Counter)
    invalidations: Counter = field(default_factory=Counter)

    def request(self, result: str) -> None:
        self.requests[result] += 1

    def invalidated(self, reason: str, count: int = 1) -> None:
        self.invalidations[reason] += count


async def eventually(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met within {timeout:g}s"
        await asyncio.sleep(0.02)


def key_of(sid: str) -> str:
    return f"{PREFIX}:s:{{{sid}}}"


class Loader:
    """Loads as the store is to with the near cache on: the cache first; on a miss a
    ticket taken before the Redis read, and the read's result handed to `put`."""

    def __init__(self, redis: Redis, cache: NearCache) -> None:
        self.redis = redis
        self.cache = cache

    async def load(self, sid: str) -> tuple[str, dict[bytes, bytes] | None]:
        hit = self.cache.get(sid)
        if hit is not None:
            return "hit", as_dict(hit.fields)
        ticket = self.cache.begin_read()
        reply = await LOAD.run(self.redis, [key_of(sid)], [THROTTLE_MS])
        if len(reply) < 2:
            return "redis", None
        self.cache.put(ticket, sid, reply[1])
        return "redis", as_dict(reply[1])


async def load_until_cached(loader: Loader, sid: str, timeout: float = 20.0) -> None:
    """Load until the session is cached: the invalidation of a write made just before
    (its creation, say) may arrive after the first load and drop that copy."""
    deadline = time.monotonic() + timeout
    while True:
        await loader.load(sid)
        if sid in loader.cache:
            return
        assert time.monotonic() < deadline, f"not cached within {timeout:g}s"
        await asyncio.sleep(0.02)


class Sid(str):
    """A session id that shows only its first characters in assertion messages."""

    def __repr__(self) -> str:
        return repr(redact(self))


def as_dict(flat) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def near_cache(observer=None) -> NearCache:
    return NearCache(
        max_entries=1000,
        max_bytes=1 << 24,
        max_staleness_seconds=60.0,
        observer=observer or RecordingNearCacheObserver(),
    )


@dataclass
class Tracked:
    cache: NearCache
    tracker: InvalidationTracker
    observer: RecordingNearCacheObserver
    loader: Loader
    writer: Redis
    store: SessionStore

    async def cached_session(self, **attributes) -> str:
        """A session created by the store, loaded once so that it is cached."""
        sid = Sid(await self.store.create(attributes or {"cart": ["a"]}))
        await load_until_cached(self.loader, sid)
        return sid


@pytest.fixture
async def tracked(redis_server) -> AsyncIterator[Tracked]:
    observer = RecordingNearCacheObserver()
    cache = near_cache(observer)
    tracker = InvalidationTracker(
        cache,
        StandaloneNodes(RedisSettings(url=redis_server.url)),
        PREFIX,
        health_check_interval_seconds=0.2,
        reconnect_seconds=0.05,
    )
    reader = Redis.from_url(redis_server.url)
    writer = Redis.from_url(redis_server.url)
    store = SessionStore(Redis.from_url(redis_server.url))
    tracker.start()
    try:
        assert await tracker.wait_trusted(10.0), "tracking was never acknowledged"
        yield Tracked(cache, tracker, observer, Loader(reader, cache), writer, store)
    finally:
        await tracker.aclose()
        for client in (reader, writer):
            await client.aclose()
        await store.close()


async def test_a_cached_session_is_served_again_without_reaching_redis(tracked):
    sid = await tracked.cached_session(cart=["a"])
    source, fields = await tracked.loader.load(sid)
    assert source == "hit"
    assert fields[b"cart"] == b'["a"]'


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda r, key: r.hset(key, "cart", '["b"]'), id="HSET"),
        pytest.param(lambda r, key: r.delete(key), id="DEL"),
        pytest.param(lambda r, key: r.expire(key, 300), id="EXPIRE"),
    ],
)
async def test_a_write_by_another_client_invalidates_the_cached_session(tracked, write):
    sid = await tracked.cached_session()
    await write(tracked.writer, key_of(sid))
    await eventually(lambda: sid not in tracked.cache, what="invalidation")
    source, _ = await tracked.loader.load(sid)
    assert source == "redis"
    assert tracked.observer.invalidations["key"] >= 1


async def test_a_logout_on_another_service_reaches_this_process(tracked):
    sid = await tracked.cached_session()
    await tracked.store.delete(sid)  # another service's store: its own connections
    await eventually(lambda: sid not in tracked.cache, what="invalidation")
    assert await tracked.loader.load(sid) == ("redis", None)


async def test_a_read_overtaken_by_an_invalidation_is_not_cached(tracked):
    sid = Sid(await tracked.store.create({"cart": ["old"]}))
    ticket = tracked.cache.begin_read()  # the read starts...
    reply = await LOAD.run(tracked.loader.redis, [key_of(sid)], [THROTTLE_MS])
    seen = tracked.observer.invalidations["key"]
    await tracked.writer.hset(key_of(sid), "cart", '["new"]')  # ...another service writes...
    await eventually(lambda: tracked.observer.invalidations["key"] > seen, what="invalidation")
    assert not tracked.cache.put(ticket, sid, reply[1])  # ...so the old copy is dropped
    assert sid not in tracked.cache
    source, fields = await tracked.loader.load(sid)
    assert (source, fields[b"cart"]) == ("redis", b'["new"]')
    assert sid in tracked.cache


async def test_reads_racing_writes_never_leave_an_old_copy_behind(tracked):
    sid = await tracked.cached_session(n=0)
    last = 300

    async def write() -> None:
        for n in range(1, last + 1):
            await tracked.writer.hset(key_of(sid), "n", str(n))
            await asyncio.sleep(0)

    async def read() -> None:
        while not writing.done():
            await tracked.loader.load(sid)
            await asyncio.sleep(0)  # a hit never awaits: let the writer and channel run

    writing = asyncio.create_task(write())
    await asyncio.gather(writing, *(read() for _ in range(8)))

    async def value() -> bytes:
        return (await tracked.loader.load(sid))[1][b"n"]

    deadline = time.monotonic() + 20.0
    while await value() != str(last).encode():
        assert time.monotonic() < deadline, "an old copy outlived the last write"
        await asyncio.sleep(0.02)
    for _ in range(50):  # and once right, it stays right, from memory or from Redis
        assert await value() == str(last).encode()
    assert tracked.observer.requests["hit"] > 0


async def test_flushall_flushes_the_cache(tracked):
    sid = await tracked.cached_session()
    await tracked.writer.flushall()
    await eventually(lambda: sid not in tracked.cache, what="flush")
    assert tracked.observer.invalidations["flush_all"] == 1


async def test_killing_the_tracking_connection_flushes_and_distrusts_until_it_is_back(tracked):
    sid = await tracked.cached_session()
    [old_id] = tracked.tracker.client_ids
    await tracked.writer.client_kill_filter(_id=old_id)
    await eventually(lambda: tracked.observer.invalidations["channel_lost"] >= 1, what="loss")
    assert sid not in tracked.cache
    await eventually(lambda: tracked.cache.trusted and tracked.tracker.client_ids != [old_id])
    assert tracked.observer.invalidations["reconnect"] == 1
    # The new channel works: cache again, write, invalidated again.
    await load_until_cached(tracked.loader, sid)
    await tracked.writer.hset(key_of(sid), "cart", '["c"]')
    await eventually(lambda: sid not in tracked.cache, what="invalidation after reconnect")


async def test_a_server_restart_flushes_and_tracking_resumes_after_it(tracked, redis_server):
    sid = await tracked.cached_session()
    await asyncio.to_thread(redis_server.restart)
    await eventually(lambda: tracked.observer.invalidations["channel_lost"] >= 1, what="loss")
    assert sid not in tracked.cache
    assert await tracked.tracker.wait_trusted(20.0)
    await load_until_cached(tracked.loader, sid)  # AOF kept the session
    await tracked.writer.hset(key_of(sid), "cart", '["d"]')
    await eventually(lambda: sid not in tracked.cache, what="invalidation after restart")


async def test_a_hung_server_fails_the_health_check_and_flushes(tracked, redis_server):
    sid = await tracked.cached_session()
    redis_server.pause()
    try:
        await eventually(lambda: not tracked.cache.trusted, what="health check failure")
        assert tracked.observer.invalidations["health_check"] >= 1
        assert sid not in tracked.cache
        assert tracked.cache.get(sid) is None
    finally:
        redis_server.resume()
    assert await tracked.tracker.wait_trusted(20.0)


async def test_flush_on_switch_master_flushes_at_once_and_tracking_resumes(tracked):
    sid = await tracked.cached_session()
    tracked.tracker.flush_on_switch_master()
    assert sid not in tracked.cache
    assert not tracked.cache.trusted
    assert tracked.observer.invalidations["switch_master"] == 1
    assert await tracked.tracker.wait_trusted(10.0)
    await load_until_cached(tracked.loader, sid)
    await tracked.writer.hset(key_of(sid), "cart", '["e"]')
    await eventually(lambda: sid not in tracked.cache, what="invalidation after the switch")


async def test_hits_misses_bypasses_and_invalidations_are_counted_in_prometheus(redis_server):
    registry = CollectorRegistry()
    cache = near_cache(NearCacheMetrics(registry))
    tracker = InvalidationTracker(
        cache, StandaloneNodes(RedisSettings(url=redis_server.url)), PREFIX
    )
    redis = Redis.from_url(redis_server.url)
    store = SessionStore(Redis.from_url(redis_server.url))
    loader = Loader(redis, cache)
    try:
        sid = Sid(await store.create({"cart": ["a"]}))
        await loader.load(sid)  # bypass: the channel is not up yet
        tracker.start()
        assert await tracker.wait_trusted(10.0)
        await loader.load(sid)  # miss, then cached (its creation is long reported)
        await loader.load(sid)  # hit
        await redis.hset(key_of(sid), "cart", "[]")
        await eventually(lambda: sid not in cache, what="invalidation")

        def count(name, **labels):
            return registry.get_sample_value(f"sessionlib_near_cache_{name}_total", labels)

        assert count("requests", result="bypass") == 1
        assert count("requests", result="miss") == 1
        assert count("requests", result="hit") == 1
        assert count("invalidations", reason="key") == 1
    finally:
        await tracker.aclose()
        await redis.aclose()
        await store.close()


STORE_ACL = "~sessionlib:* resetchannels -@all +evalsha +eval +hgetall +hset +del +ping +role"


async def tracker_as(user_rules: str, redis_server, writer: Redis) -> InvalidationTracker:
    await writer.acl_setuser("app", enabled=True, passwords=["+pw"], reset=True)
    await writer.execute_command("ACL", "SETUSER", "app", *user_rules.split())
    url = f"redis://app:pw@{redis_server.host}:{redis_server.port}/0"
    tracker = InvalidationTracker(
        near_cache(), StandaloneNodes(RedisSettings(url=url)), PREFIX, reconnect_seconds=0.05
    )
    tracker.start()
    return tracker


async def test_a_user_allowed_client_tracking_and_the_invalidation_channel_is_enough(
    tracked, redis_server
):
    rules = f"{STORE_ACL} +client|id +client|tracking +subscribe &__redis__:invalidate"
    tracker = await tracker_as(rules, redis_server, tracked.writer)
    try:
        assert await tracker.wait_trusted(10.0)
    finally:
        await tracker.aclose()


async def test_a_user_without_the_tracking_permissions_leaves_the_cache_off_and_says_why(
    tracked, redis_server, caplog
):
    tracker = await tracker_as(STORE_ACL, redis_server, tracked.writer)
    try:
        await eventually(lambda: "stays off" in caplog.text, what="the refusal logged")
        assert not tracker.cache.trusted
        assert tracker.cache.get("any") is None
        assert "+client|tracking" in caplog.text and "'app'" in caplog.text
    finally:
        await tracker.aclose()


async def test_in_sentinel_mode_the_channel_follows_a_failover_and_invalidates_again(
    local_topology,
):
    settings = load_settings(
        "dev",
        redis={**local_topology.redis_settings(), "retry": {"deadline_seconds": 20.0}},
    )
    store = SessionStore.from_settings(settings)
    observer = RecordingNearCacheObserver()
    cache = near_cache(observer)
    tracker = InvalidationTracker.from_settings(
        cache,
        settings.redis,
        NearCacheSettings(health_check_interval_seconds=0.2),
        PREFIX,
        redis=store.redis,
    )
    loader = Loader(store.redis, cache)
    tracker.start()
    try:
        assert await tracker.wait_trusted(10.0)
        old_master = local_topology.master_address()
        assert tracker.tracked == [old_master]
        sid = Sid(await store.create({"cart": ["a"]}))
        await load_until_cached(loader, sid)

        local_topology.kill("master")
        await eventually(lambda: sid not in cache and not cache.trusted, what="flush on loss")
        new_master = await asyncio.to_thread(local_topology.wait_for_failover, old_master)
        await eventually(lambda: cache.trusted and tracker.tracked == [new_master], timeout=30)

        loaded = await store.load(sid)  # through the store's retries: the session survived
        await load_until_cached(loader, sid)
        await store.save(loaded, {"cart": ["a", "b"]})  # a write on the new master
        await eventually(lambda: sid not in cache, what="invalidation from the new master")
        _, fields = await loader.load(sid)
        assert fields[b"cart"] == b'["a","b"]'
        assert observer.invalidations["channel_lost"] + observer.invalidations["health_check"]
    finally:
        await tracker.aclose()
        await store.close()


async def test_settings_build_a_tracker_for_each_topology():
    for redis in (
        RedisSettings(url="redis://127.0.0.1:1/0"),
        RedisSettings(mode="sentinel", sentinels=["127.0.0.1:1"]),
        RedisSettings(mode="cluster", cluster_nodes=["127.0.0.1:1"]),
    ):
        settings = Settings(redis=redis)
        tracker = InvalidationTracker.from_settings(
            near_cache(), settings.redis, settings.session.near_cache, PREFIX
        )
        assert not tracker.started
        await tracker.aclose()


async def test_in_cluster_mode_every_master_is_tracked_and_a_failover_is_followed(
    cluster, make_cluster_store
):
    store = make_cluster_store(deadline_seconds=30.0)
    observer = RecordingNearCacheObserver()
    cache = near_cache(observer)
    settings = RedisSettings(mode="cluster", cluster_nodes=cluster.startup_nodes)
    tracker = InvalidationTracker.from_settings(
        cache, settings, NearCacheSettings(health_check_interval_seconds=0.2), PREFIX
    )
    loader = Loader(store.redis, cache)
    tracker.start()
    try:
        assert await tracker.wait_trusted(20.0)
        masters = {f"{node.host}:{node.port}" for node in cluster.live_masters()}
        assert set(tracker.tracked) == masters
        sids = [Sid(await store.create({"n": n})) for n in range(12)]
        owners = {cluster.master_of(key_of(sid)) for sid in sids}
        assert len(owners) > 1, "sessions spread over several masters"
        for sid in sids:
            await load_until_cached(loader, sid)
        for sid in sids:  # another service writes each, on the master of its slot
            await store.save(await store.load(sid), {"n": -1})
        await eventually(lambda: not any(sid in cache for sid in sids), what="invalidations")

        sid = sids[0]
        old = cluster.master_of(key_of(sid))
        cluster.kill(old)
        await eventually(lambda: not cache.trusted, what="flush on loss")
        new = await asyncio.to_thread(cluster.wait_for_failover, old, 30.0)
        await asyncio.to_thread(cluster.restart, old)  # writes need a replica again
        await eventually(
            lambda: cache.trusted and f"{new.host}:{new.port}" in tracker.tracked, timeout=30.0
        )
        loaded = await store.load(sid)
        await load_until_cached(loader, sid)
        await store.save(loaded, {"n": -2})
        await eventually(lambda: sid not in cache, what="invalidation from the new master")
    finally:
        await tracker.aclose()
