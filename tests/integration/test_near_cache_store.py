"""The near cache as the store uses it (session.near_cache), on real Redis: a cached read
costs no round trip, another service's write or logout reaches this process through Redis'
invalidation, this process reads its own writes at once, a sliding expiry still reaches
Redis, a gap in the channel stops hits, and while no master answers a cached session is
served flagged stale."""

import asyncio
import time

import pytest
from redis.asyncio import Redis

from sessionlib.config import load_settings
from sessionlib.store import SessionStore

pytestmark = pytest.mark.integration

NEAR_CACHE = {"enabled": True, "health_check_interval_seconds": 0.5}


def near_cached_store(url: str, **session) -> SessionStore:
    settings = load_settings(
        "dev",
        redis={"mode": "standalone", "url": url},
        session={"near_cache": NEAR_CACHE, **session},
    )
    return SessionStore.from_settings(settings)


async def loads_served_by_redis(redis: Redis) -> int:
    """How many times the load script (or any script) ran on the server so far."""
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


async def until_cached(store: SessionStore, session_id: str, timeout: float = 20.0) -> None:
    """Load until a load is answered from memory: the first loads only fill the cache
    (and the channel must be acknowledged first)."""
    assert store.near_cache is not None
    deadline = time.monotonic() + timeout
    while session_id not in store.near_cache.cache or not store.near_cache.cache.trusted:
        assert time.monotonic() < deadline, "the session was never cached"
        await store.load(session_id)
        await asyncio.sleep(0.02)


async def until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        await asyncio.sleep(0.01)


@pytest.fixture
async def two_services(redis_server):
    """Two stores on one Redis, as gateway and cart are: both with the near cache on."""
    here = near_cached_store(redis_server.url)
    there = near_cached_store(redis_server.url)
    yield here, there
    await here.close()
    await there.close()


async def test_a_cached_session_is_read_again_without_a_round_trip(two_services):
    here, _ = two_services
    session_id = await here.create({"cart": ["tea"]})
    await until_cached(here, session_id)
    before = await loads_served_by_redis(here.redis)

    loaded = [await here.load(session_id) for _ in range(20)]

    assert await loads_served_by_redis(here.redis) == before
    assert all(s is not None and s.attributes == {"cart": ["tea"]} for s in loaded)
    assert not any(s.stale for s in loaded if s is not None)


async def test_another_services_write_reaches_this_process_through_redis(two_services):
    here, there = two_services
    session_id = await here.create({"cart": ["tea"]})
    await until_cached(here, session_id)

    theirs = await there.load(session_id)
    assert theirs is not None
    await there.save(theirs, {"cart": ["tea", "cup"]})

    async def seen() -> bool:
        loaded = await here.load(session_id)
        return loaded is not None and loaded.attributes == {"cart": ["tea", "cup"]}

    await until(seen, what="the other service's write seen here")


async def test_a_logout_on_another_service_is_refused_here(two_services):
    here, there = two_services
    session_id = await here.create({"user_id": "kim"}, user="kim")
    await until_cached(here, session_id)

    await there.delete(session_id, user="kim")

    async def refused() -> bool:
        return await here.load(session_id) is None

    await until(refused, what="the logout seen here")


async def test_a_revocation_on_another_service_is_refused_here(two_services):
    here, there = two_services
    sessions = [await here.create({"n": n}, user="lee") for n in range(3)]
    for session_id in sessions:
        await until_cached(here, session_id)

    assert await there.revoke_user("lee") == 3

    async def all_refused() -> bool:
        return all([await here.load(s) is None for s in sessions])

    await until(all_refused, what="every revoked session refused here")


async def test_this_process_reads_its_own_write_at_once(two_services):
    here, _ = two_services
    session_id = await here.create({"cart": []})
    await until_cached(here, session_id)
    loaded = await here.load(session_id)
    assert loaded is not None

    await here.save(loaded, {"cart": ["tea"]})
    after_save = await here.load(session_id)
    await here.delete(session_id)
    after_logout = await here.load(session_id)

    assert after_save is not None and after_save.attributes == {"cart": ["tea"]}
    assert after_logout is None


