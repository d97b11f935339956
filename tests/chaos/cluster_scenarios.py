"""The faults of the Cluster chaos suite, each injected under load on a master that holds live
sessions, repaired before it returns and marked on the run's timeline; each returns what it
observed of the cluster for the report and the assertions (scenarios.py does Sentinel's)."""

from __future__ import annotations

import asyncio
import re
import time

import redis
from redis.crc import key_slot

from deploy.local import probes
from deploy.local.cluster import LocalCluster, cluster_info
from deploy.local.netns import NetworkNamespace
from deploy.local.spec import Node
from tests.chaos.records import RunRecord
from tests.chaos.runner import AFFECTED
from tests.chaos.scenarios import REJOIN_TIMEOUT, Observations, direct_write

# cluster-node-timeout 1000: about 3 s to fail over, longer on a loaded 2-core machine.
FAILOVER_TIMEOUT = 30.0
# What a failing request may raise while a shard fails over or moves: the store is
# unavailable (a 503 with Retry-After), or WAIT found no replica in time; never a refusal.
OUTAGE_ERRORS = {"SessionStoreUnavailable", "DurabilityShortfall"}
_HASH_TAG = re.compile(r"\{(.+)\}")
_SESSION_ID = re.compile(r":s:\{(.+)\}$")


def assert_failures_are_outages(record: RunRecord) -> None:
    """Every failed request failed as an outage does (OUTAGE_ERRORS)."""
    refused = {
        kind: message
        for kind, message in record.error_examples.items()
        if kind.partition(": ")[2] not in OUTAGE_ERRORS
    }
    assert refused == {}


def keys_on(cluster: LocalCluster, node: Node) -> list[str]:
    """Every key a node holds itself (a master: the sessions of its slots)."""
    with cluster.client(node) as client:
        return list(client.scan_iter(count=1000))


def busiest_master(cluster: LocalCluster) -> tuple[Node, list[str]]:
    """The master holding the most keys (here: sessions), and those keys."""
    held = {node: keys_on(cluster, node) for node in cluster.live_masters()}
    node = max(held, key=lambda n: len(held[n]))
    return node, held[node]


def sessions_of(keys: list[str]) -> list[str]:
    """Session ids from the session keys (`{prefix}:s:{<sid>}`) among `keys`; user indexes
    and operation ids name no session of their own."""
    return [m[1] for key in keys if (m := _SESSION_ID.search(key))]


def wait_for_new_master(cluster: LocalCluster, slot: int, old: Node) -> Node:
    """Wait until most live nodes name another master for `slot` and it says ROLE master.
    Unlike LocalCluster.wait_for_failover this asks nothing of the old master, which may be
    cut off and saying cluster_state:fail."""
    found: list[Node] = []

    def problems() -> list[str]:
        owner = cluster.master_of(slot)
        if owner == old:
            return [f"{old.name} still serves slot {slot}"]
        with cluster.client(owner) as client:
            if probes.role(client)[0] != "master":
                return [f"{owner.name} is named for slot {slot} but is not master yet"]
        found.append(owner)
        return []

    probes.wait_until(
        time.monotonic() + FAILOVER_TIMEOUT,
        f"no failover of slot {slot} away from {old.name} within {FAILOVER_TIMEOUT:g}s",
        problems,
    )
    return found[-1]


def _probe_key(key: str) -> str:
    """A key in the same slot as `key` (same hash tag), safe to write directly."""
    tag = _HASH_TAG.search(key)
    assert tag is not None, key
    return "chaos:probe:{" + tag[1] + "}"


async def kill_slot_master_repeatedly(
    cluster: LocalCluster, record: RunRecord, *, repeats: int, settle_seconds: float
) -> Observations:
    """SIGKILL the master of a slot holding live sessions, wait until its replica serves the
    slot, restart the node and wait until it rejoins as that one's replica; `repeats` times,
    so the two nodes of the shard take turns."""
    _, keys = await asyncio.to_thread(busiest_master, cluster)
    slot = key_slot(keys[0].encode())
    killed, promoted = [], []
    for _ in range(repeats):
        old = await asyncio.to_thread(cluster.master_of, slot)
        record.mark("fault", f"SIGKILL {old.name}, master of slot {slot}")
        await asyncio.to_thread(cluster.kill, old)
        new = await asyncio.to_thread(wait_for_new_master, cluster, slot, old)
        await asyncio.to_thread(cluster.restart, old)
        record.mark("heal", f"restart {old.name}")
        await asyncio.to_thread(cluster.wait_for_replica, old, REJOIN_TIMEOUT)
        killed.append(old.name)
        promoted.append(new.name)
        await asyncio.sleep(settle_seconds)
    return {"slot": slot, "killed": killed, "promoted": promoted, AFFECTED: sessions_of(keys)}


async def pause_slot_master(
    cluster: LocalCluster, record: RunRecord, *, seconds: float
) -> Observations:
    """SIGSTOP the busiest master past cluster-node-timeout, for at least `seconds` and until
    its replica took over, SIGCONT it, wait until it rejoined as a replica, then write
    directly to it in one of its former slots."""
    old, keys = await asyncio.to_thread(busiest_master, cluster)
    slot = key_slot(keys[0].encode())
    record.mark("fault", f"SIGSTOP {old.name}")
    await asyncio.to_thread(cluster.pause, old)
    paused_at = time.monotonic()
    new = await asyncio.to_thread(wait_for_new_master, cluster, slot, old)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - paused_at)))
    await asyncio.to_thread(cluster.resume, old)
    paused_seconds = time.monotonic() - paused_at
    record.mark("heal", f"SIGCONT {old.name}")
    await asyncio.to_thread(cluster.wait_for_replica, old, REJOIN_TIMEOUT)
    return {
        "paused_seconds": round(paused_seconds, 3),
        "new_master": new.name,
        "direct_write_to_old_master": await asyncio.to_thread(
            direct_write, cluster, old, _probe_key(keys[0])
        ),
        AFFECTED: sessions_of(keys),
    }


