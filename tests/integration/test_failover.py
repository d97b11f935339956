"""Through the real Sentinel topology: the store finds the master, follows it through a
failover by itself, never writes to a demoted master, and honours durability."""

import asyncio
import time

import httpx
import pytest
from redis import exceptions as redis_errors

from sessionlib.config import load_settings
from sessionlib.errors import DurabilityShortfall, SessionStoreUnavailable
from sessionlib.resilience import RetryPolicy
from sessionlib.store import SessionStore
from tests.support.observers import RecordingObserver

pytestmark = pytest.mark.integration


def sentinel_store(topology, observer=None, sentinels=None, **session) -> SessionStore:
    known = topology.sentinel_addresses if sentinels is None else sentinels
    settings = load_settings(
        "dev",
        redis={
            "mode": "sentinel",
            "sentinels": [f"{h}:{p}" for h, p in known],
            "master_name": topology.master_name,
            "retry": {"deadline_seconds": 15.0},
        },
        session=session,
    )
    return SessionStore.from_settings(settings, observer=observer)


async def eventually(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_the_store_works_through_sentinel_and_reports_the_master(shared_topology):
    observer = RecordingObserver()
    store = sentinel_store(shared_topology, observer)
    try:
        sid = await store.create({"cart": ["a"]}, user="ann")
        loaded = await store.load(sid)
        await store.save(loaded, {"cart": ["a", "b"]})
        assert (await store.load(sid)).attributes == {"cart": ["a", "b"]}
        await eventually(lambda: observer.masters)
        assert observer.masters[0] == (shared_topology.master_address(), False)
    finally:
        await store.close()


async def test_after_the_master_is_killed_writes_resume_on_the_new_master(local_topology):
    observer = RecordingObserver()
    store = sentinel_store(
        local_topology, observer, durability={"replicas": 1, "on_shortfall": "fail"}
    )
    try:
        sid = await store.create({"n": 0})
        await eventually(lambda: observer.masters)
        old_master = local_topology.master_address()
        local_topology.kill("master")
        loaded = await store.load(sid)  # retried until Sentinel has promoted a replica
        await store.save(loaded, {"n": 1})
        new_master = local_topology.wait_for_failover(old_master)
        assert new_master != old_master
        assert (await store.load(sid)).attributes == {"n": 1}
        await eventually(lambda: (new_master, True) in observer.masters)
        assert sum(observer.retries.values()) >= 1
        assert all(reason != "unknown" for _, reason in observer.retries)
    finally:
        await store.close()


async def test_the_watcher_switches_to_the_new_master_without_waiting_for_an_error(local_topology):
    observer = RecordingObserver()
    store = sentinel_store(local_topology, observer)
    try:
        await store.create({})
        await eventually(lambda: observer.masters)
        old_master = local_topology.master_address()
        local_topology.kill("master")
        new_master = local_topology.wait_for_failover(old_master)
        # No store call in between: only +switch-master can have told the watcher.
        await eventually(lambda: store.watcher.current == tuple_of(new_master))
        assert (new_master, True) in observer.masters
    finally:
        await store.close()


def tuple_of(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def test_a_paused_master_that_comes_back_is_never_written_to(local_topology):
    store = sentinel_store(local_topology, durability={"replicas": 1, "on_shortfall": "fail"})
    try:
        sid = await store.create({"n": 0})
        old_master = local_topology.master_address()
        local_topology.pause("master")
        new_master = local_topology.wait_for_failover(old_master)
        local_topology.resume(old_master)
        for n in range(1, 20):
            await store.save(await store.load(sid), {"n": n})
        local_topology.wait_for_replica(old_master)
        assert (await store.load(sid)).attributes == {"n": 19}
        with local_topology.client(new_master) as master:
            assert master.hget(store.session_key(sid), "n") == "19"
    finally:
        await store.close()


async def test_a_connection_to_a_node_that_is_not_master_is_refused(shared_topology):
    store = sentinel_store(shared_topology)
    replica = next(
        n for n in shared_topology.redis_nodes if n.address != shared_topology.master_address()
    )
    pool = store.redis.connection_pool

    async def sentinel_names_a_replica():
        return replica.host, replica.port

    pool.get_master_address = sentinel_names_a_replica  # a Sentinel answer that lags behind
    # Every attempt is refused until the deadline; the deadline's error names the last
    # refusal (room for a loaded machine, where the first attempt alone can take 0.3 s).
    store.retry = RetryPolicy(deadline_seconds=2.0)
    try:
        with pytest.raises(SessionStoreUnavailable, match="not a master"):
            await store.create({})
    finally:
        await store.close()


async def test_a_read_from_a_replica_that_sentinel_names_as_master_is_refused(shared_topology):
    # A replica answers reads without complaint: only the ROLE check on connect stops a
    # client from serving stale sessions from it, so this fails when that check is skipped.
    store = sentinel_store(shared_topology)
    replica = next(
        n for n in shared_topology.redis_nodes if n.address != shared_topology.master_address()
    )

    async def sentinel_names_a_replica():
        return replica.host, replica.port

    store.redis.connection_pool.get_master_address = sentinel_names_a_replica
    try:
        with pytest.raises(redis_errors.ConnectionError, match="is not a master"):
            await store.redis.get(store.session_key("any"))
    finally:
        await store.close()


async def test_durability_fail_policy_refuses_a_write_too_few_replicas_acknowledged(
    shared_topology,
):
    observer = RecordingObserver()
    store = sentinel_store(
        shared_topology,
        observer,
        durability={"replicas": 5, "timeout_ms": 50, "on_shortfall": "fail"},
    )
    try:
        with pytest.raises(DurabilityShortfall, match="2 of 5"):
            await store.create({"a": 1})
        assert observer.shortfalls == 1
    finally:
        await store.close()


async def test_durability_accept_policy_counts_the_shortfall_and_keeps_the_write(shared_topology):
    observer = RecordingObserver()
    store = sentinel_store(
        shared_topology,
        observer,
        durability={"replicas": 5, "timeout_ms": 50, "on_shortfall": "accept"},
    )
    try:
        sid = await store.create({"a": 1})
        assert (await store.load(sid)).attributes == {"a": 1}
        assert observer.shortfalls == 1
    finally:
        await store.close()


async def test_with_every_redis_node_down_the_caller_gets_unavailable_after_the_deadline(
    local_topology,
):
    observer = RecordingObserver()
    store = sentinel_store(local_topology, observer)
    store.retry = RetryPolicy(deadline_seconds=1.0)
    try:
        for node in local_topology.redis_nodes:
            local_topology.kill(node)
        with pytest.raises(SessionStoreUnavailable):
            await store.create({})
        assert observer.operations[("create", "unavailable")] == 1
        assert sum(observer.retries.values()) >= 1
    finally:
        await store.close()


async def test_with_stale_reads_on_a_load_in_the_failover_window_is_served_by_a_replica(
    local_topology,
):
    observer = RecordingObserver()
    store = sentinel_store(
        local_topology, observer, stale_reads_during_failover=True, stale_read_after_seconds=0.3
    )
    app = stale_flag_app(store)
    try:
        sid = await store.create({"cart": ["a"]})
        await store.save(await store.load(sid), {"cart": ["a", "b"]})
        with local_topology.client("master") as master:
            assert master.execute_command("WAIT", 2, 5000) == 2  # both replicas have it
        old_master = local_topology.master_address()
        local_topology.kill("master")  # down-after is 2 s: the load below is inside the window
        loaded = await store.load(sid)
        assert loaded.stale and loaded.attributes == {"cart": ["a", "b"]}
        assert observer.operations[("load_stale", "success")] == 1
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            answer = (await c.get("/", headers={"X-Session-Id": sid})).json()
        assert answer["cart"] == ["a", "b"]
        local_topology.wait_for_failover(old_master)
        fresh = await store.load(sid)
        assert not fresh.stale and fresh.attributes == {"cart": ["a", "b"]}
    finally:
        await store.close()


async def test_without_stale_reads_a_load_waits_for_the_new_master(local_topology):
    store = sentinel_store(local_topology)
    try:
        sid = await store.create({"cart": ["a"]})
        local_topology.kill("master")
        loaded = await store.load(sid)
        assert not loaded.stale and loaded.attributes == {"cart": ["a"]}
    finally:
        await store.close()


def stale_flag_app(store: SessionStore):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sessionlib.middleware import SessionMiddleware

    async def show(request):
        return JSONResponse({"stale": request.state.session_stale, **request.session})

    app = Starlette(routes=[Route("/", show)])
    app.add_middleware(SessionMiddleware, store=store)
    return app


async def test_the_watcher_learns_every_sentinel_from_the_one_it_was_given(shared_topology):
    first, *others = shared_topology.sentinel_addresses
    store = sentinel_store(shared_topology, sentinels=[first])
    try:
        await store.create({})  # the first operation starts the watcher
        await eventually(lambda: len(store.watcher.watched_sentinels) == 3)
        assert store.watcher.watched_sentinels == sorted([first, *others])
    finally:
        await store.close()


def subscribers(topology, sentinel) -> int:
    with topology.client(sentinel) as client:
        return sum(1 for c in client.client_list() if c.get("cmd") == "subscribe")


async def test_the_watcher_subscribes_again_to_a_sentinel_that_came_back(local_topology):
    store = sentinel_store(local_topology)
    sentinel = local_topology.sentinel_nodes[0]
    try:
        await store.create({})
        await eventually(lambda: subscribers(local_topology, sentinel) == 1)
        local_topology.kill(sentinel)
        await asyncio.to_thread(local_topology.restart, sentinel)
        await eventually(lambda: subscribers(local_topology, sentinel) == 1)
    finally:
        await store.close()
