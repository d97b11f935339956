"""Durability (`WAIT`) and connection upkeep in `redis.mode: cluster`, against a real local
Redis Cluster: each write waits for the replica of the master that owns its key, on the
connection the write went out on, and a master killed under load is usable again once it
is master again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from deploy.local.cluster import LocalCluster
from deploy.local.spec import Node
from sessionlib.config import DurabilitySettings, SessionSettings
from sessionlib.errors import DurabilityShortfall, SessionStoreUnavailable
from sessionlib.resilience import RetryPolicy
from sessionlib.store import SessionStore

pytestmark = pytest.mark.integration

FAILOVER_TIMEOUT = 30.0
WAIT_MS = 300


def durable(on_shortfall: str = "fail") -> SessionSettings:
    return SessionSettings(
        durability=DurabilitySettings(replicas=1, timeout_ms=WAIT_MS, on_shortfall=on_shortfall)
    )


def replica_of(cluster: LocalCluster, master: Node) -> Node:
    group = cluster.spec.group(master)
    return next(n for n in cluster.nodes if cluster.spec.group(n) == group and n != master)


def shortfalls(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("sessionlib_durability_shortfall_total") or 0.0


async def test_a_save_waits_for_the_replica_of_its_own_master_and_fails_when_that_one_lags(
    make_cluster_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    registry = CollectorRegistry()
    store = make_cluster_store(registry, session=durable())
    sid = await store.create({"cart": ["sku-1"]})
    loaded = await store.load(sid)
    assert loaded is not None
    master = cluster.master_of(store.session_key(sid))
    assert shortfalls(registry) == 0, "both shards' replicas answered the login's WAITs"

    # Only this master's replica stops: a WAIT sent to any other node, or on another
    # connection than the write's, would still count one replica.
    cluster.pause(replica_of(cluster, master))
    try:
        with pytest.raises(DurabilityShortfall):
            await store.save(loaded, {"cart": ["sku-1", "sku-2"]})
    finally:
        cluster.resume(replica_of(cluster, master))

    assert shortfalls(registry) == 1
    again = await store.load(sid)
    assert again is not None
    assert (await store.save(again, {"cart": ["sku-1", "sku-3"]})).written
    assert shortfalls(registry) == 1


async def test_a_login_waits_on_both_shards_it_writes_to(
    make_cluster_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    """The user index and the session live in different slots: each write is waited for
    on its own master, so a lagging replica behind the index alone is noticed."""
    registry = CollectorRegistry()
    store = make_cluster_store(registry, session=durable(on_shortfall="accept"))
    index_master = cluster.master_of(store.user_key("dora"))
    anonymous_id = await store.create({"cart": ["sku-1"]})
    for _ in range(50):  # a session in another shard than dora's index
        if cluster.master_of(store.session_key(anonymous_id)) != index_master:
            break
        anonymous_id = await store.create({"cart": ["sku-1"]})
    anonymous = await store.load(anonymous_id)
    assert anonymous is not None

    cluster.pause(replica_of(cluster, index_master))
    try:
        logged_in = await store.regenerate(anonymous, anonymous.attributes, user="dora")
    finally:
        cluster.resume(replica_of(cluster, index_master))

    assert logged_in is not None
    assert shortfalls(registry) == 1, "on_shortfall=accept counts the short write"
    assert await store.sessions_of("dora") == [logged_in.id]


async def test_a_master_that_was_down_under_failing_durable_writes_takes_writes_once_back(
    make_cluster_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    """A durable write and its WAIT share a connection of the owning master, taken from
    that node's pool by sessionlib itself: a send that fails while the master is down
    must give it back (redis-py's own pipeline keeps it, and a pool of two runs dry)."""
    store = make_cluster_store(deadline_seconds=0.3, max_connections=2, session=durable())
    sid = await store.create({"cart": ["sku-1"]})
    loaded = await store.load(sid)
    assert loaded is not None
    master = cluster.master_of(store.session_key(sid))
    with cluster.client(replica_of(cluster, master)) as client:
        client.config_set("cluster-replica-no-failover", "yes")  # the master stays master

    cluster.kill(master)
    failed = 0
    for n in range(6):  # every attempt fails to connect to the dead master
        try:
            await store.save(loaded, {"cart": ["sku-1"], "try": n})
        except SessionStoreUnavailable:
            failed += 1
    pool = store.redis.get_node(master.host, master.port)
    assert pool is not None
    kept_out = len(pool._connections) - len(pool._free)
    await asyncio.to_thread(cluster.restart, master)
    await asyncio.to_thread(cluster.wait_for_health, FAILOVER_TIMEOUT)

    store.retry = RetryPolicy(deadline_seconds=FAILOVER_TIMEOUT)
    saved = await store.save(loaded, {"cart": ["sku-1", "sku-2"]})

    assert failed == 6
    assert kept_out == 0, "every failed send gave its connection back"
    assert cluster.master_of(store.session_key(sid)) == master
    assert saved.written


async def test_while_the_master_of_its_slot_is_paused_a_load_is_served_stale_by_its_replica(
    make_cluster_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    stale_reads = SessionSettings(stale_reads_during_failover=True, stale_read_after_seconds=0.3)
    store = make_cluster_store(deadline_seconds=FAILOVER_TIMEOUT, session=stale_reads)
    sid = await store.create({"cart": ["sku-1"]})
    master = cluster.master_of(store.session_key(sid))
    with cluster.client(master) as client:
        client.execute_command("WAIT", "1", "1000")  # the replica has the session

    cluster.pause(master)
    try:
        loaded = await store.load(sid)
    finally:
        cluster.resume(master)

    assert loaded is not None and loaded.stale
    assert loaded.attributes == {"cart": ["sku-1"]}
    fresh = await store.load(sid)
    assert fresh is not None and fresh.attributes == {"cart": ["sku-1"]}


async def test_a_stale_read_finds_the_slots_replica_before_gossip_says_it_replicated_anything(
    make_cluster_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    """On a fresh cluster no node's CLUSTER SLOTS names a replica yet (each learns a
    replica's offset by gossip, and it is 0 until the first write), so a read asked of the
    replicas right after a first write to the slot found none and waited for the master."""
    store = make_cluster_store(session=SessionSettings(stale_reads_during_failover=True))
    key = store.session_key("never-written")
    assert await store.load("never-written") is None  # the slot map is loaded
    assert store.replicas is not None

    copies = await store.replicas.read_hash(key)

    assert copies == [{}], "the slot's one replica answered (it holds no such session)"


async def test_with_the_shard_of_slot_zero_lost_the_other_shards_keep_taking_durable_writes(
    make_cluster_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    """A lost shard stays in the slot map. redis-py reads its command table from the map's
    first master with every reload: the master of slot 0, here the lost one, so every
    reload (and every shard) would fail until it is back."""
    store = make_cluster_store(deadline_seconds=2.0, session=durable())
    lost_master = cluster.master_of(0)
    ids = [await store.create({"n": n}) for n in range(12)]
    lost_ids = [i for i in ids if cluster.master_of(store.session_key(i)) == lost_master]
    live_ids = [i for i in ids if i not in lost_ids]
    assert lost_ids and live_ids, "12 random ids all on one side"

    cluster.kill(replica_of(cluster, lost_master))
    cluster.kill(lost_master)
    with pytest.raises(SessionStoreUnavailable):  # a broken link: the map is reloaded
        await store.delete(lost_ids[0])

    saved = []
    for sid in live_ids:
        loaded = await store.load(sid)
        assert loaded is not None
        saved.append(await store.save(loaded, {**loaded.attributes, "after": "loss"}))

    assert all(result.written for result in saved)


async def test_a_login_waits_for_the_moved_mark_on_the_old_sessions_own_shard(
    make_cluster_store: Callable[..., SessionStore], cluster: LocalCluster
) -> None:
    """The old id's "moved" mark lives on the old session's master, often neither the
    index's nor the new session's: unless it is waited for there, a failover of that
    master can bring the old id back to life."""
    registry = CollectorRegistry()
    store = make_cluster_store(registry, session=durable(on_shortfall="accept"))
    index_master = cluster.master_of(store.user_key("fay"))
    anonymous_id = await store.create({"cart": ["sku-1"]})
    while cluster.master_of(store.session_key(anonymous_id)) == index_master:
        anonymous_id = await store.create({"cart": ["sku-1"]})
    old_master = cluster.master_of(store.session_key(anonymous_id))
    anonymous = await store.load(anonymous_id)
    assert anonymous is not None

    cluster.pause(replica_of(cluster, old_master))
    try:
        logged_in = await store.regenerate(anonymous, anonymous.attributes, user="fay")
    finally:
        cluster.resume(replica_of(cluster, old_master))

    assert logged_in is not None
    new_on_old_shard = cluster.master_of(store.session_key(logged_in.id)) == old_master
    assert shortfalls(registry) == 1 + new_on_old_shard, "the mark's WAIT saw the lag"
