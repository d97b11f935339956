"""The near cache on its own: served only while trusted, never caches a read an
invalidation overtook, bounded by entries, bytes and staleness, and counted."""

import os
import time

import pytest
from prometheus_client import CollectorRegistry

from sessionlib import near_cache as near_cache_module
from sessionlib.config import NearCacheSettings, SessionSettings, load_settings
from sessionlib.errors import ConfigurationError
from sessionlib.metrics import NearCacheMetrics
from sessionlib.near_cache import INVALIDATION_REASONS, REQUEST_RESULTS, NearCache

HOUR_MS = 3600 * 1000


class FakeClock:
    """Stands in for the `time` module inside sessionlib.near_cache."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = time.time()

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(near_cache_module, "time", fake)
    return fake


def session_hash(clock: FakeClock, *, idle_s: int = 1800, abs_in_ms: int = HOUR_MS, **attrs):
    """The flat field list the load script returns for a live session."""
    now_ms = int(clock.wall * 1000)
    fields = {
        b"_created": now_ms,
        b"_accessed": now_ms,
        b"_idle": idle_s,
        b"_abs": now_ms + abs_in_ms,
        b"_ver": 1,
        **{name.encode(): value for name, value in attrs.items()},
    }
    return [x if isinstance(x, bytes) else str(x).encode() for kv in fields.items() for x in kv]


def trusted_cache(**bounds) -> NearCache:
    cache = NearCache(
        max_entries=bounds.pop("max_entries", 100),
        max_bytes=bounds.pop("max_bytes", 1 << 20),
        max_staleness_seconds=bounds.pop("max_staleness_seconds", 30.0),
        **bounds,
    )
    cache.mark_trusted()
    return cache


def cached(cache: NearCache, sid: str, fields) -> bool:
    return cache.put(cache.begin_read(), sid, fields)


def test_a_cached_session_is_served_from_memory_as_loaded(clock):
    cache = trusted_cache()
    fields = session_hash(clock, cart='["a"]')
    cached(cache, "sid-1", fields)
    hit = cache.get("sid-1")
    assert hit is not None
    assert list(hit.fields) == fields
    assert hit.size_bytes > sum(len(f) for f in fields)


def test_nothing_is_served_or_stored_until_the_channel_marks_the_cache_trusted(clock):
    cache = NearCache(max_entries=10, max_bytes=1 << 20, max_staleness_seconds=30)
    assert not cached(cache, "sid-1", session_hash(clock))
    assert cache.get("sid-1") is None
    cache.mark_trusted()
    assert cached(cache, "sid-1", session_hash(clock))
    assert cache.get("sid-1") is not None


def test_losing_trust_flushes_everything_and_stops_serving(clock):
    cache = trusted_cache()
    cached(cache, "sid-1", session_hash(clock))
    cache.mark_untrusted("channel_lost")
    assert len(cache) == 0 and cache.size_bytes == 0
    assert cache.get("sid-1") is None


def test_a_gap_in_the_channel_keeps_the_flushed_entries_as_last_known_copies(clock):
    cache = trusted_cache()
    fields = session_hash(clock, cart='["a"]')
    cached(cache, "sid-1", fields)

    cache.mark_untrusted("channel_lost")

    assert cache.get("sid-1") is None  # never served as current
    last = cache.last_known("sid-1")  # but there for a load that finds no master
    assert last is not None and list(last.fields) == fields
    assert cache.last_known("sid-2") is None


def test_an_invalidation_or_a_local_write_drops_a_last_known_copy(clock):
    cache = trusted_cache()
    cached(cache, "sid-1", session_hash(clock))
    cached(cache, "sid-2", session_hash(clock))
    cache.mark_untrusted("health_check")

    cache.invalidate_many(["sid-1"], "key")  # a logout elsewhere, heard before the gap
    cache.invalidate("sid-2")  # this process wrote it

    assert cache.last_known("sid-1") is None
    assert cache.last_known("sid-2") is None


def test_last_known_copies_are_bounded_by_staleness_expiry_and_size(clock):
    cache = trusted_cache(max_entries=2, max_staleness_seconds=10.0)
    for n in range(3):
        cached(cache, f"sid-{n}", session_hash(clock))
    cached(cache, "short", session_hash(clock, idle_s=4))
    cache.mark_untrusted("channel_lost")
    assert cache.last_known("sid-0") is None  # beyond max_entries

    clock.advance(5)
    assert cache.last_known("short") is None  # the session itself expired
    clock.advance(6)
    assert cache.last_known("sid-2") is None  # past max staleness


def test_emptying_redis_drops_the_last_known_copies_too(clock):
    cache = trusted_cache()
    cached(cache, "sid-1", session_hash(clock))
    cache.mark_untrusted("channel_lost")

    cache.flush("flush_all")

    assert cache.last_known("sid-1") is None


def test_a_read_overtaken_by_an_invalidation_of_its_key_is_not_cached(clock):
    cache = trusted_cache()
    ticket = cache.begin_read()  # the Redis read starts
    cache.invalidate_many(["sid-1"], "key")  # another service writes meanwhile
    assert not cache.put(ticket, "sid-1", session_hash(clock))
    assert cache.get("sid-1") is None
    assert cache.refused_puts == 1


def test_an_invalidation_of_another_key_does_not_spoil_a_read_in_flight(clock):
    cache = trusted_cache()
    ticket = cache.begin_read()
    cache.invalidate_many(["sid-2"], "key")
    assert cache.put(ticket, "sid-1", session_hash(clock))


def test_a_read_in_flight_across_a_flush_or_a_gap_in_the_channel_is_not_cached(clock):
    cache = trusted_cache()
    across_flush = cache.begin_read()
    cache.flush("flush_all")
    assert not cache.put(across_flush, "sid-1", session_hash(clock))

    across_gap = cache.begin_read()
    cache.mark_untrusted("channel_lost")
    begun_while_untrusted = cache.begin_read()
    cache.mark_trusted()
    assert not cache.put(across_gap, "sid-1", session_hash(clock))
    assert not cache.put(begun_while_untrusted, "sid-1", session_hash(clock))
    assert cached(cache, "sid-1", session_hash(clock))


def test_a_read_that_outlives_more_invalidations_than_are_remembered_is_not_cached(clock):
    cache = trusted_cache()
    ticket = cache.begin_read()
    cache.invalidate_many((f"other-{n}" for n in range(5000)), "key")
    assert not cache.put(ticket, "sid-1", session_hash(clock))


def test_a_local_write_forgets_the_session_at_once(clock):
    cache = trusted_cache()
    cached(cache, "sid-1", session_hash(clock))
    in_flight = cache.begin_read()
    cache.invalidate("sid-1")
    assert cache.get("sid-1") is None
    assert not cache.put(in_flight, "sid-1", session_hash(clock))


def test_the_least_recently_used_session_goes_first_beyond_max_entries(clock):
    cache = trusted_cache(max_entries=2)
    cached(cache, "a", session_hash(clock))
    cached(cache, "b", session_hash(clock))
    cache.get("a")  # "b" is now the least recently used
    cached(cache, "c", session_hash(clock))
    assert "a" in cache and "c" in cache and "b" not in cache


def test_the_least_recently_used_sessions_go_first_beyond_max_bytes(clock):
    one = trusted_cache()
    cached(one, "probe", session_hash(clock, blob="x" * 1000))
    entry_bytes = one.size_bytes
    cache = trusted_cache(max_bytes=int(entry_bytes * 2.5))
    for sid in ("a", "b", "c"):
        cached(cache, sid, session_hash(clock, blob="x" * 1000))
    assert "a" not in cache and "b" in cache and "c" in cache
    assert cache.size_bytes <= cache.max_bytes


def test_a_session_larger_than_max_bytes_is_not_cached_and_evicts_nothing(clock):
    cache = trusted_cache(max_bytes=2048)
    cached(cache, "small", session_hash(clock))
    assert not cached(cache, "huge", session_hash(clock, blob="x" * 4096))
    assert "small" in cache


def test_an_entry_is_not_served_past_max_staleness_even_without_invalidation(clock):
    cache = trusted_cache(max_staleness_seconds=5.0)
    cached(cache, "sid-1", session_hash(clock))
    clock.advance(4.9)
    assert cache.get("sid-1") is not None
    clock.advance(0.2)
    assert cache.get("sid-1") is None
    assert "sid-1" not in cache


def test_staleness_counts_from_when_the_read_began(clock):
    cache = trusted_cache(max_staleness_seconds=5.0)
    ticket = cache.begin_read()
    clock.advance(4.0)  # a slow read
    cache.put(ticket, "sid-1", session_hash(clock))
    clock.advance(1.1)
    assert cache.get("sid-1") is None


def test_an_entry_is_not_served_once_the_session_itself_expired(clock):
    cache = trusted_cache(max_staleness_seconds=30.0)
    cached(cache, "sid-1", session_hash(clock, abs_in_ms=2000))
    clock.advance(2.1)
    assert cache.get("sid-1") is None


def test_an_entry_stops_being_served_when_the_ttl_refresh_is_due(clock):
    cache = trusted_cache(refresh_throttle_seconds=10.0)
    cached(cache, "sid-1", session_hash(clock))
    clock.advance(9.0)
    assert cache.get("sid-1") is not None
    clock.advance(1.5)  # the next load must reach Redis and slide the TTL
    assert cache.get("sid-1") is None


def test_requests_and_invalidations_are_counted_by_result_and_reason(clock):
    registry = CollectorRegistry()
    cache = NearCache(
        max_entries=1,
        max_bytes=1 << 20,
        max_staleness_seconds=5.0,
        observer=NearCacheMetrics(registry),
    )
    cache.get("sid-1")  # bypass: not trusted yet
    cache.mark_trusted()
    cache.get("sid-1")  # miss
    cached(cache, "sid-1", session_hash(clock))
    cache.get("sid-1")  # hit
    cached(cache, "sid-2", session_hash(clock))  # evicts sid-1
    cache.invalidate_many(["sid-2", "sid-3"], "key")
    cached(cache, "sid-4", session_hash(clock))
    clock.advance(6)
    cache.get("sid-4")  # stale: a miss
    cache.mark_untrusted("channel_lost")

    def count(name, **labels):
        return registry.get_sample_value(name, labels)

    requests = "sessionlib_near_cache_requests_total"
    invalidations = "sessionlib_near_cache_invalidations_total"
    assert count(requests, result="bypass") == 1
    assert count(requests, result="miss") == 2
    assert count(requests, result="hit") == 1
    assert count(invalidations, reason="evicted") == 1
    assert count(invalidations, reason="key") == 2
    assert count(invalidations, reason="staleness") == 1
    assert count(invalidations, reason="channel_lost") == 1


def test_every_near_cache_series_exists_at_zero_once_the_cache_is_on():
    registry = CollectorRegistry()
    NearCacheMetrics(registry)
    for result in REQUEST_RESULTS:
        labels = {"result": result}
        assert registry.get_sample_value("sessionlib_near_cache_requests_total", labels) == 0
    for reason in INVALIDATION_REASONS:
        labels = {"reason": reason}
        assert registry.get_sample_value("sessionlib_near_cache_invalidations_total", labels) == 0


def test_the_near_cache_is_off_by_default():
    assert SessionSettings().near_cache.enabled is False


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_entries": 0}, "session.near_cache.max_entries"),
        ({"max_bytes": 10}, "session.near_cache.max_bytes"),
        ({"max_staleness_seconds": 0}, "session.near_cache.max_staleness_seconds"),
        (
            {"max_staleness_seconds": 1, "health_check_interval_seconds": 2},
            "SESSIONLIB_SESSION__NEAR_CACHE__HEALTH_CHECK_INTERVAL_SECONDS",
        ),
    ],
)
def test_near_cache_settings_are_validated_with_the_setting_named(settings, named):
    with pytest.raises(ConfigurationError, match=named.replace(".", r"\.")):
        load_settings("dev", session={"near_cache": settings})


def test_near_cache_settings_come_from_the_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith("SESSIONLIB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SESSIONLIB_SESSION__NEAR_CACHE__ENABLED", "true")
    monkeypatch.setenv("SESSIONLIB_SESSION__NEAR_CACHE__MAX_ENTRIES", "50")
    near = load_settings("dev").session.near_cache
    assert near == NearCacheSettings(enabled=True, max_entries=50)
