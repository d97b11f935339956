"""Watches every node of a Redis Cluster during a run: marks a replica taking over its master's
slots (`+promoted`) and a master rejoining as a replica (`+demoted`), and counts the MOVED and
ASK replies the nodes sent (Redis 7 `INFO errorstats`), summed over nodes and restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from deploy.local.cluster import LocalCluster
from deploy.local.spec import Node
from tests.chaos.records import RunRecord

REDIRECTIONS = ("MOVED", "ASK")
POLL_SECONDS = 0.2
# A paused or partitioned node must not hold up the poll of the others: each node has its
# own task, and gives up on an answer quickly.
ANSWER_TIMEOUT = 0.5


class ClusterEvents:
    """One polling task per node, one round trip per poll: ROLE for promotions and
    demotions (within one process: a restarted node is marked `+restarted`, and the role
    it reports while it starts is no promotion), INFO errorstats for redirections.

    A node's error counters restart at 0 with its process (a new run_id). Replies sent
    between a node's last poll and its SIGKILL are not counted: on a killed node the
    totals are a lower bound.
    """

    def __init__(self, cluster: LocalCluster, record: RunRecord) -> None:
        self.cluster = cluster
        self.record = record
        self.redirections: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._follow(node)) for node in self.cluster.nodes]

    async def stop(self) -> None:
        self._stopping = True
        # A last poll of every node counts the redirections of the run's final moments.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2 * ANSWER_TIMEOUT + POLL_SECONDS)
        for task in self._tasks:
            task.cancel()

    def summary(self) -> dict[str, Any]:
        return {
            "redirections": {kind: self.redirections[kind] for kind in REDIRECTIONS},
            "cluster_events": [f"{m.time:.3f}s {m.label}" for m in self.record.marks_of("cluster")],
        }

    async def _follow(self, node: Node) -> None:
        login = self.cluster.login().client_kwargs(node)
        client = Redis(
            host=node.host,
            port=node.port,
            socket_timeout=ANSWER_TIMEOUT,
            socket_connect_timeout=ANSWER_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # one try per poll: the next poll is the retry
            decode_responses=True,
            **login,
        )
        # What the node's current process said last: its run id, role and counters.
        run_id, role, seen = None, None, dict.fromkeys(REDIRECTIONS, 0)
        try:
            while True:
                stopping = self._stopping
                try:
                    pipe = client.pipeline(transaction=False)
                    pipe.execute_command("ROLE").info("server").info("errorstats")
                    reply, server, stats = await pipe.execute()
                except Exception:  # dead, paused or cut off: asked again shortly
                    reply = None
                if reply is not None:
                    now_role, counts = str(reply[0]), {k: _count(stats, k) for k in REDIRECTIONS}
                    if server["run_id"] != run_id:
                        if run_id is not None:
                            self.record.mark("cluster", f"+restarted {node.name}")
                        # The first poll is the baseline; a restarted process counts from 0.
                        seen = counts if run_id is None else dict.fromkeys(REDIRECTIONS, 0)
                        run_id, role = server["run_id"], None
                    if role is not None and now_role != role:
                        change = "+promoted" if now_role == "master" else "+demoted"
                        self.record.mark("cluster", f"{change} {node.name}")
                    role = now_role
                    for kind, count in counts.items():
                        self.redirections[kind] += count - seen[kind]
                    seen = counts
                if stopping:
                    return
                await asyncio.sleep(POLL_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()


def _count(errorstats: dict[str, Any], kind: str) -> int:
    entry = errorstats.get(f"errorstat_{kind}")
    return int(entry["count"]) if isinstance(entry, dict) else 0
