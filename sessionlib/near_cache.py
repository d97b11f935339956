"""An in-process cache of loaded session hashes, trusted only while Redis' invalidation
channel (sessionlib.tracking) is provably alive; sync, so a hit costs no await.

What is cached is the flat field list the load script returns (`[name, value, ...]`, as
bytes), never a decoded session: every hit decodes afresh, so callers cannot share state.
Three lines of defence keep an entry from outliving the truth: invalidations from Redis
(one per written key, or a flush), a flush whenever the channel has a gap, and a maximum
staleness. A read that an invalidation overtakes is never cached (`begin_read`/`put`).

Entries a gap in the channel flushes are not thrown away: they are kept as *last known*
copies, never served as current, but handed out by `last_known` when no master answers at
all (a failover), for the store to serve flagged stale, as it serves a replica's copy. An
invalidation that does arrive, and the store's own writes, drop them too; max staleness and
the session's own expiry bound them like any entry.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

# `result` label of sessionlib_near_cache_requests_total: served from memory; not cached
# (or not servable: stale, expired, due for a TTL refresh); not consulted because the
# invalidation channel is not known to be alive; served as a last known copy, flagged stale,
# while no master answered.
REQUEST_RESULTS = ("hit", "miss", "bypass", "stale")
# `reason` label of sessionlib_near_cache_invalidations_total. Per key: `key` (Redis said
# the key changed), `write` (this process wrote it), `evicted` (LRU, by entries or bytes),
# `staleness` (older than max_staleness_seconds), `expired` (past its own expiry). Per
# flush: `flush_all` (FLUSHALL/FLUSHDB), `channel_lost` (connection dropped or failed),
# `health_check` (no pong in time), `reconnect` (tracking acknowledged again),
# `switch_master` (Sentinel announced a new master), `stopped` (the channel was stopped).
INVALIDATION_REASONS = (
    "key",
    "write",
    "evicted",
    "staleness",
    "expired",
    "flush_all",
    "channel_lost",
    "health_check",
    "reconnect",
    "switch_master",
    "stopped",
)

# Invalidations remembered for reads in flight; a read that outlives this many is not
# cached (it cannot tell whether one of the forgotten ones was its own key).
_REMEMBERED_INVALIDATIONS = 4096


class NearCacheObserver(Protocol):
    """What the near cache reports; sessionlib.metrics.NearCacheMetrics implements it."""

    def request(self, result: str) -> None: ...

    def invalidated(self, reason: str, count: int = 1) -> None: ...


class NullNearCacheObserver:
    """Observes nothing; the default when metrics are not wanted."""

    def request(self, result: str) -> None:
        pass

    def invalidated(self, reason: str, count: int = 1) -> None:
        pass


class ReadTicket(NamedTuple):
    """Taken by `begin_read` before a Redis read starts; `put` checks it."""

    sequence: int
    started: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class CachedSession:
    """A loaded session hash as the load script returned it, with its footprint. Times
    are `time.monotonic()`; `usable_until` is the first of the three after it."""

    fields: tuple[bytes, ...]  # name, value, name, value, ...
    size_bytes: int
    read_started: float
    stale_at: float  # read_started + max_staleness_seconds
    expires_at: float  # the session's own idle or absolute expiry
    refresh_at: float  # when the load script would slide the TTL again
    usable_until: float


class NearCache:
    """Sessions by id, bounded by entries and bytes (least recently used goes first).

    The store calls `get` before a load; on a miss it takes `begin_read()` *before* the
    Redis read starts and hands the ticket to `put` with the result. The channel calls
    `invalidate_many`, `flush`, `mark_trusted` and `mark_untrusted`; the store also calls
    `invalidate` after each of its own writes.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        max_staleness_seconds: float,
        refresh_throttle_seconds: float | None = None,
        observer: NearCacheObserver | None = None,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or max_staleness_seconds <= 0:
            raise ValueError("near cache bounds must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_staleness_seconds = max_staleness_seconds
        # The load script slides the TTL at most this often; a hit must not postpone it
        # forever, so an entry stops being served once a refresh would be due.
        self.refresh_throttle_seconds = refresh_throttle_seconds
        self.observer: NearCacheObserver = observer or NullNearCacheObserver()
        self._entries: OrderedDict[str, CachedSession] = OrderedDict()
        self._bytes = 0
        # What a gap in the channel flushed, for `last_known`; bounded like the entries.
        self._last_known: OrderedDict[str, CachedSession] = OrderedDict()
        self._last_known_bytes = 0
        self._trusted = False
        # Every invalidation and flush advances the sequence. A put is refused when its
        # key was invalidated, or the cache flushed, after its ticket was taken.
        self._sequence = 0
        self._epoch = 0  # sequence of the last flush or change of trust
        self._invalidated_at: OrderedDict[str, int] = OrderedDict()
        self._forgotten_up_to = 0
        self.refused_puts = 0  # reads not cached because an invalidation overtook them

    # -- state ---------------------------------------------------------------------------

    @property
    def trusted(self) -> bool:
        """Whether the invalidation channel is alive and acknowledged: only then are
        entries served or stored."""
        return self._trusted

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    @property
    def size_bytes(self) -> int:
        return self._bytes

    # -- the store's side ----------------------------------------------------------------

    def get(self, session_id: str) -> CachedSession | None:
        """The cached hash if it may be served now (counted as a hit), else None."""
        if not self._trusted:
            self.observer.request("bypass")
            return None
        entry = self._entries.get(session_id)
        if entry is None:
            self.observer.request("miss")
            return None
        now = time.monotonic()
        if now >= entry.usable_until:
            self._remove(session_id, entry)
            if now >= entry.stale_at:
                self.observer.invalidated("staleness")
            elif now >= entry.expires_at:
                self.observer.invalidated("expired")
            # else a TTL refresh is due: the load that does it brings a fresh copy.
            self.observer.request("miss")
            return None
        self._entries.move_to_end(session_id)
        self.observer.request("hit")
        return entry

    def last_known(self, session_id: str) -> CachedSession | None:
        """The copy a gap in the channel flushed, or one still cached, if no invalidation
        or write of this process dropped it since and it is within max staleness and the
        session's expiry: for a load that found no master (counted as `stale`). Never a
        substitute for Redis while Redis answers."""
        entry = self._entries.get(session_id) or self._last_known.get(session_id)
        if entry is None:
            return None
        if time.monotonic() >= min(entry.stale_at, entry.expires_at):
            self._forget_last_known(session_id)
            return None
        self.observer.request("stale")
        return entry

    def begin_read(self) -> ReadTicket:
        """Take before sending the Redis read whose result may go to `put`."""
        return ReadTicket(self._sequence, time.monotonic())

    def put(self, ticket: ReadTicket, session_id: str, fields: Sequence[bytes]) -> bool:
        """Cache what a load returned, unless the cache is untrusted or an invalidation
        of this key (or a flush) arrived since `ticket` was taken. True when cached."""
        if not fields:
            return False
        if (
            not self._trusted
            or ticket.sequence < self._epoch
            or self._invalidated_at.get(session_id, -1) > ticket.sequence
            or self._forgotten_up_to > ticket.sequence
        ):
            self.refused_puts += 1
            return False
        entry = self._entry(ticket, tuple(fields))
        if entry is None or entry.size_bytes > self.max_bytes:
            return False
        previous = self._entries.pop(session_id, None)
        if previous is not None:
            self._bytes -= previous.size_bytes
        self._forget_last_known(session_id)
        self._entries[session_id] = entry
        self._bytes += entry.size_bytes
        evicted = 0
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size_bytes
            evicted += 1
        if evicted:
            self.observer.invalidated("evicted", evicted)
        return True

    def invalidate(self, session_id: str, reason: str = "write") -> None:
        """Forget one session now; the store calls it after each write to the session it
        acknowledged or left in doubt (save, delete, regenerate), so this process reads
        its own writes before Redis' invalidation arrives."""
        self.invalidate_many((session_id,), reason)

    # -- the channel's side --------------------------------------------------------------

    def invalidate_many(self, session_ids: Iterable[str], reason: str = "key") -> None:
        """Forget these sessions, and refuse reads of them already in flight."""
        count = 0
        remembered = self._invalidated_at
        for session_id in session_ids:
            self._sequence += 1
            remembered[session_id] = self._sequence
            remembered.move_to_end(session_id)
            entry = self._entries.pop(session_id, None)
            if entry is not None:
                self._bytes -= entry.size_bytes
            self._forget_last_known(session_id)
            count += 1
        while len(remembered) > _REMEMBERED_INVALIDATIONS:
            _, sequence = remembered.popitem(last=False)
            self._forgotten_up_to = max(self._forgotten_up_to, sequence)
        if count:
            self.observer.invalidated(reason, count)

    def flush(self, reason: str) -> None:
        """Forget everything, and refuse every read already in flight. On `flush_all`
        (Redis itself was emptied) the last known copies go too; on a gap in the channel
        the flushed entries become last known copies."""
        if reason == "flush_all":
            self._last_known.clear()
            self._last_known_bytes = 0
        else:
            for session_id, entry in self._entries.items():
                self._forget_last_known(session_id)
                self._last_known[session_id] = entry
                self._last_known_bytes += entry.size_bytes
            while self._last_known and (
                len(self._last_known) > self.max_entries or self._last_known_bytes > self.max_bytes
            ):
                _, oldest = self._last_known.popitem(last=False)
                self._last_known_bytes -= oldest.size_bytes
        self._entries.clear()
        self._bytes = 0
        self._new_epoch()
        self.observer.invalidated(reason)

    def mark_trusted(self) -> None:
        """The channel is (again) alive and acknowledged. Reads that began before are
        still refused: an invalidation for them may have been lost in the gap."""
        if not self._trusted:
            self._new_epoch()
            self._trusted = True

    def mark_untrusted(self, reason: str) -> None:
        """The channel has (or may have) a gap: flush, and serve nothing until
        `mark_trusted`."""
        self._trusted = False
        self.flush(reason)

    # -- internals -----------------------------------------------------------------------

    def _new_epoch(self) -> None:
        self._sequence += 1
        self._epoch = self._sequence
        self._invalidated_at.clear()
        self._forgotten_up_to = 0

    def _forget_last_known(self, session_id: str) -> None:
        entry = self._last_known.pop(session_id, None)
        if entry is not None:
            self._last_known_bytes -= entry.size_bytes

    def _remove(self, session_id: str, entry: CachedSession) -> None:
        if self._entries.pop(session_id, None) is not None:
            self._bytes -= entry.size_bytes

    def _entry(self, ticket: ReadTicket, fields: tuple[bytes, ...]) -> CachedSession | None:
        """The entry for `fields`, or None when it could not be served even once."""
        now = time.monotonic()
        stale_at = ticket.started + self.max_staleness_seconds
        expires_at = refresh_at = stale_at
        meta = _timing(fields)
        if meta is not None:
            # Redis' clock against ours: a skew moves a refresh or an expiry check earlier
            # or later by as much; a refresh comes within one throttle of caching anyway,
            # and Redis' own invalidation still comes when the key expires.
            abs_ms, accessed_ms, idle_ms = meta
            now_ms = time.time() * 1000
            expires_at = now + (min(abs_ms, accessed_ms + idle_ms) - now_ms) / 1000
            if self.refresh_throttle_seconds is not None:
                throttle_ms = min(self.refresh_throttle_seconds * 1000, idle_ms // 4)
                due_in_ms = min(throttle_ms, max(0.0, accessed_ms + throttle_ms - now_ms))
                refresh_at = now + due_in_ms / 1000
        usable_until = min(stale_at, expires_at, refresh_at)
        if usable_until <= now:
            return None
        size = sys.getsizeof(fields) + sum(sys.getsizeof(f) for f in fields)
        return CachedSession(
            fields, size, ticket.started, stale_at, expires_at, refresh_at, usable_until
        )


_TIMING_FIELDS = (b"_abs", b"_accessed", b"_idle")


def _timing(fields: Sequence[bytes]) -> tuple[int, int, int] | None:
    """`_abs` and `_accessed` (epoch ms) and `_idle` (as ms) of a loaded hash, or None."""
    found: dict[bytes, int] = {}
    for i in range(0, len(fields) - 1, 2):
        name = fields[i]
        if name in _TIMING_FIELDS:
            try:
                found[name] = int(fields[i + 1])
            except ValueError:
                return None
    if len(found) < len(_TIMING_FIELDS):
        return None
    return found[b"_abs"], found[b"_accessed"], found[b"_idle"] * 1000
