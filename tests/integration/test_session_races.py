"""Session guarantees when requests meet: a login racing a logout or another service's
write, a retry after an unknown outcome, the per-user cap, durability of deletes.
Against a real redis-server; "at once" is made exact with a reply lost in flight or a
request paused between its load and its commit."""

import logging

import pytest

from sessionlib.config import DurabilitySettings, SessionSettings, load_settings
from sessionlib.errors import DurabilityShortfall, SessionMoved
from sessionlib.store import SessionStore
from tests.support.faults import ReplyLosingConnection

pytestmark = pytest.mark.integration


async def session_keys(store: SessionStore) -> list[bytes]:
    return await store.redis.keys(f"{store.settings.key_prefix}:s:*")


# -- 1. no resurrection through regeneration -------------------------------------------


async def test_regenerating_a_session_logged_out_meanwhile_creates_nothing(store):
    sid = await store.create({"secret": "s"}, user="ann")
    loaded = await store.load(sid)  # request R1 has it in hand
    await store.delete(sid, user="ann")  # R2 logs out
    assert await store.regenerate(loaded, loaded.attributes) is None
    assert await session_keys(store) == []
    assert await store.sessions_of("ann") == []


async def test_regenerating_a_revoked_session_creates_nothing(store):
    sid = await store.create({"secret": "s"}, user="ann")
    loaded = await store.load(sid)
    await store.revoke_user("ann")
    assert await store.regenerate(loaded, loaded.attributes, restart_lifetime=False) is None
    assert await session_keys(store) == []


async def test_a_login_racing_a_logout_starts_afresh_with_nothing_of_the_old_session(store):
    sid = await store.create({"secret": "s"}, user="ann")
    loaded = await store.load(sid)
    await store.delete(sid, user="ann")
    fresh = await store.regenerate(loaded, {**loaded.attributes, "theme": "dark"}, user="bob")
    stored = await store.load(fresh.id)
    assert stored.user == "bob"
    assert stored.attributes == {"theme": "dark"}, "only what the login request itself wrote"
    assert await session_keys(store) == [store.session_key(fresh.id).encode()]


# -- 2. nothing written during a login is lost --------------------------------------------


async def test_attributes_another_service_wrote_before_the_login_are_in_the_new_session(
    make_store,
):
    gateway, cart = make_store(), make_store()
    sid = await gateway.create({"theme": "dark"})
    login_request = await gateway.load(sid)
    cart_request = await cart.load(sid)
    await cart.save(cart_request, {**cart_request.attributes, "cart:a:1": 2})
    new = await gateway.regenerate(login_request, login_request.attributes, user="ann")
    assert (await gateway.load(new.id)).attributes == {"theme": "dark", "cart:a:1": 2}
    assert new.attributes == {"theme": "dark", "cart:a:1": 2}, "what a later save diffs against"


async def test_a_write_to_the_old_id_after_the_login_is_refused_and_stored_nowhere(make_store):
    gateway, cart = make_store(), make_store()
    sid = await gateway.create({"theme": "dark"})
    cart_request = await cart.load(sid)
    login_request = await gateway.load(sid)
    new = await gateway.regenerate(login_request, login_request.attributes, user="ann")
    result = await cart.save(cart_request, {**cart_request.attributes, "cart:a:1": 2})
    assert result.moved and not result.written
    assert "cart:a:1" not in (await gateway.load(new.id)).attributes


async def test_the_old_id_grants_no_access_to_the_new_session(store):
    sid = await store.create({"theme": "dark"})
    loaded = await store.load(sid)
    await store.regenerate(loaded, loaded.attributes, user="ann")
    with pytest.raises(SessionMoved):
        await store.load(sid)


async def test_two_logins_racing_on_one_session_never_share_its_data_twice(store):
    sid = await store.create({"cart:a:1": 1})
    tab1, tab2 = await store.load(sid), await store.load(sid)
    first = await store.regenerate(tab1, tab1.attributes, user="ann")
    second = await store.regenerate(tab2, tab2.attributes, user="ann")
    assert (await store.load(first.id)).attributes == {"cart:a:1": 1}
    assert (await store.load(second.id)).attributes == {}, "the session had moved already"


async def test_regenerating_an_id_another_login_moved_is_refused_not_taken_for_a_logout(store):
    sid = await store.create({"theme": "dark"})
    tab1, tab2 = await store.load(sid), await store.load(sid)
    await store.regenerate(tab1, tab1.attributes, user="ann")
    with pytest.raises(SessionMoved):
        await store.regenerate(tab2, tab2.attributes, restart_lifetime=False)


# -- 3. durability covers every write ------------------------------------------------------


def durable(make_store, **session):
    return make_store(
        durability=DurabilitySettings(replicas=1, timeout_ms=50, on_shortfall="fail"), **session
    )


