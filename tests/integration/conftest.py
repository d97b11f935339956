"""Store fixtures on a real standalone redis-server, with a client that counts its
round trips (one `send_packed_command` per trip, pipelines included)."""

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Connection, ConnectionPool, Redis

from sessionlib.config import SessionSettings
from sessionlib.store import SessionStore


class CountingConnection(Connection):
    """A real connection that also counts the requests it sends."""

    sent = 0

    async def send_packed_command(self, command, check_health=True):  # type: ignore[override]
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


class RoundTrips:
    """Round trips since the last `reset()`."""

    def reset(self) -> None:
        CountingConnection.sent = 0

    @property
    def count(self) -> int:
        return CountingConnection.sent


@pytest.fixture
def round_trips() -> RoundTrips:
    counter = RoundTrips()
    counter.reset()
    return counter


@pytest.fixture
async def make_store(redis_server) -> AsyncIterator[Callable[..., SessionStore]]:
    """Build stores on the test's redis-server; settings as keyword arguments."""
    made: list[SessionStore] = []

    def build(**settings) -> SessionStore:
        pool = ConnectionPool.from_url(redis_server.url, connection_class=CountingConnection)
        store = SessionStore(Redis(connection_pool=pool), SessionSettings(**settings))
        made.append(store)
        return store

    yield build
    for store in made:
        await store.redis.flushdb()
        await store.close()


@pytest.fixture
async def store(make_store) -> SessionStore:
    store = make_store()
    await store.load_scripts()  # the steady state, which round-trip counts speak of
    return store
