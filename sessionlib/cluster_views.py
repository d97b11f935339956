"""What one Redis Cluster node says the cluster is: CLUSTER INFO and CLUSTER NODES (or, for
a user who may run only what the client needs, CLUSTER SHARDS) read into plain values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from sessionlib.serialization import as_text

SLOT_COUNT = 16384
# Flags under which a node serves nothing: seen failing by its peers, or only suspected.
DOWN_FLAGS = frozenset({"fail", "fail?"})
# A node the asked one is still meeting, or whose address it does not know.
UNSETTLED_FLAGS = frozenset({"handshake", "noaddr"})

SlotRange = tuple[int, int]
SlotMap = frozenset[tuple[str, int, tuple[SlotRange, ...]]]


@dataclass(frozen=True)
class ClusterNodeLine:
    """One line of CLUSTER NODES: what the asked node believes about one node."""

    node_id: str
    address: str
    flags: frozenset[str]
    master_id: str | None
    config_epoch: int
    slots: tuple[SlotRange, ...]
    open_slots: tuple[str, ...] = ()  # "[5->-<id>]" migrating, "[5-<-<id>]" importing

    @classmethod
    def parse(cls, line: str) -> ClusterNodeLine:
        words = line.split()
        slots: list[SlotRange] = []
        open_slots = []
        for word in words[8:]:
            if word.startswith("["):
                open_slots.append(word)
            else:
                first, _, last = word.partition("-")
                slots.append((int(first), int(last or first)))
        return cls(
            node_id=words[0],
            address=words[1].split("@")[0],  # "127.0.0.1:7001@17001[,hostname]"
            flags=frozenset(words[2].split(",")),
            master_id=None if words[3] == "-" else words[3],
            config_epoch=int(words[6]),
            slots=tuple(slots),
            open_slots=tuple(open_slots),
        )

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def is_down(self) -> bool:
        return bool(self.flags & DOWN_FLAGS)


@dataclass(frozen=True)
class ClusterView:
    """What one node answered: its CLUSTER INFO and its CLUSTER NODES, or (`partial`, for a
    user who may not run those) its CLUSTER SHARDS: no state, config epochs or open slots."""

    address: str
    info: dict[str, str]
    nodes: tuple[ClusterNodeLine, ...]
    partial: bool = False

    @property
    def myself(self) -> ClusterNodeLine | None:
        return next((node for node in self.nodes if "myself" in node.flags), None)

    def node(self, node_id: str) -> ClusterNodeLine | None:
        return next((node for node in self.nodes if node.node_id == node_id), None)

    def serving_masters(self) -> list[ClusterNodeLine]:
        """The masters this node says serve slots, in slot order."""
        return sorted((n for n in self.nodes if n.is_master and n.slots), key=lambda n: n.slots)

    def slot_map(self, epochs: bool = True) -> SlotMap:
        """Who serves which slots, with the config epoch that claim carries: what every
        node must agree on before a client can trust the slot map it loads."""
        return frozenset(
            (node.node_id, node.config_epoch if epochs else 0, node.slots)
            for node in self.serving_masters()
        )


async def read_view(client: Redis, address: str) -> ClusterView:
    """Ask the node `client` talks to (at `address`) how it sees the cluster."""
    try:
        info = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        nodes = await client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
    except redis_errors.NoPermissionError:
        # The application's user needs only CLUSTER SLOTS/SHARDS (DESIGN §3b grants no more).
        shards = await client.execute_command("CLUSTER", "SHARDS")  # type: ignore[no-untyped-call]
        return view_from_shards(address, shards)
    return view_from_nodes(address, as_text(info), as_text(nodes))


def view_from_nodes(address: str, info: str, nodes: str) -> ClusterView:
    fields = (line.partition(":") for line in info.splitlines())
    return ClusterView(
        address,
        {name: value.strip() for name, _, value in fields if value},
        tuple(ClusterNodeLine.parse(line) for line in nodes.splitlines() if line.strip()),
    )


def view_from_shards(address: str, reply: Any) -> ClusterView:
    """A partial view from CLUSTER SHARDS (RESP2 or RESP3): owners, roles and health."""
    nodes = []
    for shard in reply:
        fields = reply_fields(shard)
        bounds = [int(bound) for bound in fields["slots"]]
        slots = tuple(zip(bounds[::2], bounds[1::2], strict=True))
        members = [reply_fields(member) for member in fields["nodes"]]
        master_id = next(
            (as_text(m["id"]) for m in members if as_text(m["role"]) == "master"), None
        )
        for member in members:
            host = as_text(member.get("ip") or member["endpoint"])
            where = f"{host}:{int(member.get('port') or member.get('tls-port') or 0)}"
            master = as_text(member["role"]) == "master"
            flags = {"master" if master else "slave"}
            if as_text(member.get("health", "")).startswith("fail"):
                flags.add("fail")
            if where == address:
                flags.add("myself")
            nodes.append(
                ClusterNodeLine(
                    node_id=as_text(member["id"]),
                    address=where,
                    flags=frozenset(flags),
                    master_id=None if master else master_id,
                    config_epoch=0,
                    slots=slots if master else (),
                )
            )
    return ClusterView(address, {}, tuple(nodes), partial=True)


def reply_fields(reply: Any) -> dict[str, Any]:
    """A RESP3 map or a RESP2 flat list of names and values, as a dict."""
    if isinstance(reply, dict):
        return {as_text(name): value for name, value in reply.items()}
    return {as_text(name): value for name, value in zip(reply[::2], reply[1::2], strict=True)}


def format_ranges(ranges: Iterable[SlotRange]) -> str:
    """`0-5460, 6000` or `none`."""
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in sorted(ranges)) or "none"


def as_ranges(slots: Iterable[int]) -> list[SlotRange]:
    """Slot numbers as the fewest ranges."""
    ranges: list[SlotRange] = []
    for slot in sorted(slots):
        if ranges and ranges[-1][1] == slot - 1:
            ranges[-1] = (ranges[-1][0], slot)
        else:
            ranges.append((slot, slot))
    return ranges
