"""The session store against a real redis-server: round trips, delta writes, expiry,
regeneration, per-user index and limits."""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from sessionlib.config import SessionSettings
from sessionlib.errors import SessionMoved, SessionTooLarge
from sessionlib.store import SessionStore

pytestmark = pytest.mark.integration


async def commandstats(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


async def test_a_session_lives_in_one_hash_with_metadata_and_json_fields(store):
    sid = await store.create({"cart": [{"sku": "a", "qty": 1}], "theme": "dark"}, user="ann")
    raw = {
        k.decode(): v.decode()
        for k, v in (await store.redis.hgetall(store.session_key(sid))).items()
    }
    assert store.session_key(sid) == f"sessionlib:s:{{{sid}}}"
    assert raw["cart"] == '[{"sku":"a","qty":1}]' and raw["theme"] == '"dark"'
    assert {"_created", "_accessed", "_idle", "_abs", "_ver"} <= set(raw)
    assert raw["_user"] == "ann"
    # Scored by absolute expiry, read from Redis' clock in the same round trip.
    assert abs(await store.redis.zscore(store.user_key("ann"), sid) - int(raw["_abs"])) < 1000


async def test_load_costs_one_round_trip_and_one_top_level_command(store, round_trips):
    sid = await store.create({"a": 1})
    await store.load(sid)  # warm: connection handshake and script cache
    before = await commandstats(store.redis)
    round_trips.reset()
    loaded = await store.load(sid)
    assert round_trips.count == 1
    after = await commandstats(store.redis)
    assert after["evalsha"] - before["evalsha"] == 1
    assert loaded.attributes == {"a": 1}


async def test_save_of_a_delta_costs_one_round_trip_and_writes_only_the_change(store, round_trips):
    sid = await store.create({f"k{i}": "v" * 100 for i in range(10)})
    loaded = await store.load(sid)
    round_trips.reset()
    result = await store.save(loaded, {**loaded.attributes, "k3": "changed"})
    assert round_trips.count == 1
    assert result.written and result.version == 2


async def test_untouched_session_costs_no_write(store, round_trips):
    sid = await store.create({"a": 1})
    loaded = await store.load(sid)
    round_trips.reset()
    assert not (await store.save(loaded, {"a": 1})).written
    assert round_trips.count == 0


async def test_two_writers_of_different_attributes_both_persist(store):
    sid = await store.create({"base": 0})
    gateway_view, cart_view = await asyncio.gather(store.load(sid), store.load(sid))
    await asyncio.gather(
        store.save(gateway_view, {**gateway_view.attributes, "theme": "dark"}),
        store.save(cart_view, {**cart_view.attributes, "cart": ["sku-1"]}),
    )
    assert (await store.load(sid)).attributes == {"base": 0, "theme": "dark", "cart": ["sku-1"]}


async def test_a_save_racing_a_logout_does_not_resurrect_the_session(store):
    sid = await store.create({"a": 1}, user="ann")
    loaded = await store.load(sid)
    await store.delete(sid, user="ann")
    result = await store.save(loaded, {"a": 2})
    assert result.session_gone and not result.written
    assert await store.redis.exists(store.session_key(sid)) == 0
    assert await store.load(sid) is None


async def test_idle_timeout_expires_an_unused_session(make_store):
    store = make_store(idle_timeout_seconds=1, refresh_throttle_seconds=0)
    sid = await store.create({"a": 1})
    await asyncio.sleep(1.3)
    assert await store.load(sid) is None


async def test_access_slides_the_idle_timeout(make_store):
    store = make_store(idle_timeout_seconds=2, refresh_throttle_seconds=0)
    sid = await store.create({"a": 1})
    await asyncio.sleep(1.0)
    assert (await store.load(sid)).ttl_refreshed
    assert await store.redis.pttl(store.session_key(sid)) > 1500


async def test_refresh_is_throttled_so_most_reads_do_not_write(make_store):
    store = make_store(idle_timeout_seconds=3600, refresh_throttle_seconds=60)
    sid = await store.create({"a": 1})
    assert not (await store.load(sid)).ttl_refreshed


async def test_absolute_timeout_wins_over_activity(make_store):
    store = make_store(
        # Equal timeouts (idle may not exceed absolute): the read at 1 s would slide the
        # TTL back to 2 s if only the idle timeout counted.
        idle_timeout_seconds=2,
        absolute_timeout_seconds=2,
        refresh_throttle_seconds=0,
    )
    sid = await store.create({"a": 1})
    assert await store.redis.pttl(store.session_key(sid)) <= 2000
    await asyncio.sleep(1.0)
    await store.load(sid)
    assert await store.redis.pttl(store.session_key(sid)) <= 1100
    await asyncio.sleep(1.3)
    assert await store.load(sid) is None


async def test_regeneration_moves_the_data_and_kills_the_old_id(store, round_trips):
    old = await store.create({"cart": ["a"]})
    loaded = await store.load(old)
    round_trips.reset()
    new = (await store.regenerate(loaded, loaded.attributes, user="ann")).id
    assert round_trips.count == 2, "mark the old id moved, then index + create in one pipeline"
    assert new != old
    with pytest.raises(SessionMoved):
        await store.load(old)
    moved = await store.load(new)
    assert moved.attributes == {"cart": ["a"]} and moved.user == "ann"
    assert await store.sessions_of("ann") == [new]


async def test_sessions_of_a_user_skips_and_cleans_dead_entries(store):
    a = await store.create({}, user="ann")
    b = await store.create({}, user="ann")
    await store.redis.delete(store.session_key(a))  # e.g. expired by idle timeout
    assert await store.sessions_of("ann") == [b]
    assert await store.redis.zrange(store.user_key("ann"), 0, -1) == [b.encode()]


async def test_revoke_all_sessions_of_a_user_can_keep_the_current_one(store):
    current = await store.create({}, user="ann")
    others = [await store.create({}, user="ann") for _ in range(3)]
    bob = await store.create({}, user="bob")
    assert await store.revoke_user("ann", keep=current) == 3
    assert await store.sessions_of("ann") == [current]
    for sid in others:
        assert await store.load(sid) is None
    assert await store.load(bob) is not None


async def test_cap_on_sessions_per_user_evicts_the_oldest(make_store):
    store = make_store(max_sessions_per_user=2)
    first = await store.create({}, user="ann")
    await asyncio.sleep(0.01)  # expiry scores have millisecond resolution
    second = await store.create({}, user="ann")
    third = await store.create({}, user="ann")
    assert await store.load(first) is None
    assert sorted(await store.sessions_of("ann")) == sorted([second, third])


async def test_limits_are_enforced_before_anything_is_written(make_store):
    store = make_store(max_session_bytes=500)
    sid = await store.create({"a": "small"})
    loaded = await store.load(sid)
    with pytest.raises(SessionTooLarge):
        await store.save(loaded, {"a": "x" * 1000})
    assert (await store.load(sid)).attributes == {"a": "small"}


async def test_a_field_that_is_not_json_is_kept_and_not_served(store):
    sid = await store.create({"ok": 1})
    await store.redis.hset(store.session_key(sid), "legacy", b"\x80pickle?")
    loaded = await store.load(sid)
    assert loaded.attributes == {"ok": 1}
    await store.save(loaded, {"ok": 2})
    assert await store.redis.hget(store.session_key(sid), "legacy") == b"\x80pickle?"


async def test_scripts_are_reloaded_after_a_script_cache_flush_without_double_writes(store):
    sid = await store.create({"a": 1}, user="ann")
    loaded = await store.load(sid)
    await store.redis.script_flush()  # what a freshly promoted master looks like
    new = (await store.regenerate(loaded, loaded.attributes)).id
    assert (await store.load(new)).attributes == {"a": 1}
    assert await store.sessions_of("ann") == [new]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(min_size=1, max_size=20), value=json_values)
def test_any_json_compatible_attribute_round_trips_unchanged(redis_server, name, value):
    async def round_trip():
        store = SessionStore(Redis.from_url(redis_server.url), SessionSettings())
        try:
            sid = await store.create({name: value})
            return (await store.load(sid)).attributes
        finally:
            await store.close()

    assert asyncio.run(round_trip()) == {name: value}
