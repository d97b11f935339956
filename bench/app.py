"""The tiny FastAPI app of the HTTP benchmark in its variants: no sessions, sessionlib (on a
standalone Redis, with the near cache there, in Sentinel mode, in Cluster mode), starsessions
with its Redis store, and Starlette's signed-cookie `SessionMiddleware`.

Served by `python -m bench.app VARIANT PORT REDIS` (uvicorn, one worker, no access log);
REDIS is a redis:// URL, or sessionlib's RedisSettings as JSON for the Sentinel and Cluster
variants.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import MutableMapping
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.middleware.sessions import SessionMiddleware as CookieSessionMiddleware
from starsessions import SessionAutoloadMiddleware
from starsessions import SessionMiddleware as StarsessionsMiddleware
from starsessions.stores.redis import RedisStore

from bench.servers import settings_with
from bench.workload import CHANGED, changed_value, session_attributes
from sessionlib import SessionMiddleware, SessionStore
from sessionlib.config import RedisSettings, SessionSettings
from sessionlib.connection import create_redis
from sessionlib.metrics import NearCacheMetrics
from sessionlib.near_cache import REQUEST_RESULTS

# sessionlib on the same standalone Redis with session.near_cache on, built as a service
# builds it (`SessionStore.from_settings`, so the invalidation channel exists).
NEAR = "sessionlib-near"
VARIANTS = ("none", "sessionlib", "starsessions", "starlette-cookie", NEAR)
# sessionlib on a topology, as `SessionStore.from_settings` builds it (with the Sentinel
# watcher in Sentinel mode); the same endpoints and session as every other variant.
SENTINEL = "sessionlib-sentinel"
CLUSTER = "sessionlib-cluster"
TOPOLOGY_VARIANTS = (SENTINEL, CLUSTER)
IDLE_SECONDS = SessionSettings().idle_timeout_seconds
COOKIE_SECRET = "bench-only-secret"  # noqa: S105 - signs cookies of a throwaway benchmark
# The near cache variant's own counts (sessionlib_near_cache_requests_total by result), for
# the hit ratio of a run: outside the session middleware, read before and after each run.
NEAR_CACHE_COUNTS = "/near-cache"
NEAR_CACHE_REQUESTS = "sessionlib_near_cache_requests_total"


def _session(request: Request) -> MutableMapping[str, Any]:
    """The request's session; without a session middleware, a dict thrown away after."""
    session: MutableMapping[str, Any] = request.scope.get("session", {})
    return session


def _add_sessions(app: FastAPI, variant: str, redis: str) -> None:
    # Both Redis-backed variants get a client built by the same function, same settings.
    if variant == "sessionlib":
        store = SessionStore(create_redis(RedisSettings(url=redis)))
        app.add_middleware(SessionMiddleware, store=store, exclude_paths=["/healthz"])
    elif variant == NEAR:
        registry = CollectorRegistry()
        settings = settings_with(RedisSettings(url=redis), near_cache=True)
        # Its own key prefix: its invalidation channel (BCAST on `<prefix>:s:`) would
        # otherwise hear every write of the sessionlib variant on the same redis-server,
        # and Redis would spend (b)'s rounds pushing them.
        settings.session.key_prefix = NEAR
        store = SessionStore.from_settings(settings, near_cache_observer=NearCacheMetrics(registry))
        app.add_middleware(
            SessionMiddleware, store=store, exclude_paths=["/healthz", NEAR_CACHE_COUNTS]
        )

        @app.get(NEAR_CACHE_COUNTS)
        async def near_cache_counts() -> dict[str, float]:
            return {
                result: registry.get_sample_value(NEAR_CACHE_REQUESTS, {"result": result}) or 0.0
                for result in REQUEST_RESULTS
            }

    elif variant in TOPOLOGY_VARIANTS:
        store = SessionStore.from_settings(settings_with(RedisSettings.model_validate_json(redis)))
        app.add_middleware(SessionMiddleware, store=store, exclude_paths=["/healthz"])
    elif variant == "starsessions":
        app.add_middleware(SessionAutoloadMiddleware)
        app.add_middleware(
            StarsessionsMiddleware,
            store=RedisStore(connection=create_redis(RedisSettings(url=redis))),
            lifetime=IDLE_SECONDS,
            rolling=True,  # sliding expiry, as sessionlib's idle timeout
            cookie_https_only=False,
        )
    elif variant == "starlette-cookie":
        app.add_middleware(CookieSessionMiddleware, secret_key=COOKIE_SECRET, max_age=IDLE_SECONDS)
    elif variant != "none":
        known = ", ".join((*VARIANTS, *TOPOLOGY_VARIANTS))
        raise ValueError(f"unknown variant {variant!r}; choose one of {known}")


def create_app(variant: str, redis: str) -> FastAPI:
    """`POST /login` fills the session, `GET /read` reads it, `POST /write` changes one
    attribute; the same endpoints whatever keeps the session."""
    app = FastAPI()
    counter = itertools.count()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/login")
    async def login(request: Request) -> dict[str, int]:
        session = _session(request)
        session.update(session_attributes())
        return {"attributes": len(session)}

    @app.get("/read")
    async def read(request: Request) -> dict[str, int]:
        return {"attributes": len(_session(request))}

    @app.post("/write")
    async def write(request: Request) -> dict[str, int]:
        session = _session(request)
        session[CHANGED] = changed_value(next(counter))
        return {"attributes": len(session)}

    _add_sessions(app, variant, redis)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.app")
    parser.add_argument("variant", choices=(*VARIANTS, *TOPOLOGY_VARIANTS))
    parser.add_argument("port", type=int)
    parser.add_argument("redis", help="a redis:// URL, or RedisSettings as JSON")
    args = parser.parse_args()
    app = create_app(args.variant, args.redis)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
