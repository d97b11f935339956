"""The session repository: one Redis hash per session, written as deltas.

Key layout (contract): `{prefix}:s:{<sid>}` holds metadata fields (`_created`,
`_accessed`, `_idle`, `_abs`, `_ver`, `_user`) and one JSON field per attribute (sealed
by `sessionlib.encryption` when encryption at rest is on);
`{prefix}:u:{<user>}` is a sorted set of the user's session ids by absolute expiry;
`{prefix}:o:{<sid>}` is a sorted set of the ids of the session's saves within the retry
window (it expires with the window), so a retried save never applies twice.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline

from sessionlib.cluster import RedisClient
from sessionlib.codec import Delta, SessionCodec, StoredSession
from sessionlib.config import SessionSettings, Settings
from sessionlib.connection import (
    EventLoopBinding,
    create_redis,
    endpoint_of,
    read_replicas,
    watch_master,
    write_node_roles,
)
from sessionlib.errors import (
    DurabilityShortfall,
    SessionError,
    SessionMoved,
    SessionStoreRefused,
    SessionStoreUnavailable,
)
from sessionlib.failover import SentinelWatcher
from sessionlib.ids import new_raw_id
from sessionlib.near_cache import NearCacheObserver
from sessionlib.observer import NullObserver, StoreObserver
from sessionlib.refusals import describe_refusal, fix_for, is_refusal
from sessionlib.replicas import ReplicaReads
from sessionlib.resilience import RetryPolicy, retry_reason
from sessionlib.scripts import LuaScript, Step, run_pipeline
from sessionlib.serialization import as_text
from sessionlib.tracking import InvalidationTracker, near_cache_tracker

log = logging.getLogger("sessionlib.store")
T = TypeVar("T")

_LOAD = LuaScript("load")
_SAVE = LuaScript("save")
_CREATE = LuaScript("create")
_INDEX_ADD = LuaScript("index_add")
_MOVE = LuaScript("move")
_DELETE = LuaScript("delete")
_SCRIPTS = (_LOAD, _SAVE, _CREATE, _INDEX_ADD, _MOVE, _DELETE)
# A logout follows at most this many "moved" markers (logins racing it).
_MAX_MOVES = 4


@dataclass(frozen=True)
class SaveResult:
    """What a save did: `session_gone` (deleted meanwhile) and `moved` (a login gave
    the session a new id) both mean nothing was written."""

    written: bool
    session_gone: bool = False
    moved: bool = False
    version: int | None = None


# What most saves do (a read-only request's commit): one answer for all of them.
_NOTHING_WRITTEN = SaveResult(written=False)


def _exists(key: str, pipe: Pipeline) -> object:
    return pipe.exists(key)


def _delete(key: str, pipe: Pipeline) -> object:
    return pipe.delete(key)


def _zrem(key: str, members: list[str], pipe: Pipeline) -> object:
    return pipe.zrem(key, *members)


class SessionStore:
    """Load, save (as deltas), create, regenerate and revoke sessions in Redis."""

    def __init__(
        self,
        redis: RedisClient,
        settings: SessionSettings | None = None,
        *,
        observer: StoreObserver | None = None,
        retry: RetryPolicy | None = None,
        watcher: SentinelWatcher | None = None,
        replicas: ReplicaReads | None = None,
        near_cache: InvalidationTracker | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings or SessionSettings()
        self.observer: StoreObserver = observer or NullObserver()
        self.retry = retry or RetryPolicy()
        self.watcher = watcher
        self.replicas = replicas
        # The near cache (session.near_cache) with the channel that invalidates it.
        self.near_cache = near_cache
        forget = [h.forget_loop for h in (watcher, replicas, near_cache) if h is not None]
        self._loop_binding = EventLoopBinding(redis, forget)
        self._replicas_checked = False
        self.codec = SessionCodec(self.settings)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        observer: StoreObserver | None = None,
        near_cache_observer: NearCacheObserver | None = None,
    ) -> SessionStore:
        """A store for the configured topology; in Sentinel mode it follows failovers.
        `near_cache_observer` (sessionlib.metrics.NearCacheMetrics) counts the near cache
        when `session.near_cache` is on."""
        chosen: StoreObserver = observer or NullObserver()
        redis = create_redis(settings.redis, on_topology_refresh=chosen.topology_refreshed)
        stale_reads = settings.session.stale_reads_during_failover
        tracker = near_cache_tracker(settings, redis, near_cache_observer)
        flush = tracker.flush_on_switch_master if tracker is not None else None
        return cls(
            redis,
            settings.session,
            observer=chosen,
            retry=RetryPolicy.from_settings(settings.redis.retry),
            watcher=watch_master(redis, settings.redis, chosen, on_failover=flush),
            replicas=read_replicas(redis, settings.redis) if stale_reads else None,
            near_cache=tracker,
        )

    def with_settings(self, settings: SessionSettings) -> SessionStore:
        """The same connection, watcher and metrics under other session settings."""
        sibling = type(self)(
            self.redis,
            settings,
            observer=self.observer,
            retry=self.retry,
            watcher=self.watcher,
            replicas=self.replicas,
            # Cached hashes are keyed by session id under one key prefix.
            near_cache=self.near_cache if settings.key_prefix == self.settings.key_prefix else None,
        )
        sibling._loop_binding = self._loop_binding
        return sibling

    async def close(self) -> None:
        if self.near_cache is not None:
            await self.near_cache.aclose()
        if self.watcher is not None:
            await self.watcher.stop()
        if self.replicas is not None:
            await self.replicas.close()
        await self.redis.aclose()

    # -- keys ---------------------------------------------------------------------------

    def session_key(self, session_id: str) -> str:
        return f"{self.settings.key_prefix}:s:{{{session_id}}}"

    def operations_key(self, session_id: str) -> str:
        """The ids of the session's recent saves (in its hash's slot), for safe retries."""
        return f"{self.settings.key_prefix}:o:{{{session_id}}}"

    def user_key(self, user: str) -> str:
        return f"{self.settings.key_prefix}:u:{{{user}}}"

    # -- reading ------------------------------------------------------------------------

    async def load(self, session_id: str) -> StoredSession | None:
        """The session, or None when it does not exist or has expired (one round trip).
        Raises SessionMoved when a login gave it a new id: the old id grants nothing.

        With stale reads on, a load that finds no master within
        `stale_read_after_seconds` is answered by the freshest replica (`stale=True`).
        A replica that lacks the session proves nothing during a failover (it may lag),
        so then the load goes on waiting for the master, within the same deadline.

        With the near cache on, a session cached while its invalidation channel is alive
        is answered from memory (no round trip); one cached before a gap in the channel
        answers, flagged stale, a load that finds no master within
        `stale_read_after_seconds`.
        """
        if self.near_cache is not None:
            cached = self.near_cache.cache.get(session_id)
            if cached is not None:
                return self.codec.decode(session_id, list(cached.fields), ttl_refreshed=False)
        if self.replicas is None and self.near_cache is None:
            return await self._load_from_master(session_id, self.retry)
        started = time.monotonic()
        try:
            impatient = self.retry.within(self.settings.stale_read_after_seconds)
            return await self._load_from_master(session_id, impatient)
        except SessionStoreUnavailable:
            last_known = self.near_cache.cache.last_known(session_id) if self.near_cache else None
            if last_known is not None:
                fields = list(last_known.fields)
                return self.codec.decode(session_id, fields, ttl_refreshed=False, stale=True)
            if self.replicas is None:
                remaining = self.retry.deadline_seconds - (time.monotonic() - started)
                if remaining <= 0:
                    raise
                return await self._load_from_master(session_id, self.retry.within(remaining))
        try:
            return await self._call("load_stale", lambda: self._read_replicas(session_id))
        except SessionStoreUnavailable:
            remaining = self.retry.deadline_seconds - (time.monotonic() - started)
            if remaining <= 0:
                raise
            return await self._load_from_master(session_id, self.retry.within(remaining))

    async def _load_from_master(self, session_id: str, retry: RetryPolicy) -> StoredSession | None:
        throttle_ms = int(self.settings.refresh_throttle_seconds * 1000)
        key = self.session_key(session_id)
        # Taken before the read: an invalidation that overtakes it keeps it out of the cache.
        ticket = self.near_cache.cache.begin_read() if self.near_cache is not None else None
        reply = await self._call(
            "load", lambda: _LOAD.run(self.redis, [key], [throttle_ms]), retry=retry
        )
        if reply[0] == 2:
            raise SessionMoved("the session id was replaced by a login")
        if len(reply) < 2:
            return None
        # A load that slid the TTL wrote the hash: its own invalidation is on the way.
        if ticket is not None and reply[0] == 0:
            assert self.near_cache is not None
            self.near_cache.cache.put(ticket, session_id, reply[1])
        return self.codec.decode(session_id, reply[1], ttl_refreshed=bool(reply[0]))

    async def _read_replicas(self, session_id: str) -> StoredSession | None:
        """The freshest live copy among the replicas (None: no replica has it); raises
        SessionStoreUnavailable when no replica answered at all."""
        assert self.replicas is not None
        copies = await self.replicas.read_hash(self.session_key(session_id))
        if not copies:
            raise SessionStoreUnavailable("no master and no replica answered")
        if any(b"_moved" in copy for copy in copies):
            raise SessionMoved("the session id was replaced by a login")
        now_ms = int(time.time() * 1000)
        live = [
            self.codec.decode(
                session_id,
                [x for pair in copy.items() for x in pair],
                ttl_refreshed=False,
                stale=True,
            )
            for copy in copies
            if copy and int(copy.get(b"_abs", b"0")) > now_ms
        ]
        if not live:
            # Never "no session" (which clears the cookie): the master may still have it.
            raise SessionStoreUnavailable("no master answered and no replica holds the session")
        return max(live, key=lambda s: s.version)

    # -- writing ------------------------------------------------------------------------

    def delta(self, loaded: StoredSession | None, attributes: Mapping[str, Any]) -> Delta:
        """What must change in Redis to turn `loaded` into `attributes`, within limits."""
        return self.codec.delta(loaded, attributes)

    async def save(self, loaded: StoredSession, attributes: Mapping[str, Any]) -> SaveResult:
        """Write only what changed since `loaded`; never re-creates a deleted session,
        never writes to a session a login moved, and a retry after an unknown outcome
        never applies the same change twice (the script remembers operation ids)."""
        delta = self.codec.delta(loaded, attributes)
        if not delta:
            return _NOTHING_WRITTEN
        remember_ms = int(self.retry.deadline_seconds * 1000) + 1000
        args: list[str | int] = [secrets.token_urlsafe(6), remember_ms, len(delta.to_set)]
        for name, value in self.codec.stored_form(loaded.id, delta.to_set).items():
            args += [name, value]
        args += delta.to_remove
        keys = [self.session_key(loaded.id), self.operations_key(loaded.id)]
        try:
            if self.settings.durability.replicas:
                step: Step = lambda p: _SAVE.queue(p, keys, args)  # noqa: E731
                reply = await self._call("save", lambda: self._write([step], [_SAVE]))
                version = int(reply[0])
            else:
                # One command and no WAIT: a pipeline object would only add CPU.
                version = int(await self._call("save", lambda: _SAVE.run(self.redis, keys, args)))
        finally:
            self._forget_cached(loaded.id)
        if version == -2:
            return SaveResult(written=False, moved=True)
        if version < 0:
            return SaveResult(written=False, session_gone=True)
        self.observer.session_size(delta.size_bytes)
        return SaveResult(written=True, version=version)

    async def create(self, attributes: Mapping[str, Any], *, user: str | None = None) -> str:
        """A new session holding `attributes`; returns its id."""
        created = await self.regenerate(None, attributes, user=user)
        assert created is not None  # only an existing session can be gone
        return created.id

    async def regenerate(
        self,
        previous: StoredSession | None,
        attributes: Mapping[str, Any],
        *,
        user: str | None = None,
        restart_lifetime: bool = True,
    ) -> StoredSession | None:
        """Move a session to a fresh id (on login, `user` given), Cluster-safe: each step
        touches one key. Returns the new session as a later save needs it, or None when
        `previous` no longer exists and this is no login (nothing may come back).

        1. The old hash is marked moved and read in one script: from then on saves to
           it are refused (409) and loads of it grant nothing, so everything written
           before the mark is carried over and nothing after it is acknowledged.
        2. The new id goes into the user's index, then the new hash is written: a crash
           in between leaves a dead index entry (pruned later), never a live session
           that `revoke_user` cannot find.
        A login whose old session is gone (a logout or another login won the race)
        starts a fresh session holding only what this request wrote; a login as another
        user carries nothing of the previous user's.
        """
        changes = self.codec.delta(previous, attributes)
        new_id = new_raw_id()
        carried: dict[str, str] = {}
        kept: dict[str, str] = {}
        created_ms: int | str = ""
        expiry_ms: int | str = ""
        replaced_owner: str | None = None
        if previous is not None:
            try:
                current = await self._call("regenerate", lambda: self._move(previous.id, new_id))
            except SessionMoved:
                if user is None:
                    raise  # another login moved it: its new id is not this request's to touch
                current = None
            finally:
                self._forget_cached(previous.id)
            if current is None and user is None:
                return None
            if current is not None:
                replaced_owner = current.user
                if user is None or current.user in (None, user):
                    carried, kept = self.codec.carried(current)
                if not restart_lifetime:
                    created_ms, expiry_ms = current.created_ms, current.absolute_expiry_ms
        owner = user if user is not None else replaced_owner
        json_fields = {f: v for f, v in carried.items() if f not in changes.to_remove}
        json_fields.update(changes.to_set)
        kept = {f: v for f, v in kept.items() if f not in changes.to_remove | json_fields.keys()}
        fields = {**kept, **self.codec.stored_form(new_id, json_fields)}

        absolute = self.settings.absolute_timeout_seconds
        create_args: list[str | int] = [
            self.settings.idle_timeout_seconds,
            absolute,
            owner or "",
            created_ms,
            expiry_ms,
        ]
        for name, value in fields.items():
            create_args += [name, value]
        steps: list[Step] = []
        if owner:
            moved_here = previous.id if previous is not None and replaced_owner == owner else ""
            index_args: list[str | int] = [new_id, expiry_ms, absolute, moved_here]
            steps.append(lambda p: _INDEX_ADD.queue(p, [self.user_key(owner)], index_args))
        if previous is not None and replaced_owner and replaced_owner != owner:
            steps.append(partial(_zrem, self.user_key(replaced_owner), [previous.id]))
        steps.append(lambda p: _CREATE.queue(p, [self.session_key(new_id)], create_args))

        operation = "create" if previous is None else "regenerate"
        results = await self._call(operation, lambda: self._write(steps, [_CREATE, _INDEX_ADD]))
        expiry, created = (int(x) for x in results[-1]) if len(results[-1]) == 2 else (0, 0)
        if expiry == 0:
            raise SessionError("could not create a session with a zero lifetime")
        self.observer.session_created()
        if replaced_owner is not None or carried or kept:
            self.observer.session_destroyed("regenerated")
        if owner and self.settings.max_sessions_per_user:
            await self._enforce_cap(owner, self.settings.max_sessions_per_user, keep=new_id)
        plain = (*kept.items(), *json_fields.items())
        self.observer.session_size(sum(len(f) + len(v.encode()) for f, v in plain))
        meta = {"_abs": expiry, "_created": created, "_ver": 1, "_user": owner or ""}
        if not owner:
            del meta["_user"]
        flat = [str(x).encode() for pair in (*meta.items(), *fields.items()) for x in pair]
        return self.codec.decode(new_id, flat, ttl_refreshed=False)

    async def _move(self, session_id: str, new_id: str) -> StoredSession | None:
        """Mark a session as moved to `new_id` and return what it holds (None: gone;
        SessionMoved: another regeneration moved it first). A retry with the same
        `new_id` returns the same."""
        marker_ms = self.settings.moved_marker_seconds * 1000
        key = self.session_key(session_id)
        args: list[str | int] = [new_id, marker_ms]
        if self.settings.durability.replicas:
            # The mark must survive a failover of its own master: in Cluster mode the new
            # session's WAIT runs on other masters and does not cover it.
            step: Step = lambda p: _MOVE.queue(p, [key], args)  # noqa: E731
            reply = (await self._write([step], [_MOVE]))[0]
        else:
            reply = await _MOVE.run(self.redis, [key], args)
        if reply[0] == -2:
            raise SessionMoved("the session id was replaced by another login")
        if reply[0] != 1:
            return None
        return self.codec.decode(session_id, reply[1], ttl_refreshed=False)

    async def _enforce_cap(self, user: str, cap: int, *, keep: str) -> None:
        """Evict the user's oldest live sessions beyond `cap`, never `keep`. Hashes go
        first, index entries after: a retry or a crash in between leaves the evicted
        sessions findable (and deletable) instead of alive and unindexed."""
        live = await self.sessions_of(user)
        evicted = [sid for sid in live if sid != keep][: max(0, len(live) - cap)]
        if not evicted:
            return
        deletes: list[Step] = [partial(_delete, self.session_key(sid)) for sid in evicted]
        try:
            await self._call("evict", lambda: self._write(deletes, []))
        finally:
            self._forget_cached(*evicted)
        unindex: list[Step] = [partial(_zrem, self.user_key(user), evicted)]
        await self._call("evict", lambda: self._write(unindex, []))
        for _ in evicted:
            self.observer.session_destroyed("user_cap")

    async def delete(self, session_id: str, *, user: str | None = None) -> None:
        """Remove a session (logout) for every service at once. A logout that raced a
        login follows the moved marker and ends the new session too: logout wins."""
        doomed: str | None = session_id
        for _ in range(_MAX_MOVES):
            if doomed is None:
                return
            steps: list[Step] = [partial(_DELETE.queue, keys=[self.session_key(doomed)], args=[])]
            if user:
                steps.append(partial(_zrem, self.user_key(user), [doomed]))
            try:
                reply = (await self._call("delete", partial(self._write, steps, [_DELETE])))[0]
            finally:
                self._forget_cached(doomed)
            existed, owner, moved_to = int(reply[0]), as_text(reply[1]), as_text(reply[2])
            if existed:
                self.observer.session_destroyed("deleted")
            if owner and owner != user:
                unindex: list[Step] = [partial(_zrem, self.user_key(owner), [doomed])]
                await self._call("delete", partial(self._write, unindex, []))
            doomed, user = moved_to or None, None

    # -- users --------------------------------------------------------------------------

    async def sessions_of(self, user: str) -> list[str]:
        """Ids of the user's live sessions, oldest first; dead index entries are cleaned
        on the way."""
        key = self.user_key(user)

        async def live_members() -> list[str]:
            members = [as_text(m) for m in await self.redis.zrange(key, 0, -1)]
            if not members:
                return []
            steps = [partial(_exists, self.session_key(m)) for m in members]
            exists = await run_pipeline(self.redis, steps, [])
            dead = [m for m, alive in zip(members, exists, strict=True) if not alive]
            if dead:
                await self.redis.zrem(key, *dead)
            return [m for m, alive in zip(members, exists, strict=True) if alive]

        return await self._call("sessions_of", live_members)

    async def revoke_user(self, user: str, *, keep: str | None = None) -> int:
        """Delete every session of `user` except `keep`; returns how many were deleted."""
        doomed = [sid for sid in await self.sessions_of(user) if sid != keep]
        if not doomed:
            return 0

        steps: list[Step] = [partial(_delete, self.session_key(sid)) for sid in doomed]
        steps.append(partial(_zrem, self.user_key(user), doomed))
        try:
            results = await self._call("revoke", lambda: self._write(steps, []))
        finally:
            self._forget_cached(*doomed)
        deleted = sum(int(r) for r in results[:-1])
        for _ in range(deleted):
            self.observer.session_destroyed("revoked")
        return deleted

    async def load_scripts(self) -> None:
        """Put every script in the master's cache ahead of traffic (optional: calls fall
        back on their own, at the cost of extra round trips the first time)."""

        async def load_all() -> None:
            for script in _SCRIPTS:
                await self.redis.script_load(script.source)
            await self._warn_if_replicas_missing()

        await self._call("load_scripts", load_all)

    async def ping(self) -> None:
        """Raise SessionStoreUnavailable unless a writable master answers (in Cluster
        mode: every master of the slot map)."""
        nodes = await self._call("ping", lambda: write_node_roles(self.redis))
        if any(node.role != "master" for node in nodes):
            raise SessionStoreUnavailable("connected Redis node is not a master")

    # -- plumbing -----------------------------------------------------------------------

    def _forget_cached(self, *session_ids: str) -> None:
        """Drop sessions this process wrote (or may have written) from its near cache at
        once: its next read goes to Redis, before Redis' own invalidation arrives."""
        if self.near_cache is not None:
            for session_id in session_ids:
                self.near_cache.cache.invalidate(session_id)

    async def _warn_if_replicas_missing(self) -> None:
        """Say once, readably, when durability asks for more replicas than a master has
        (in Cluster mode: the master with the fewest): every write to it would otherwise
        wait `timeout_ms` in silence."""
        wanted = self.settings.durability.replicas
        if self._replicas_checked or not wanted:
            return
        nodes = await write_node_roles(self.redis)
        self._replicas_checked = True
        connected = min(node.replicas for node in nodes)
        if connected < wanted:
            where, _ = endpoint_of(self.redis)
            log.warning(
                "durability asks for %d replica(s) but the master %s has %d: every write "
                "waits %d ms and then %s; set SESSIONLIB_SESSION__DURABILITY__REPLICAS=%d "
                "if this Redis has no replicas",
                wanted,
                where,
                connected,
                self.settings.durability.timeout_ms,
                "fails" if self.settings.durability.on_shortfall == "fail" else "is counted",
                connected,
            )

    async def _write(self, steps: list[Step], scripts: list[LuaScript]) -> list[Any]:
        """Run writing steps in one round trip, with `WAIT` last when durability is on."""
        durability = self.settings.durability
        if durability.replicas and not self._replicas_checked:
            with contextlib.suppress(redis_errors.RedisError):
                await self._warn_if_replicas_missing()
        wait = (durability.replicas, durability.timeout_ms) if durability.replicas else None
        results = await run_pipeline(self.redis, steps, scripts, wait=wait)
        if wait is not None:
            acknowledged = int(results.pop())
            if acknowledged < durability.replicas:
                self.observer.durability_shortfall()
                if durability.on_shortfall == "fail":
                    raise DurabilityShortfall(acknowledged, durability.replicas)
        return results

    def _refusal(self, exc: redis_errors.RedisError) -> SessionStoreRefused | None:
        """The caller's own mistake, told in one line naming the node and the user."""
        if not is_refusal(exc):
            return None
        where, user = endpoint_of(self.redis)
        return SessionStoreRefused(describe_refusal(exc, f"Redis at {where}", user, fix_for(exc)))

    async def _call(
        self,
        operation: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        retry: RetryPolicy | None = None,
    ) -> T:
        """Run one store operation through the retry layer, timed and counted, with
        Redis failures turned into sessionlib's exceptions."""
        self._loop_binding.follow_running_loop()
        if self.watcher is not None and not self.watcher.started:
            self.watcher.start()
        if self.near_cache is not None and not self.near_cache.started:
            self.near_cache.start()
        started = time.perf_counter()
        outcome = "error"
        try:
            policy = retry or self.retry
            if self.watcher is None:
                result = await policy.call(operation, attempt, self.observer)
            else:
                result = await policy.call(
                    operation,
                    attempt,
                    self.observer,
                    before_retry=self.watcher.confirm,
                    nap=self.watcher.nap,
                )
            outcome = "success"
            return result
        except SessionStoreUnavailable:
            outcome = "unavailable"
            raise
        except SessionStoreRefused:
            outcome = "refused"
            raise
        except redis_errors.RedisError as exc:
            if retry_reason(exc) is not None:
                outcome = "unavailable"
                raise SessionStoreUnavailable(
                    f"session store unavailable during {operation}: {exc}"
                ) from exc
            refused = self._refusal(exc)
            if refused is not None:
                outcome = "refused"
                raise refused from None
            raise SessionError(f"Redis refused {operation}: {exc}") from exc
        finally:
            self.observer.operation(operation, outcome, time.perf_counter() - started)
