"""A local Redis Cluster as the chaos runner's subject: the store's settings in Cluster mode, a
listener on every node, and a cluster client that reads each session from its slot's master."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import ClusterNode

from deploy.local.cluster import LocalCluster
from tests.chaos.cluster_events import ClusterEvents
from tests.chaos.records import RunRecord


@dataclass(frozen=True)
class ClusterSubject:
    cluster: LocalCluster

    def redis_settings(self) -> dict[str, Any]:
        return self.cluster.redis_settings()

    def listener(self, record: RunRecord) -> ClusterEvents:
        return ClusterEvents(self.cluster, record)

    def wait_for_health(self, timeout: float) -> object:
        self.cluster.wait_for_health(timeout)
        return None

    def reader(self) -> redis.RedisCluster:
        first = self.cluster.nodes[0]
        return redis.RedisCluster(
            startup_nodes=[ClusterNode(node.host, node.port) for node in self.cluster.nodes],
            decode_responses=True,
            **self.cluster.login().client_kwargs(first),
        )
