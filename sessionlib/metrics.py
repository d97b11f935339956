"""Prometheus metrics: the session store's contract names (DESIGN §5), the services'
HTTP requests by route template, and the `/metrics` response.

Every collector is registered once per `CollectorRegistry` (the global one by default),
so building two observers or two apps on one registry shares the series instead of
failing; tests pass a fresh registry. No label ever holds a session id, a user or a path.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionlib.near_cache import INVALIDATION_REASONS, REQUEST_RESULTS
from sessionlib.observer import STORE_OPERATIONS
from sessionlib.resilience import RETRY_REASONS

# Store calls take well under a millisecond on a healthy local Redis and up to the retry
# deadline (seconds) during a failover; the buckets span both.
OPERATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# From a login marker (~100 B) to the default per-session limit (256 KiB) and beyond.
SESSION_SIZE_BUCKETS = (128, 512, 1024, 4096, 16384, 65536, 262144, 1048576)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Series that exist (at 0) from the start, so rate() and absent() work before the first
# event: every operation (STORE_OPERATIONS) with each outcome below and each retry reason
# (RETRY_REASONS), and every destroy reason. Labels may still take other values later.

# The outcomes SessionStore reports: unavailable (retries exhausted, no master) is what a
# failover produces, so its series must exist before one for increase() to see the first.
KNOWN_OUTCOMES = ("success", "error", "unavailable")
KNOWN_DESTROY_REASONS = ("deleted", "regenerated", "revoked", "user_cap")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"

C = TypeVar("C")


class _PerRegistry(Generic[C]):
    """One set of collectors per registry, made on first use."""

    def __init__(self, factory: Callable[[CollectorRegistry], C]) -> None:
        self._factory = factory
        self._made: weakref.WeakKeyDictionary[CollectorRegistry, C] = weakref.WeakKeyDictionary()

    def get(self, registry: CollectorRegistry) -> C:
        if registry not in self._made:
            self._made[registry] = self._factory(registry)
        return self._made[registry]


class _StoreCollectors:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.operations = Counter(
            "sessionlib_store_operations_total",
            "Session store operations by outcome.",
            ["operation", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "sessionlib_store_operation_duration_seconds",
            "Time a session store operation took, retries included.",
            ["operation"],
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "sessionlib_store_retries_total",
            "Retries of session store operations by reason.",
            ["operation", "reason"],
            registry=registry,
        )
        self.failovers = Counter(
            "sessionlib_failovers_total",
            "Changes of the Redis master address seen by this process.",
            registry=registry,
        )
        self.master_info = Gauge(
            "sessionlib_redis_master_info",
            "1 for the Redis master this process writes to.",
            ["address"],
            registry=registry,
        )
        self.created = Counter(
            "sessionlib_sessions_created_total",
            "Sessions created (new or under a regenerated id).",
            registry=registry,
        )
        self.destroyed = Counter(
            "sessionlib_sessions_destroyed_total",
            "Sessions removed by this process, by reason.",
            ["reason"],
            registry=registry,
        )
        self.size = Histogram(
            "sessionlib_session_size_bytes",
            "Size of a session's attributes after a write.",
            buckets=SESSION_SIZE_BUCKETS,
            registry=registry,
        )
        self.shortfall = Counter(
            "sessionlib_durability_shortfall_total",
            "Writes acknowledged by fewer replicas than the durability setting asks.",
            registry=registry,
        )
        self.topology_refreshes = Counter(
            "sessionlib_cluster_topology_refreshes_total",
            "Slot map reloads by the Redis Cluster client (Cluster mode only).",
            registry=registry,
        )
        self.master: str | None = None
        for operation in STORE_OPERATIONS:
            self.duration.labels(operation)
            for outcome in KNOWN_OUTCOMES:
                self.operations.labels(operation, outcome)
            for reason in RETRY_REASONS:
                self.retries.labels(operation, reason)
        for reason in KNOWN_DESTROY_REASONS:
            self.destroyed.labels(reason)


_store_collectors = _PerRegistry(_StoreCollectors)


class StoreMetrics:
    """The `StoreObserver` that records what the session store does in Prometheus.

    Pass it to `SessionStore.from_settings(settings, observer=StoreMetrics())`.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._c = _store_collectors.get(registry)
        # Every store call reports here: its series are looked up once, not per call.
        self._operation_series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def operation(self, operation: str, outcome: str, seconds: float) -> None:
        series = self._operation_series.get((operation, outcome))
        if series is None:
            series = (
                self._c.operations.labels(operation, outcome),
                self._c.duration.labels(operation),
            )
            self._operation_series[operation, outcome] = series
        series[0].inc()
        series[1].observe(seconds)

    def retry(self, operation: str, reason: str) -> None:
        self._c.retries.labels(operation, reason).inc()

    def session_created(self) -> None:
        self._c.created.inc()

    def session_destroyed(self, reason: str) -> None:
        self._c.destroyed.labels(reason).inc()

    def session_size(self, size_bytes: int) -> None:
        self._c.size.observe(size_bytes)

    def durability_shortfall(self) -> None:
        self._c.shortfall.inc()

    def master_changed(self, address: str, *, failover: bool) -> None:
        """The master is now `address`; `failover` when it replaced a known master."""
        collectors = self._c
        if collectors.master is not None and collectors.master != address:
            # Only the current master has a series: `== 1` then needs no extra filter.
            collectors.master_info.remove(collectors.master)
        collectors.master = address
        collectors.master_info.labels(address).set(1)
        if failover:
            collectors.failovers.inc()

    def topology_refreshed(self) -> None:
        self._c.topology_refreshes.inc()


