"""Redis commands per request for sessionlib and starsessions, from INFO commandstats deltas;
a MONITOR capture of the same requests splits what the app sent from what its scripts ran.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

import httpx
import redis

from bench.servers import AppServer

REQUESTS = {"read": ("GET", "/read"), "write": ("POST", "/write")}
WARM_UP_REQUESTS = 3
# What this module itself sends while it counts.
OWN_COMMANDS = {"config", "config|resetstat", "echo", "info", "monitor"}


def _calls(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()})


def count(
    redis_url: str, server: AppServer, cookie: str, kind: str, requests: int
) -> dict[str, Any]:
    """Commands per `kind` request, in total and by command, and how many the app sent."""
    method, path = REQUESTS[kind]
    marker = f"bench-end-{secrets.token_hex(8)}"
    with (
        httpx.Client(base_url=server.url, headers={"cookie": cookie}, timeout=10.0) as http,
        redis.Redis.from_url(redis_url, socket_timeout=10.0) as admin,
    ):
        for _ in range(WARM_UP_REQUESTS):
            http.request(method, path).raise_for_status()
        with admin.monitor() as monitor:
            admin.config_resetstat()
            for _ in range(requests):
                http.request(method, path).raise_for_status()
            admin.echo(marker)
            calls = +Counter(
                {name: n for name, n in _calls(admin).items() if name not in OWN_COMMANDS}
            )
            sent = in_scripts = 0
            while marker not in (seen := monitor.next_command())["command"]:
                name = seen["command"].split(" ", 1)[0].lower()
                if name in OWN_COMMANDS:
                    continue
                if seen["client_type"] == "lua":
                    in_scripts += 1
                else:
                    sent += 1
    total = sum(calls.values())
    if sent + in_scripts != total:
        raise RuntimeError(
            f"MONITOR saw {sent + in_scripts} commands, commandstats {total}: "
            "something else used Redis meanwhile"
        )
    return {
        "requests": requests,
        "commands_per_request": total / requests,
        "sent_per_request": sent / requests,
        "in_scripts_per_request": in_scripts / requests,
        "by_command": {name: n / requests for name, n in sorted(calls.items())},
    }


def run(
    redis_url: str, servers: dict[str, AppServer], cookies: dict[str, str], requests: int
) -> dict[str, Any]:
    """Read and write requests of each Redis-backed app, one session cookie each."""
    return {
        variant: {
            kind: count(redis_url, servers[variant], cookie, kind, requests) for kind in REQUESTS
        }
        for variant, cookie in cookies.items()
    }