async def test_a_login_regenerating_a_cached_session_leaves_the_old_id_worthless(two_services):
    here, _ = two_services
    session_id = await here.create({"cart": ["tea"]})
    await until_cached(here, session_id)
    loaded = await here.load(session_id)
    assert loaded is not None

    new = await here.regenerate(loaded, {"cart": ["tea"]}, user="kim")

    assert new is not None and new.id != session_id
    with pytest.raises(Exception, match="replaced by a login"):
        await here.load(session_id)


async def test_a_cached_session_still_slides_its_ttl_in_redis(redis_server):
    store = near_cached_store(redis_server.url, idle_timeout_seconds=8, refresh_throttle_seconds=1)
    try:
        session_id = await store.create({"cart": []})
        key = store.session_key(session_id)
        await until_cached(store, session_id)
        pttl_then = await store.redis.pttl(key)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert await store.load(session_id) is not None
            await asyncio.sleep(0.05)
        # Served from memory in between, but the throttle's slide still reached Redis.
        assert await store.redis.pttl(key) > pttl_then - 1000
        assert await store.redis.pttl(key) > 8000 - 1500
    finally:
        await store.close()


async def test_a_killed_invalidation_channel_stops_hits_until_it_is_back(two_services):
    here, there = two_services
    session_id = await here.create({"cart": ["tea"]})
    await until_cached(here, session_id)
    assert here.near_cache is not None
    channel_ids = here.near_cache.client_ids

    for client_id in channel_ids:
        await there.redis.execute_command("CLIENT", "KILL", "ID", client_id)
    theirs = await there.load(session_id)
    assert theirs is not None
    await there.save(theirs, {"cart": ["cup"]})

    # Whatever the gap swallowed, the next answer is Redis', and hits resume after it.
    loaded = await here.load(session_id)
    assert loaded is not None and loaded.attributes == {"cart": ["cup"]}
    await until_cached(here, session_id)
    assert here.near_cache.client_ids != channel_ids


async def test_while_no_master_answers_a_cached_session_is_served_flagged_stale(local_topology):
    settings = load_settings(
        "dev",
        redis=local_topology.redis_settings(),
        session={"near_cache": NEAR_CACHE, "stale_read_after_seconds": 0.5},
    )
    store = SessionStore.from_settings(settings)
    try:
        session_id = await store.create({"cart": ["tea"]})
        never_cached = await store.create({"cart": ["cup"]})
        await until_cached(store, session_id)

        local_topology.kill("master")
        assert store.near_cache is not None
        cache = store.near_cache.cache

        async def channel_lost() -> bool:
            return not cache.trusted

        # Until the health check misses a pong the entry is still served as current.
        await until(channel_lost, what="the dead master's channel noticed")
        stale = await store.load(session_id)

        assert stale is not None and stale.stale
        assert stale.attributes == {"cart": ["tea"]}

        # Not cached: it waits for the new master like any load, and is then current.
        fresh = await store.load(never_cached)
        assert fresh is not None and not fresh.stale

        async def current_again() -> bool:
            loaded = await store.load(session_id)
            return loaded is not None and not loaded.stale

        await until(current_again, timeout=30, what="a current read after the failover")
    finally:
        await store.close()


async def test_a_session_redis_evicts_under_memory_pressure_is_dropped_here_too(redis_server):
    # Sessions read from memory never touch their key in Redis, so under maxmemory with an
    # LRU policy they are the first to go; Redis' invalidation must take them from here too.
    store = near_cached_store(redis_server.url)
    try:
        session_id = await store.create({"cart": ["tea"]})
        await until_cached(store, session_id)
        used = int((await store.redis.info("memory"))["used_memory"])
        await store.redis.config_set("maxmemory-policy", "allkeys-lru")
        await store.redis.config_set("maxmemory", used + 256 * 1024)
        filler = "x" * 1024
        for n in range(2048):
            await store.redis.set(f"filler:{n}", filler)
            if not await store.redis.exists(store.session_key(session_id)):
                break
        assert not await store.redis.exists(store.session_key(session_id)), "never evicted"

        async def dropped_here() -> bool:
            return await store.load(session_id) is None

        await until(dropped_here, what="the evicted session refused here")
    finally:
        await store.redis.config_set("maxmemory", 0)
        await store.close()
