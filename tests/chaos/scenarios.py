"""The faults, each injected under load and repaired before it returns, marked on the run's
timeline; each returns what it observed of the topology for the report and the assertions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis

from deploy.local import probes
from deploy.local.netns import NetworkNamespace
from deploy.local.process_set import ProcessSet
from deploy.local.spec import Node
from deploy.local.topology import LocalTopology
from tests.chaos.records import RunRecord

Observations = dict[str, Any]
# A restarted node comes back as master and waits for Sentinel to convert it (~10-20 s).
REJOIN_TIMEOUT = 60.0


async def kill_master_repeatedly(
    topology: LocalTopology, record: RunRecord, *, repeats: int, settle_seconds: float
) -> Observations:
    """SIGKILL whoever is master, wait for the failover, restart the node and wait until it
    is a replica again; `repeats` times."""
    masters = []
    for _ in range(repeats):
        old = await asyncio.to_thread(topology.master_address)
        node = topology.node(old)
        record.mark("fault", f"SIGKILL {node.name}")
        await asyncio.to_thread(topology.kill, node)
        masters.append(await asyncio.to_thread(topology.wait_for_failover, old))
        await asyncio.to_thread(topology.restart, node)
        record.mark("heal", f"restart {node.name}")
        await asyncio.to_thread(topology.wait_for_replica, node, REJOIN_TIMEOUT)
        await asyncio.sleep(settle_seconds)
    return {"masters": masters}


async def pause_master(
    topology: LocalTopology, record: RunRecord, *, seconds: float
) -> Observations:
    """SIGSTOP the master for at least `seconds` and until Sentinel has failed over, SIGCONT
    it, wait until Sentinel has demoted it, then try a write on it directly."""
    old = await asyncio.to_thread(topology.master_address)
    node = topology.node(old)
    record.mark("fault", f"SIGSTOP {node.name}")
    await asyncio.to_thread(topology.pause, node)
    paused_at = time.monotonic()
    new = await asyncio.to_thread(topology.wait_for_failover, old)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - paused_at)))
    await asyncio.to_thread(topology.resume, node)
    paused_seconds = time.monotonic() - paused_at
    record.mark("heal", f"SIGCONT {node.name}")
    await asyncio.to_thread(topology.wait_for_replica, node, REJOIN_TIMEOUT)
    return {
        "paused_seconds": round(paused_seconds, 3),
        "new_master": new,
        "direct_write_to_old_master": await asyncio.to_thread(direct_write, topology, node),
    }


async def partition_master(
    topology: LocalTopology,
    record: RunRecord,
    namespace: NetworkNamespace,
    *,
    hold_seconds: float,
) -> Observations:
    """Cut the master (in `namespace`) off from the sentinels and replicas while clients
    still reach it, hold the split past the failover, then heal it."""
    old = await asyncio.to_thread(topology.master_address)
    node = topology.node(old)
    record.mark("fault", f"partition {node.name}")
    namespace.cut_off(namespace.peer_address)
    try:
        new = await asyncio.to_thread(topology.wait_for_failover, old)
        await asyncio.sleep(hold_seconds)
        isolated_role = await asyncio.to_thread(_role, topology, node)
    finally:
        namespace.reconnect()
    record.mark("heal", "partition healed")
    await asyncio.to_thread(topology.wait_for_replica, node, REJOIN_TIMEOUT)
    return {"new_master": new, "isolated_master_role_during_split": isolated_role}


async def kill_sentinels(
    topology: LocalTopology, record: RunRecord, *, count: int, hold_seconds: float
) -> Observations:
    """SIGKILL `count` sentinels, keep them down for `hold_seconds`, restart them."""
    victims = topology.sentinel_nodes[:count]
    survivors = topology.sentinel_nodes[count:]
    before = await asyncio.to_thread(topology.master_address)
    record.mark("fault", "SIGKILL " + ", ".join(v.name for v in victims))
    for victim in victims:
        await asyncio.to_thread(topology.kill, victim)
    await asyncio.sleep(hold_seconds)
    named = [await asyncio.to_thread(_named_master, topology, s) for s in survivors]
    for victim in victims:
        await asyncio.to_thread(topology.restart, victim)
    record.mark("heal", "restart " + ", ".join(v.name for v in victims))
    return {"master_before": before, "master_named_by_survivors": named}


async def restart_all_redis(topology: LocalTopology, record: RunRecord) -> Observations:
    """SIGKILL every Redis node at once, then start them again, master first."""
    master = topology.node(await asyncio.to_thread(topology.master_address))
    record.mark("fault", "SIGKILL every Redis node")
    for node in topology.redis_nodes:
        await asyncio.to_thread(topology.kill, node)
    for node in sorted(topology.redis_nodes, key=lambda n: n != master):
        await asyncio.to_thread(topology.restart, node)
    record.mark("heal", "every Redis node restarted")
    return {"master_before": master.address}


def direct_write(nodes: ProcessSet[Any], node: Node, key: str = "chaos:direct-write-probe") -> str:
    """The reply of `node` to a write of `key` sent to it directly: "OK" or the error, with
    the class redis-py gives it (`ReadOnlyError` for READONLY, `MovedError` for MOVED)."""
    with nodes.client(node) as client:
        try:
            client.set(key, "1")
        except redis.ResponseError as exc:
            return f"{type(exc).__name__}: {exc}"
    return "OK"


def _role(topology: LocalTopology, node: Node) -> str:
    with topology.client(node) as client:
        return str(probes.role(client)[0])


def _named_master(topology: LocalTopology, sentinel: Node) -> str | None:
    with topology.client(sentinel) as client:
        return probes.named_master(client, topology.master_name)
