"""A save remembers its operation id only as long as a retry of it can come: a retried
save is recognised wherever its id sits among the session's recent writes, and ids older
than the retry window are dropped by the next save, so a busy session stays small.
Against a real redis-server."""

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
    key = store.session_key(sid)
    long_ago = "old00001@1000 old00002@2000"
    await store.redis.hset(key, "_ops", long_ago)
    for n in (1, 2):
        await store.save(await store.load(sid), {"n": n})
    remembered = (await store.redis.hget(key, "_ops")).decode().split(" ")
    assert len(remembered) == 2
    assert not any(entry.startswith("old") for entry in remembered)
