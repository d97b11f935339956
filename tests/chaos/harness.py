"""The load generator: asyncio workers writing and reading their own sessions through the
library. Write k of a session sets the counter `n` to k and adds the attribute `w<k>`: a
missing `w<k>` proves write k lost even after later writes moved `n` past it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sessionlib.codec import StoredSession
from sessionlib.store import SessionStore
from tests.chaos.records import Operation, RunRecord

COUNTER = "n"


def marker(k: int) -> str:
    """The attribute only write k of a session sets."""
    return f"w{k}"


@dataclass
class OwnedSession:
    """A session one worker writes: what the store returned at creation, and the counter."""

    base: StoredSession
    written: int = 0


async def create_sessions(store: SessionStore, count: int) -> dict[str, OwnedSession]:
    """The sessions the load will write, each holding counter 0."""
    sessions = {}
    for _ in range(count):
        session_id = await store.create({COUNTER: 0})
        loaded = await store.load(session_id)
        assert loaded is not None, "a session just created must load"
        sessions[session_id] = OwnedSession(loaded)
    return sessions


class LoadGenerator:
    """`workers` writer tasks sharing out the sessions, each writing the next counter to its
    sessions in turn, and as many reader tasks reading the same sessions back: readers do
    not wait behind a stalled write, so reads during an outage are measured too."""

    def __init__(
        self,
        store: SessionStore,
        sessions: dict[str, OwnedSession],
        record: RunRecord,
        *,
        workers: int,
        think_seconds: float,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.record = record
        self.workers = workers
        self.think_seconds = think_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        ids = list(self.sessions)
        for worker in range(self.workers):
            owned = ids[worker :: self.workers]
            self._tasks.append(asyncio.create_task(self._loop(self._write, owned)))
            self._tasks.append(asyncio.create_task(self._loop(self._read, owned)))

    async def stop(self) -> None:
        """Let every operation in flight finish (bounded by the library's deadline)."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def _loop(self, operation: Callable[[str], Awaitable[None]], owned: list[str]) -> None:
        for session_id in itertools.cycle(owned):
            if self._stopping.is_set():
                return
            await operation(session_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.think_seconds)

    async def _write(self, session_id: str) -> None:
        session = self.sessions[session_id]
        session.written += 1
        value = session.written
        started = self.record.now()
        error = None
        try:
            # Saved against the session as created, a delta holds just `n` and `w<k>`.
            result = await self.store.save(session.base, {COUNTER: value, marker(value): value})
            if not result.written:
                error = "SessionGone"
        except Exception as exc:  # every failure is data here, sorted by type
            error = self.record.note_error("write", exc)
        self.record.operations.append(
            Operation("write", session_id, value, started, self.record.now(), error)
        )

    async def _read(self, session_id: str) -> None:
        started = self.record.now()
        value, error, stale = None, None, False
        try:
            loaded = await self.store.load(session_id)
            if loaded is None:
                error = "SessionMissing"
            else:
                value, stale = loaded.attributes.get(COUNTER), loaded.stale
        except Exception as exc:
            error = self.record.note_error("read", exc)
        self.record.operations.append(
            Operation("read", session_id, value, started, self.record.now(), error, stale)
        )