class _NearCacheCollectors:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "sessionlib_near_cache_requests_total",
            "Session loads that asked the near cache, by result (hit, miss, bypass, stale).",
            ["result"],
            registry=registry,
        )
        self.invalidations = Counter(
            "sessionlib_near_cache_invalidations_total",
            "Near cache entries dropped (per key) and flushes (per flush), by reason.",
            ["reason"],
            registry=registry,
        )
        # Bound once: the hit path then costs one dict lookup and one increment.
        self.by_result = {result: self.requests.labels(result) for result in REQUEST_RESULTS}
        self.by_reason = {
            reason: self.invalidations.labels(reason) for reason in INVALIDATION_REASONS
        }


_near_cache_collectors = _PerRegistry(_NearCacheCollectors)


class NearCacheMetrics:
    """The `NearCacheObserver` that records the near cache in Prometheus; its series
    exist only in processes that turn the near cache on (DESIGN §5)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._c = _near_cache_collectors.get(registry)

    def request(self, result: str) -> None:
        child = self._c.by_result.get(result)
        (child or self._c.requests.labels(result)).inc()

    def invalidated(self, reason: str, count: int = 1) -> None:
        child = self._c.by_reason.get(reason)
        (child or self._c.invalidations.labels(reason)).inc(count)


class _HttpCollectors:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route template, method and status class.",
            ["route", "method", "status_class"],
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to the end of the response, by route template and method.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )


_http_collectors = _PerRegistry(_HttpCollectors)


class HttpMetricsMiddleware:
    """Counts and times HTTP requests by route template, method and status class.

    Add it last (outermost) so it also sees responses that inner middleware produced.
    The route is the matched template (`/cart/items`), `<unmatched>` otherwise, never
    the raw path: paths carry ids and scanners make up endless ones.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry = REGISTRY) -> None:
        self.app = app
        self._c = _http_collectors.get(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before responding

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route, method = route_template(scope), _method(scope)
            self._c.requests.labels(route, method, f"{status // 100}xx").inc()
            self._c.duration.labels(route, method).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request, as the router recorded it;
    else the route the path would have reached, for answers given before routing (a
    503 from the session middleware must count against `/cart`, not `<unmatched>`)."""
    route = scope.get("route") or _route_for(scope, getattr(scope.get("app"), "routes", []))
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED_ROUTE


def _route_for(scope: Scope, routes: Iterable[object]) -> BaseRoute | None:
    """The route (or, for a wrong method, the path's route) among `routes` and the
    routes they contain. FastAPI's `include_router` wraps routes in an object whose
    insides are private: those are found only by routing, so declare routes on the app
    for answers before routing to carry their template."""
    partial = None
    for route in routes:
        if not isinstance(route, BaseRoute):
            continue
        match, _ = route.matches(scope)
        if match == Match.NONE:
            continue
        if getattr(route, "path_format", None) is None:
            route = _route_for(scope, getattr(route, "routes", None) or [])
        if match == Match.FULL and route is not None:
            return route
        partial = partial or route
    return partial


def _method(scope: Scope) -> str:
    method = str(scope.get("method", "")).upper()
    return method if method in HTTP_METHODS else "OTHER"


def service_registry() -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors a service exports,
    so each app owns its metrics and two apps in one process do not collide."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_response(registry: CollectorRegistry = REGISTRY, accept: str | None = None) -> Response:
    """The `/metrics` response: Prometheus text, or OpenMetrics when `accept` asks."""
    encoder, content_type = choose_encoder(accept or "")
    return Response(encoder(registry), media_type=content_type)