@pytest.mark.parametrize("operation", ["delete", "revoke_user", "cap_eviction"])
async def test_deletes_revocations_and_evictions_wait_for_replicas_like_saves(
    make_store, operation
):
    # The server has no replica: a WAIT that runs comes back short, and `fail` says so.
    plain, store = make_store(max_sessions_per_user=1), durable(make_store, max_sessions_per_user=1)
    sid = await plain.create({}, user="ann")
    with pytest.raises(DurabilityShortfall):
        if operation == "delete":
            await store.delete(sid, user="ann")
        elif operation == "revoke_user":
            await store.revoke_user("ann")
        else:
            await plain.create({}, user="ann")  # over the cap: plain store evicts
            await store._enforce_cap("ann", 0, keep="")


def test_the_prod_profile_refuses_to_acknowledge_a_write_no_replica_has():
    settings = load_settings(
        "prod",
        redis={
            "password": "p",
            "sentinel_password": "p",
            "sentinels": ["h:1"],
            "tls": {"enabled": True},
        },
    )
    assert settings.session.durability.on_shortfall == "fail"


async def test_durability_against_a_redis_without_replicas_is_told_once_at_start(
    make_store, caplog
):
    store = durable(make_store)
    with caplog.at_level(logging.WARNING, logger="sessionlib.store"):
        await store.load_scripts()
        await store.load_scripts()
    lines = [r.getMessage() for r in caplog.records if r.name == "sessionlib.store"]
    assert len(lines) == 1
    assert "has 0" in lines[0] and "SESSIONLIB_SESSION__DURABILITY__REPLICAS" in lines[0]


# -- 4. lifetimes across regeneration -------------------------------------------------------


async def test_regenerating_the_id_keeps_the_absolute_expiry_and_a_login_restarts_it(store):
    sid = await store.create({"a": 1})
    loaded = await store.load(sid)
    same_life = await store.regenerate(loaded, loaded.attributes, restart_lifetime=False)
    assert same_life.absolute_expiry_ms == loaded.absolute_expiry_ms
    assert same_life.created_ms == loaded.created_ms
    again = await store.load(same_life.id)
    login = await store.regenerate(again, again.attributes, user="ann")
    assert login.absolute_expiry_ms > loaded.absolute_expiry_ms


async def test_a_login_as_another_user_carries_nothing_of_the_previous_user(store):
    sid = await store.create({"ann_secret": "s"}, user="ann")
    loaded = await store.load(sid)
    bob = await store.regenerate(loaded, {**loaded.attributes, "lang": "en"}, user="bob")
    assert (await store.load(bob.id)).attributes == {"lang": "en"}
    assert await store.sessions_of("ann") == []


async def test_an_anonymous_session_keeps_its_attributes_through_the_login(store):
    sid = await store.create({"cart:a:1": 1})
    loaded = await store.load(sid)
    ann = await store.regenerate(loaded, loaded.attributes, user="ann")
    assert (await store.load(ann.id)).attributes == {"cart:a:1": 1}


# -- 5. per-user cap and index ---------------------------------------------------------------


async def test_regenerating_a_session_never_evicts_another_live_one(make_store):
    store = make_store(max_sessions_per_user=2)
    q = await store.create({}, user="ann")  # the older one
    p = await store.create({}, user="ann")
    loaded_p = await store.load(p)
    new_p = await store.regenerate(loaded_p, {}, restart_lifetime=False)
    assert await store.load(q) is not None
    assert sorted(await store.sessions_of("ann")) == sorted([q, new_p.id])


async def test_dead_ids_are_pruned_before_the_cap_is_counted(make_store):
    store = make_store(max_sessions_per_user=2)
    live = await store.create({}, user="ann")
    dead = await store.create({}, user="ann")  # newer, then expired by idle timeout
    await store.redis.delete(store.session_key(dead))
    third = await store.create({}, user="ann")
    assert await store.load(live) is not None, "a live session was evicted for a dead one"
    assert sorted(await store.sessions_of("ann")) == sorted([live, third])


async def test_a_login_whose_reply_was_lost_still_deletes_the_session_it_evicted(lossy_store):
    store = lossy_store
    store.settings = SessionSettings(max_sessions_per_user=1)
    first = await store.create({}, user="ann")

    async def nothing() -> None:
        pass

    real_call = store._call

    async def losing_the_first_reply(operation, attempt, **kwargs):
        if operation == "create":
            ReplyLosingConnection.lose_next_reply(nothing)
        return await real_call(operation, attempt, **kwargs)

    store._call = losing_the_first_reply
    second = await store.create({}, user="ann")  # its first reply is lost, then retried
    assert await store.load(first) is None, "evicted from the index but still alive"
    assert await store.sessions_of("ann") == [second]


# -- 6. a retried save never overwrites newer data -------------------------------------------


async def test_a_save_retried_after_a_lost_reply_does_not_undo_a_newer_write(
    lossy_store, make_store
):
    other_service = make_store()
    sid = await other_service.create({"qty": 1})
    mine = await lossy_store.load(sid)

    async def other_service_writes_meanwhile() -> None:
        theirs = await other_service.load(sid)
        await other_service.save(theirs, {"qty": 3})

    ReplyLosingConnection.lose_next_reply(other_service_writes_meanwhile)
    result = await lossy_store.save(mine, {"qty": 2})
    assert result.written
    assert (await other_service.load(sid)).attributes == {"qty": 3}
