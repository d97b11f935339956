"""The session store in `redis.mode: cluster` against a real local Redis Cluster (three
masters, a replica each): every store operation keeps its meaning, and a killed master's
slots come back through the store's own retry layer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.crc import key_slot

import sessionlib.store as store_module
from deploy.local.cluster import LocalCluster
from sessionlib.errors import SessionMoved, SessionStoreRefused, SessionStoreUnavailable
from sessionlib.store import SessionStore

pytestmark = pytest.mark.integration

FreePorts = Callable[[int], list[int]]
# A failover takes about 3 s with cluster-node-timeout 1000; a loaded machine takes longer.
FAILOVER_TIMEOUT = 30.0


@pytest.fixture
def make_store(make_cluster_store: Callable[..., SessionStore]) -> Callable[..., SessionStore]:
    return make_cluster_store


def master_holding(cluster: LocalCluster, key: str) -> dict[str, str]:
    """The hash at `key` as the master that owns its slot holds it (no redirection)."""
    with cluster.client(cluster.master_of(key)) as client:
        return dict(client.hgetall(key))


async def test_a_session_lives_on_the_master_of_its_slot_and_two_writers_deltas_both_stay(
    make_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    store = make_store()
    sid = await store.create({"theme": "dark"})
    first, second = await store.load(sid), await store.load(sid)
    assert first is not None and second is not None

    await store.save(first, {**first.attributes, "cart": ["sku-1"]})
    await store.save(second, {**second.attributes, "locale": "fr"})

    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.attributes == {"theme": "dark", "cart": ["sku-1"], "locale": "fr"}
    held = master_holding(cluster, store.session_key(sid))
    assert {"theme", "cart", "locale"} <= held.keys()


async def test_a_ready_cluster_pings_and_one_no_startup_node_answers_is_unavailable(
    make_store: Callable[..., SessionStore], free_ports: FreePorts
) -> None:
    nowhere = [f"127.0.0.1:{port}" for port in free_ports(2)]

    await make_store().ping()
    with pytest.raises(SessionStoreUnavailable, match="Error 111 connecting"):
        await make_store(deadline_seconds=0.3, nodes=nowhere).load("any")


async def test_a_wrong_password_is_refused_in_one_line_naming_the_cluster_and_the_user(
    make_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    store = make_store(username="intruder", password="wrong")

    with pytest.raises(SessionStoreRefused) as refused:
        await store.load("any")

    assert cluster.startup_nodes[0] in str(refused.value)
    assert "intruder" in str(refused.value)


async def test_a_logout_wins_over_a_save_that_loaded_before_it(
    make_store: Callable[..., SessionStore],
) -> None:
    store = make_store()
    sid = await store.create({"cart": ["sku-1"]})
    loaded = await store.load(sid)
    assert loaded is not None

    await store.delete(sid)
    late = await store.save(loaded, {"cart": ["sku-1", "sku-2"]})

    assert late.session_gone and not late.written
    assert await store.load(sid) is None


async def test_a_login_keeps_the_data_under_a_new_id_in_another_slot_and_refuses_the_old_id(
    make_store: Callable[..., SessionStore],
) -> None:
    store = make_store()
    old_id = await store.create({"cart": ["sku-1"]})
    anonymous = await store.load(old_id)
    assert anonymous is not None

    logged_in = await store.regenerate(anonymous, anonymous.attributes, user="alice")

    assert logged_in is not None
    loaded = await store.load(logged_in.id)
    assert loaded is not None and loaded.user == "alice"
    assert loaded.attributes == {"cart": ["sku-1"]}
    with pytest.raises(SessionMoved):
        await store.load(old_id)
    assert await store.sessions_of("alice") == [logged_in.id]
    session_slot = key_slot(store.session_key(logged_in.id).encode())
    assert session_slot != key_slot(store.user_key("alice").encode())


async def test_sessions_of_and_revoke_user_reach_sessions_on_every_master(
    make_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    store = make_store()
    ids = [await store.create({"n": n}, user="bob") for n in range(12)]
    masters = {cluster.master_of(store.session_key(sid)) for sid in ids}

    found = await store.sessions_of("bob")
    revoked = await store.revoke_user("bob", keep=ids[0])

    assert len(masters) > 1, "12 random ids all in one third of the slots"
    assert sorted(found) == sorted(ids)
    assert revoked == 11
    assert await store.sessions_of("bob") == [ids[0]]
    assert [await store.load(sid) for sid in ids[1:]] == [None] * 11


async def test_a_crash_between_the_index_and_the_new_session_leaves_only_a_dead_index_entry(
    make_store: Callable[..., SessionStore],
    cluster: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = make_store()
    old_id = await store.create({"cart": ["sku-1"]})
    anonymous = await store.load(old_id)
    assert anonymous is not None
    written_ids: list[str] = []

    def crash_before_the_session_is_written(pipe: Any, keys: Any, args: Any) -> None:
        written_ids.append(keys[0])
        raise RuntimeError("the process died between the two steps")

    monkeypatch.setattr(store_module._CREATE, "queue", crash_before_the_session_is_written)
    with pytest.raises(RuntimeError, match="died"):
        await store.regenerate(anonymous, anonymous.attributes, user="carol")
    monkeypatch.undo()

    new_key = written_ids[0]
    new_id = new_key[new_key.index("{") + 1 : -1]
    with cluster.client(cluster.master_of(store.user_key("carol"))) as client:
        indexed = client.zrange(store.user_key("carol"), 0, -1)
    assert indexed == [new_id], "the index is written first"
    assert master_holding(cluster, new_key) == {}, "no live session the index misses"
    assert await store.sessions_of("carol") == []  # the dead entry is pruned on the way
    with cluster.client(cluster.master_of(store.user_key("carol"))) as client:
        assert client.zrange(store.user_key("carol"), 0, -1) == []


async def test_killing_the_master_of_a_session_recovers_loads_and_saves_and_refreshes_the_slots(
    make_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    registry = CollectorRegistry()
    store = make_store(registry, deadline_seconds=FAILOVER_TIMEOUT)
    sid = await store.create({"cart": ["sku-1"]})
    key = store.session_key(sid)
    old = cluster.master_of(key)
    with cluster.client(old) as client:
        client.execute_command("WAIT", "1", "1000")  # the replica has the session
    refreshes_before = registry.get_sample_value("sessionlib_cluster_topology_refreshes_total")

    cluster.kill(old)
    loaded = await store.load(sid)  # retried until the replica is promoted
    await asyncio.to_thread(cluster.wait_for_failover, old, FAILOVER_TIMEOUT)
    assert loaded is not None
    # min-replicas-to-write 1: the new master refuses writes (NOREPLICAS) until the old
    # one is back as its replica; the save keeps retrying meanwhile.
    save = asyncio.create_task(store.save(loaded, {"cart": ["sku-1", "sku-2"]}))
    await asyncio.sleep(0.5)
    assert not save.done(), "a write without a replica must wait, not succeed"
    await asyncio.to_thread(cluster.restart, old)
    saved = await save

    assert saved.written
    reloaded = await store.load(sid)
    assert reloaded is not None and reloaded.attributes == {"cart": ["sku-1", "sku-2"]}
    assert cluster.master_of(key) != old
    refreshes = registry.get_sample_value("sessionlib_cluster_topology_refreshes_total")
    assert refreshes is not None and refreshes_before is not None
    assert refreshes > refreshes_before
    retried = {
        reason: registry.get_sample_value(
            "sessionlib_store_retries_total", {"operation": operation, "reason": reason}
        )
        for operation, reason in (("load", "connection"), ("save", "noreplicas"))
    }
    assert retried["connection"] and retried["noreplicas"], retried


async def test_after_a_failover_a_login_indexes_the_user_on_the_promoted_master(
    make_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    """A promoted replica has no scripts cached. redis-py's `script_load` reaches the
    masters it knows by type, and after a reload it may still type the promoted node a
    replica: the index step must get its script onto that node itself."""
    store = make_store(deadline_seconds=FAILOVER_TIMEOUT)
    first = await store.create({"cart": ["sku-1"]}, user="erin")
    old = cluster.master_of(store.user_key("erin"))
    with cluster.client(old) as client:
        client.execute_command("WAIT", "1", "1000")

    cluster.kill(old)
    during = await store.sessions_of("erin")  # retried until the map is reloaded
    await asyncio.to_thread(cluster.wait_for_failover, old, FAILOVER_TIMEOUT)
    await asyncio.to_thread(cluster.restart, old)  # its replica again: writes are taken
    await asyncio.to_thread(cluster.wait_for_replica, old, FAILOVER_TIMEOUT)
    second = await store.create({"cart": ["sku-2"]}, user="erin")

    assert during == [first]
    assert sorted(await store.sessions_of("erin")) == sorted([first, second])
