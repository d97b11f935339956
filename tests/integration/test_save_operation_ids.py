"""A save remembers its operation id only as long as a retry of it can come: a retried
save is recognised wherever its id sits among the session's recent writes, and ids older
than the retry window are dropped by the next save. The ids live beside the session's
hash (`{prefix}:o:{<sid>}`), so loads never carry them. Against a real redis-server."""

import pytest

from tests.support.faults import ReplyLosingConnection

pytestmark = pytest.mark.integration


async def test_a_retried_save_is_recognised_behind_many_other_writes(lossy_store, make_store):
    other_service = make_store()
    sid = await other_service.create({"qty": 0, "note": "n0"})
    for n in range(1, 20):
        theirs = await other_service.load(sid)
        await other_service.save(theirs, {**theirs.attributes, "note": f"n{n}"})
    mine = await lossy_store.load(sid)

    async def other_service_writes_meanwhile() -> None:
        for qty in (3, 4):
            theirs = await other_service.load(sid)
            await other_service.save(theirs, {**theirs.attributes, "qty": qty})

    ReplyLosingConnection.lose_next_reply(other_service_writes_meanwhile)
    result = await lossy_store.save(mine, {**mine.attributes, "qty": 2})
    assert result.written
    assert (await other_service.load(sid)).attributes == {"qty": 4, "note": "n19"}


async def test_a_save_forgets_operation_ids_older_than_the_retry_window(store):
    sid = await store.create({"n": 0})
    operations = store.operations_key(sid)
    await store.redis.zadd(operations, {"old00001": 1000, "old00002": 2000})
    for n in (1, 2):
        await store.save(await store.load(sid), {"n": n})
    remembered = await store.redis.zrange(operations, 0, -1)
    assert len(remembered) == 2
    assert not any(entry.startswith(b"old") for entry in remembered)
    window_ms = int(store.retry.deadline_seconds * 1000) + 1000
    assert 0 < await store.redis.pttl(operations) <= window_ms, "gone once no retry can come"


async def test_a_busy_sessions_hash_holds_no_operation_ids_and_stays_compact(store):
    """Every load reads the whole hash: ids of recent saves kept in it would travel with
    every read, and a few hundred of them turn the hash into Redis' larger encoding."""
    sid = await store.create({"n": 0}, user="ann")
    for n in range(1, 200):
        await store.save(await store.load(sid), {"n": n})
    key = store.session_key(sid)
    metadata = sorted(f for f in await store.redis.hkeys(key) if f.startswith(b"_"))
    assert metadata == [b"_abs", b"_accessed", b"_created", b"_idle", b"_user", b"_ver"]
    assert await store.redis.object("encoding", key) == b"listpack"
    assert await store.redis.zcard(store.operations_key(sid)) == 199
