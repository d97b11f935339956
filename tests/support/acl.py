"""Reading the ACL LOG of the secure local servers (Sentinel topology or Redis Cluster), for
tests: a command refused to any user lands there, so an empty log proves every right was there."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from deploy.local.process_set import ProcessSet
from deploy.local.processes import liveness
from deploy.local.spec import Node


def reset_acl_logs(servers: ProcessSet[Any], nodes: Iterable[Node]) -> None:
    for node in nodes:
        with servers.client(node) as admin:
            admin.execute_command("ACL", "LOG", "RESET")


def acl_denials(servers: ProcessSet[Any], nodes: Iterable[Node]) -> dict[str, list[str]]:
    """`user: command or key` of every refusal each running node of `nodes` logged, by node
    name (paused and dead nodes are skipped)."""
    running = {p.name for p in servers.processes if liveness(p) == "alive"}
    found = {}
    for node in nodes:
        if node.name not in running:
            continue
        with servers.client(node) as admin:
            entries = admin.execute_command("ACL", "LOG")
        refusals = [dict(zip(e[::2], e[1::2], strict=True)) for e in entries]
        if refusals:
            found[node.name] = [f"{r['username']}: {r['object']}" for r in refusals]
    return found
