"""Redis commands per request for sessionlib and starsessions, from INFO commandstats deltas;
a MONITOR capture of the same requests splits what the app sent from what its scripts ran.
In Cluster mode both are taken on every master and summed.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import httpx
import redis

from bench.servers import AppServer

REQUESTS = {"read": ("GET", "/read"), "write": ("POST", "/write")}
WARM_UP_REQUESTS = 3
# What this module itself sends while it counts.
OWN_COMMANDS = {"config", "config|resetstat", "echo", "info", "monitor"}
# What a replica sends its master (the offset it has, every second): counted by commandstats
# but never shown by MONITOR, and no request's doing.
REPLICATION_COMMANDS = {"replconf"}


def _calls(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()})


def count(
    node_urls: Sequence[str], server: AppServer, cookie: str, kind: str, requests: int
) -> dict[str, Any]:
    """Commands per `kind` request, in total and by command, and how many the app sent,
    over the nodes at `node_urls` (the one Redis, or every master of a cluster)."""
    method, path = REQUESTS[kind]
    marker = f"bench-end-{secrets.token_hex(8)}"
    ignored = OWN_COMMANDS | REPLICATION_COMMANDS
    with ExitStack() as stack:
        http = stack.enter_context(
            httpx.Client(base_url=server.url, headers={"cookie": cookie}, timeout=10.0)
        )
        admins = [
            stack.enter_context(redis.Redis.from_url(url, socket_timeout=10.0)) for url in node_urls
        ]
        for _ in range(WARM_UP_REQUESTS):
            http.request(method, path).raise_for_status()
        monitors = [stack.enter_context(admin.monitor()) for admin in admins]
        for admin in admins:
            admin.config_resetstat()
        for _ in range(requests):
            http.request(method, path).raise_for_status()
        calls: Counter[str] = Counter()
        sent = in_scripts = 0
        for admin, monitor in zip(admins, monitors, strict=True):
            admin.echo(marker)
            calls += Counter({name: n for name, n in _calls(admin).items() if name not in ignored})
            while marker not in (seen := monitor.next_command())["command"]:
                name = seen["command"].split(" ", 1)[0].lower()
                if name in ignored:
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
        "nodes": len(node_urls),
        "commands_per_request": total / requests,
        "sent_per_request": sent / requests,
        "in_scripts_per_request": in_scripts / requests,
        "by_command": {name: n / requests for name, n in sorted(calls.items())},
    }


def run(
    node_urls: dict[str, Sequence[str]],
    servers: dict[str, AppServer],
    cookies: dict[str, str],
    requests: int,
) -> dict[str, Any]:
    """Read and write requests of each Redis-backed app, one session cookie each, counted
    on the nodes `node_urls` names for it."""
    return {
        variant: {
            kind: count(node_urls[variant], servers[variant], cookie, kind, requests)
            for kind in REQUESTS
        }
        for variant, cookie in cookies.items()
    }