async def partition_master(
    cluster: LocalCluster,
    record: RunRecord,
    namespace: NetworkNamespace,
    *,
    hold_seconds: float,
) -> Observations:
    """Cut the master in `namespace` (the cluster's first node) off from every other node
    while clients still reach it, hold the split past its replica's promotion, then heal."""
    old = cluster.nodes[0]
    keys = await asyncio.to_thread(keys_on, cluster, old)
    slot = key_slot(keys[0].encode())
    record.mark("fault", f"partition {old.name}")
    namespace.cut_off(namespace.peer_address)
    try:
        new = await asyncio.to_thread(wait_for_new_master, cluster, slot, old)
        await asyncio.sleep(hold_seconds)
        isolated_role = await asyncio.to_thread(_role, cluster, old)
        isolated_state = await asyncio.to_thread(_cluster_state, cluster, old)
        isolated_write = await asyncio.to_thread(direct_write, cluster, old, _probe_key(keys[0]))
    finally:
        namespace.reconnect()
    record.mark("heal", "partition healed")
    await asyncio.to_thread(cluster.wait_for_replica, old, REJOIN_TIMEOUT)
    return {
        "new_master": new.name,
        AFFECTED: sessions_of(keys),
        "isolated_master_role_during_split": isolated_role,
        "isolated_master_cluster_state": isolated_state,
        "direct_write_to_isolated_master": isolated_write,
    }


async def lose_shard(
    cluster: LocalCluster, record: RunRecord, *, hold_seconds: float
) -> Observations:
    """SIGKILL the master serving slot 0 and its replica together, keep the shard down for
    `hold_seconds` past the failure being agreed, then start both again, master first.
    Slot 0's master comes first in a client's slot map: redis-py takes it as its default
    node, the hardest shard for a client to lose."""
    master = await asyncio.to_thread(cluster.master_of, 0)
    keys = await asyncio.to_thread(keys_on, cluster, master)
    group = cluster.spec.group(master)
    replicas = [n for n in cluster.nodes if cluster.spec.group(n) == group and n != master]
    survivors = [n for n in cluster.nodes if cluster.spec.group(n) != group]
    record.mark("fault", "SIGKILL shard " + ", ".join(n.name for n in [master, *replicas]))
    for node in [master, *replicas]:
        await asyncio.to_thread(cluster.kill, node)
    # The other masters agree the shard failed after cluster-node-timeout, then (with
    # cluster-require-full-coverage no) go on serving their own slots.
    await asyncio.sleep(hold_seconds)
    states = {n.name: await asyncio.to_thread(_cluster_state, cluster, n) for n in survivors}
    for node in [master, *replicas]:
        await asyncio.to_thread(cluster.restart, node)
    record.mark("heal", "restart " + ", ".join(n.name for n in [master, *replicas]))
    return {
        "lost_shard": [n.name for n in [master, *replicas]],
        AFFECTED: sessions_of(keys),
        "survivors_cluster_state": states,
    }


async def reshard_live_slots(
    cluster: LocalCluster, record: RunRecord, *, batch_slots: int, ask_seconds: float
) -> Observations:
    """Move every slot holding sessions from the busiest master to another one, the way
    `redis-cli --cluster reshard` does, `batch_slots` slots at a time: IMPORTING on the
    target, MIGRATING on the source, MIGRATE of the slots' keys, then SETSLOT NODE. Each
    batch stays half-migrated (keys moved, slots MIGRATING) for `ask_seconds`, when clients
    get ASK; after SETSLOT NODE their stale maps get MOVED."""
    source, keys = await asyncio.to_thread(busiest_master, cluster)
    target = next(n for n in await asyncio.to_thread(cluster.live_masters) if n != source)
    # The first slot of each shard stays: LocalCluster's waits find a shard's master by it.
    kept = {first for first, _ in cluster.spec.slot_ranges()}
    slots = sorted({key_slot(key.encode()) for key in keys} - kept)
    record.mark("fault", f"reshard {len(slots)} slots {source.name} -> {target.name}")
    migrated, half_migrated = 0, []
    for i in range(0, len(slots), batch_slots):
        batch = slots[i : i + batch_slots]
        migrated += await asyncio.to_thread(cluster.open_slot_migration, source, target, batch)
        # From here to SETSLOT NODE, the batch's sessions are reached through ASK only.
        opened = record.now()
        await asyncio.sleep(ask_seconds)
        half_migrated.append(
            {"from": round(opened, 3), "to": round(record.now(), 3), "slots": batch}
        )
        await asyncio.to_thread(cluster.finish_slot_migration, source, target, batch)
    record.mark("heal", "resharding done")
    return {
        "source": source.name,
        "target": target.name,
        "slots_moved": len(slots),
        "keys_migrated": migrated,
        "half_migrated": half_migrated,
        AFFECTED: sessions_of([key for key in keys if key_slot(key.encode()) in slots]),
    }


def _role(cluster: LocalCluster, node: Node) -> str:
    with cluster.client(node) as client:
        return str(probes.role(client)[0])


def _cluster_state(cluster: LocalCluster, node: Node) -> str:
    try:
        with cluster.client(node) as client:
            return cluster_info(client).get("cluster_state", "?")
    except redis.RedisError as exc:
        return f"no answer: {type(exc).__name__}"
