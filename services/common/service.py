"""The app factory both services use: session middleware, propagation context, HTTP and
store metrics, `/healthz` `/readyz` `/metrics`, JSON errors, and log lines with request ids.

A service adds only its own routes; everything operational is here, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, disable_created_metrics
from starlette.responses import Response

from services.common.models import error_responses
from sessionlib import (
    SessionDataError,
    SessionError,
    SessionMiddleware,
    SessionStore,
    SessionStoreUnavailable,
    SessionTooLarge,
    Settings,
)
from sessionlib.metrics import (
    HttpMetricsMiddleware,
    NearCacheMetrics,
    StoreMetrics,
    metrics_response,
    service_registry,
)
from sessionlib.propagation import CallerContextMiddleware, current_request_id

log = logging.getLogger("services")

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# A readiness probe must answer before the orchestrator's own timeout, even while the
# store's retry layer is still trying.
READY_TIMEOUT_SECONDS = 2.0
STARTUP_SCRIPT_LOAD_SECONDS = 2.0
RETRY_AFTER_SECONDS = 1

Closer = Callable[[], Awaitable[None]]


class _RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


def configure_logging(service: str) -> None:
    """Log lines carry the service and the request id; never a whole session id (code
    that logs one goes through `sessionlib.ids.redact`)."""
    root = logging.getLogger()
    if any(isinstance(f, _RequestIdLogFilter) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdLogFilter())
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {service} %(name)s [req=%(request_id)s] %(message)s"
        )
    )
    root.addHandler(handler)
    root.setLevel(os.environ.get("SERVICE_LOG_LEVEL", "INFO").upper())


def unavailable(detail: str, retry_after: int = RETRY_AFTER_SECONDS) -> JSONResponse:
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(retry_after)}
    )


def _install_error_handlers(app: FastAPI) -> None:
    """Session errors raised in handlers get the same answers the middleware gives."""

    async def store_unavailable(_: Request, exc: Exception) -> Response:
        retry_after = getattr(exc, "retry_after_seconds", RETRY_AFTER_SECONDS)
        return unavailable("session store unavailable, retry shortly", retry_after)

    async def too_large(_: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": f"session too large: {exc}"}, status_code=413)

    async def bad_data(_: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def session_error(_: Request, exc: Exception) -> Response:
        log.warning("session error: %s", exc)
        return unavailable("session store unavailable, retry shortly")

    async def internal(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.add_exception_handler(SessionStoreUnavailable, store_unavailable)
    app.add_exception_handler(SessionTooLarge, too_large)
    app.add_exception_handler(SessionDataError, bad_data)
    app.add_exception_handler(SessionError, session_error)
    app.add_exception_handler(Exception, internal)


def _add_operational_routes(app: FastAPI, store: SessionStore, registry: CollectorRegistry) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive (it does not look at Redis)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses=error_responses(503))
    async def readyz() -> Response:
        """Ready when the session store's master answers; 503 otherwise."""
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await store.ping()
        except (SessionError, TimeoutError) as exc:
            log.warning("not ready: %s", exc or "store ping timed out")
            return unavailable("session store unreachable")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return metrics_response(registry, request.headers.get("accept"))


def create_service_app(
    name: str,
    settings: Settings,
    add_routes: Callable[[FastAPI], None],
    *,
    on_shutdown: Sequence[Closer] = (),
) -> FastAPI:
    """A FastAPI app with sessions from `settings`, probes, metrics and JSON errors, and
    the routes `add_routes` declares on it. `on_shutdown` closes what the service opened.

    Routes are declared on the app rather than included from a router: then an answer
    given before routing (a 503 while Redis is down) is still counted by route template.
    """
    configure_logging(name)
    # `*_created` series double what a scrape carries and no panel or rule reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = service_registry()
    store = SessionStore.from_settings(
        settings,
        observer=StoreMetrics(registry),
        # Its series exist only where the near cache is on (DESIGN §5).
        near_cache_observer=(
            NearCacheMetrics(registry) if settings.session.near_cache.enabled else None
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            # Warm the script cache; calls fall back on their own, so a store that is
            # down at start-up only makes the service unready, not dead.
            async with asyncio.timeout(STARTUP_SCRIPT_LOAD_SECONDS):
                await store.load_scripts()
        except (SessionError, TimeoutError) as exc:
            log.warning("session store not reachable at start-up: %s", exc or "timeout")
        yield
        for close in on_shutdown:
            await close()
        await store.close()

    app = FastAPI(
        title=name,
        version="0.1.0",
        lifespan=lifespan,
        responses=error_responses(503),
    )
    app.state.settings = settings
    app.state.store = store
    app.state.registry = registry
    _add_operational_routes(app, store, registry)
    add_routes(app)
    _install_error_handlers(app)
    # The last one added is the outermost: metrics see every answer, the caller context
    # wraps the sessions so it can read the session the middleware loaded.
    app.add_middleware(SessionMiddleware, store=store, exclude_paths=PROBE_PATHS)
    app.add_middleware(CallerContextMiddleware)
    app.add_middleware(HttpMetricsMiddleware, registry=registry)
    return app
