"""What a local topology consists of: its nodes, ports and the Sentinel/Redis settings it uses.
A plain value, saved in the state file so later commands act on what `up` really started."""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, fields
from typing import Any, ClassVar, Literal, Self

from deploy.local.errors import TopologyError

NodeKind = Literal["redis", "sentinel"]


@dataclass(frozen=True)
class Node:
    """A Redis node or a sentinel of the topology, named `redis-1`, `sentinel-2`, ..."""

    name: str
    kind: NodeKind
    host: str
    port: int
    netns: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class SavedSpec:
    """A spec (a frozen dataclass) that the state file keeps as JSON settings, so later
    commands act on what `up` really started."""

    # Set by @dataclass on each spec; declared so the type checker knows a spec is one.
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_settings(self) -> dict[str, Any]:
        """The spec as JSON-ready settings for the state file."""
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Self:
        """The spec saved by `to_settings` (JSON turned the port tuples into lists); settings
        it does not know (from another version) are left out."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in settings.items()
            if key in known
        }
        return cls(**values)


@dataclass(frozen=True)
class TopologySpec(SavedSpec):
    """What to start. The first Redis port starts as master; the defaults are DESIGN §3."""

    redis_ports: tuple[int, ...] = (6380, 6381, 6382)
    sentinel_ports: tuple[int, ...] = (26380, 26381, 26382)
    host: str = "127.0.0.1"
    password: str | None = None
    master_name: str = "mymaster"
    quorum: int = 2
    # Not the 1000 a loopback seems to allow: a sentinel connects to an address at most once a
    # second, so one that switched to a new master may not have reached it a second later; it
    # would count that healthy master down and, with the first failover's votes still fresh,
    # fail over again (seen 1 failover in 4 with TLS). Redis's own Sentinel tests use 2000.
    down_after_ms: int = 2000
    failover_timeout_ms: int = 3000
    min_replicas_to_write: int = 1
    min_replicas_max_lag: int = 10
    # DESIGN §3b: TLS only (mutual) on every port, links included, and ACL users with
    # generated passwords (deploy/local/credentials.py) instead of `password`.
    secure: bool = False
    # For partition tests: the first Redis node (the one that starts as master) runs in this
    # network namespace at `netns_host`; everything else stays at `host` in the root one.
    netns: str | None = None
    netns_host: str | None = None

    def __post_init__(self) -> None:
        ports = [*self.redis_ports, *self.sentinel_ports]
        if len(set(ports)) != len(ports):
            raise TopologyError(f"every Redis and Sentinel port must differ, got {ports}")
        if any(not 0 < port < 65536 for port in ports):
            raise TopologyError(f"ports must be between 1 and 65535, got {ports}")
        if len(self.redis_ports) <= self.min_replicas_to_write:
            raise TopologyError(
                f"{len(self.redis_ports)} Redis port(s) leave fewer replicas than "
                f"min-replicas-to-write {self.min_replicas_to_write}: the master would refuse "
                "every write"
            )
        if self.password is not None and any(c in self.password for c in " \t\n\"'\\"):
            # Sentinel 7.0 writes auth-pass back into its config unquoted when it rewrites it,
            # so such a password would leave a config that a restarted sentinel cannot read.
            raise TopologyError("the Redis password must not contain spaces, quotes or \\")
        if self.secure and self.password is not None:
            raise TopologyError(
                "a secure topology has ACL users with generated passwords; it takes no --password"
            )
        if (self.netns is None) != (self.netns_host is None):
            raise TopologyError("netns and netns_host go together: give both or neither")
        if not 1 <= self.quorum <= len(self.sentinel_ports):
            raise TopologyError(
                f"quorum {self.quorum} needs between 1 and {len(self.sentinel_ports)} sentinels"
            )

    @property
    def redis_nodes(self) -> list[Node]:
        nodes = [
            Node(f"redis-{i}", "redis", self.host, port)
            for i, port in enumerate(self.redis_ports, 1)
        ]
        if self.netns is not None and self.netns_host is not None:
            first = nodes[0]
            nodes[0] = Node(first.name, first.kind, self.netns_host, first.port, self.netns)
        return nodes

    @property
    def sentinel_nodes(self) -> list[Node]:
        return [
            Node(f"sentinel-{i}", "sentinel", self.host, port)
            for i, port in enumerate(self.sentinel_ports, 1)
        ]
