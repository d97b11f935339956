"""Failures a user meets, against real processes: a wrong password, a missing ACL
permission and a wrong sentinel password are refusals (answered at once, never
retried, told in one line); the deadline bounds discovery; a replica that lacks a
session during a failover proves nothing."""

import logging
import time

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import sessionlib
from deploy.local.processes import find_free_ports
from deploy.local.standalone import StandaloneRedis
from sessionlib.config import load_settings
from sessionlib.errors import SessionStoreRefused, SessionStoreUnavailable
from sessionlib.store import SessionStore
from tests.support.observers import RecordingObserver

pytestmark = pytest.mark.integration

SOME_ID = "A" * 43


@pytest.fixture
def protected_redis(tmp_path):
    with StandaloneRedis(tmp_path / "redis", find_free_ports(1)[0], password="right") as server:
        yield server


def standalone_store(url: str, observer=None, **redis) -> SessionStore:
    settings = load_settings("dev", redis={"mode": "standalone", "url": url, **redis})
    return SessionStore.from_settings(settings, observer=observer)


def sentinel_store(topology, observer=None, **redis) -> SessionStore:
    settings = load_settings(
        "dev",
        redis={
            "mode": "sentinel",
            "sentinels": [f"{h}:{p}" for h, p in topology.sentinel_addresses],
            "master_name": topology.master_name,
            **redis,
        },
    )
    return SessionStore.from_settings(settings, observer=observer)


def one_route_app(store: SessionStore) -> Starlette:
    async def read(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    app = Starlette(routes=[Route("/", read)])
    app.add_middleware(sessionlib.SessionMiddleware, store=store)
    return app


async def test_a_wrong_password_is_refused_at_once_and_said_in_one_line(protected_redis, caplog):
    observer = RecordingObserver()
    url = f"redis://:wrong@127.0.0.1:{protected_redis.port}/0"
    store = standalone_store(url, observer)
    try:
        with caplog.at_level(logging.WARNING, logger="sessionlib"):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=one_route_app(store)), base_url="http://t"
            ) as client:
                answer = await client.get("/", headers={"X-Session-Id": SOME_ID})
    finally:
        await store.close()
    assert answer.status_code == 503
    assert sum(observer.retries.values()) == 0, "a refusal is never retried"
    assert observer.operations[("load", "refused")] == 1
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("sessionlib")]
    assert len(lines) == 1
    assert f"127.0.0.1:{protected_redis.port}" in lines[0] and "'default'" in lines[0]
    assert "SESSIONLIB_REDIS__PASSWORD" in lines[0]
    assert "<" not in lines[0] and len(lines[0]) < 300, "no reprs of pools or connections"


async def test_a_missing_acl_permission_is_a_refusal_naming_the_user(redis_server):
    admin = Redis.from_url(redis_server.url)
    await admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">pw", "~sessionlib:*", "+@all", "-evalsha", "-eval"
    )
    await admin.aclose()
    observer = RecordingObserver()
    store = standalone_store(redis_server.url, observer, username="app", password="pw")
    try:
        with pytest.raises(
            SessionStoreRefused, match=r"refused user 'app'.*no permissions.*evalsha"
        ):
            await store.load(SOME_ID)
    finally:
        await store.close()
    assert sum(observer.retries.values()) == 0


async def test_a_wrong_sentinel_password_is_a_refusal_not_a_missing_master(shared_topology):
    sentinels = [shared_topology.client(node) for node in shared_topology.sentinel_nodes]
    for sentinel in sentinels:
        sentinel.execute_command("ACL", "SETUSER", "default", "resetpass", ">sentinel-pw")
    observer = RecordingObserver()
    store = sentinel_store(shared_topology, observer, sentinel_password="wrong")
    try:
        with pytest.raises(SessionStoreRefused, match="SESSIONLIB_REDIS__SENTINEL_PASSWORD"):
            await store.load(SOME_ID)
    finally:
        await store.close()
        for sentinel in sentinels:
            sentinel.execute_command("AUTH", "sentinel-pw")
            sentinel.execute_command("ACL", "SETUSER", "default", "nopass")
            sentinel.close()
    assert sum(observer.retries.values()) == 0


async def test_the_deadline_bounds_the_whole_operation_discovery_included(shared_topology):
    # Paused sentinels accept connections and never answer: redis-py alone would ask
    # them one after another, each for the full socket timeout, on every attempt.
    store = sentinel_store(
        shared_topology,
        socket_timeout_seconds=2.0,
        connect_timeout_seconds=0.5,
        retry={"deadline_seconds": 1.0},
        watch_sentinels=False,
    )
    for sentinel in shared_topology.sentinel_nodes:
        shared_topology.pause(sentinel)
    try:
        started = time.monotonic()
        with pytest.raises(SessionStoreUnavailable):
            await store.load(SOME_ID)
        elapsed = time.monotonic() - started
    finally:
        for sentinel in shared_topology.sentinel_nodes:
            shared_topology.resume(sentinel)
        await store.close()
    # Sequential discovery takes 3 x 2 s per attempt; the deadline is 1 s. Generous margin.
    assert elapsed < 4.0


def stale_reading_store(topology, **redis) -> SessionStore:
    return SessionStore.from_settings(
        load_settings(
            "dev",
            redis={
                "mode": "sentinel",
                "sentinels": [f"{h}:{p}" for h, p in topology.sentinel_addresses],
                "master_name": topology.master_name,
                **redis,
            },
            session={"stale_reads_during_failover": True, "stale_read_after_seconds": 0.3},
        )
    )


async def test_stale_reads_honour_the_database_number(local_topology):
    store = stale_reading_store(local_topology, db=3, retry={"deadline_seconds": 15.0})
    try:
        sid = await store.create({"cart": ["a"]})
        time.sleep(0.3)  # replication is asynchronous
        local_topology.kill("master")  # down-after is 2 s: the load is inside the window
        loaded = await store.load(sid)
    finally:
        await store.close()
    assert loaded is not None and loaded.stale and loaded.attributes == {"cart": ["a"]}


async def test_a_session_no_replica_holds_during_a_failover_is_unavailable_not_absent(
    local_topology,
):
    # A deadline shorter than Sentinel's failover: the master cannot answer in time.
    store = stale_reading_store(local_topology, retry={"deadline_seconds": 1.0})
    try:
        await store.load_scripts()
        local_topology.kill("master")
        with pytest.raises(SessionStoreUnavailable):
            await store.load(SOME_ID)  # a replica lacking it may just lag: never "no session"
    finally:
        await store.close()


async def test_a_master_that_refuses_writes_still_serves_a_read_that_is_due_a_refresh(make_store):
    # A master whose replicas are all gone refuses writes (min-replicas-to-write): in a Redis
    # Cluster of one replica per master, a shard right after its failover; a read that would
    # slide the TTL is answered all the same, and the TTL slides once writes are taken again.
    store = make_store(refresh_throttle_seconds=0)
    session_id = await store.create({"cart": ["tea"]})
    await store.redis.config_set("min-replicas-to-write", 1)

    try:
        unrefreshed = await store.load(session_id)
    finally:
        await store.redis.config_set("min-replicas-to-write", 0)
    refreshed = await store.load(session_id)

    assert unrefreshed is not None and unrefreshed.attributes == {"cart": ["tea"]}
    assert not unrefreshed.ttl_refreshed
    assert refreshed is not None and refreshed.ttl_refreshed
