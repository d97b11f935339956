"""Memory: Redis `MEMORY USAGE` per session as sessionlib (one hash) and starsessions (one JSON
blob) store a login of 10 attributes of 100 bytes, under Redis' default listpack limits and
under the ones deploy/redis/redis.conf ships.
"""

from __future__ import annotations

from typing import Any

import redis

from bench.http_level import login_cookies
from bench.servers import AppServer
from bench.stats import Spread
from sessionlib.config import SessionSettings

# Redis' own defaults, which a hash of 100-byte values exceeds.
REDIS_DEFAULT_LIMITS = {"hash-max-listpack-entries": "128", "hash-max-listpack-value": "64"}
STARSESSIONS_PREFIX = "starsessions."  # RedisStore's default


def _key(variant: str, cookie: str) -> str:
    session_id = cookie.split("=", 1)[1]
    if variant == "sessionlib":
        return f"{SessionSettings().key_prefix}:s:{{{session_id}}}"
    return STARSESSIONS_PREFIX + session_id


def _set_limits(client: redis.Redis, limits: dict[str, str]) -> None:
    for name, value in limits.items():
        client.config_set(name, value)


def _payload_bytes(client: redis.Redis, key: str) -> int:
    """What the session holds: field names and values of a hash, or a string's length."""
    if client.type(key) == "hash":
        return sum(len(name) + len(value) for name, value in client.hgetall(key).items())
    return int(client.strlen(key))


def _measure(client: redis.Redis, server: AppServer, sessions: int) -> dict[str, Any]:
    keys = [_key(server.variant, cookie) for cookie in login_cookies(server, sessions)]
    sizes = [float(client.memory_usage(key, samples=0) or 0) for key in keys]
    encodings = {client.object("ENCODING", key) for key in keys}
    return {
        "bytes_per_session": Spread.of(sizes).to_json(),
        "payload_bytes": Spread.of([float(_payload_bytes(client, key)) for key in keys]).to_json(),
        "encoding": ", ".join(sorted(encodings)),
    }


def run(redis_url: str, servers: dict[str, AppServer], sessions: int) -> dict[str, Any]:
    """Sessions created through each app's `/login` after setting the limits (Redis picks
    a hash's encoding when it is written); the shipped limits are restored after."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        shipped = {name: client.config_get(name)[name] for name in REDIS_DEFAULT_LIMITS}
        configurations = {"redis-defaults": REDIS_DEFAULT_LIMITS, "shipped": shipped}
        layouts: dict[str, dict[str, Any]] = {"sessionlib": {}, "starsessions": {}}
        try:
            for label, limits in configurations.items():
                _set_limits(client, limits)
                for variant in layouts:
                    layouts[variant][label] = _measure(client, servers[variant], sessions)
        finally:
            _set_limits(client, shipped)
    return {"configurations": configurations, "layouts": layouts}
