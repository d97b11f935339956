"""A local Redis Cluster whose first node (a master) runs in a network namespace of its own, so
it can be cut off from the other nodes while clients still reach it (deploy/local/netns.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from deploy.local.cluster import ClusterSpec, LocalCluster
from deploy.local.configs import _partition_directives
from deploy.local.processes import ManagedProcess
from deploy.local.spec import Node


@dataclass(frozen=True)
class PartitionableClusterSpec(ClusterSpec):
    """`host` is the namespace's peer address; the first node binds `netns_host` inside
    `netns`."""

    netns: str = ""
    netns_host: str = ""

    @property
    def nodes(self) -> list[Node]:
        first, *rest = super().nodes
        return [Node(first.name, first.kind, self.netns_host, first.port, self.netns), *rest]


class PartitionableCluster(LocalCluster):
    spec: PartitionableClusterSpec

    def _node_process(self, node: Node, program: str) -> ManagedProcess:
        process = super()._node_process(node, program)
        # The lines a Sentinel topology's nodes get in a namespace: each node sends from the
        # address it binds (cluster bus and replication too), so the cut tells it from clients.
        with open(process.argv[1], "a") as config:
            config.write(_partition_directives(node, self.spec))  # type: ignore[arg-type]
        return process

    def _wanted_ports(self) -> Iterator[tuple[str, int, str]]:
        # The node in the namespace binds an address the root namespace does not have; the
        # namespace is fresh, so nothing else listens there.
        return (
            (host, port, what)
            for host, port, what in super()._wanted_ports()
            if host != self.spec.netns_host
        )
