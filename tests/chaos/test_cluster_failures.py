"""Cluster mode under load: the master of live sessions' slots killed again and again, paused
past cluster-node-timeout, and a whole shard lost. With durability on no acknowledged write is
lost (measured and reported with it off); the store recovers by itself; other shards serve on."""

from __future__ import annotations

import pytest

from tests.chaos.cluster_scenarios import (
    assert_failures_are_outages,
    kill_slot_master_repeatedly,
    lose_shard,
    pause_slot_master,
)
from tests.chaos.cluster_subject import ClusterSubject
from tests.chaos.runner import run_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

# cluster-node-timeout 1 s, the replica's election, then (min-replicas-to-write 1) the old
# master's restart and resync before the promoted one accepts writes again: NOREPLICAS until
# then is outage, not loss.
OUTAGE_BOUND_SECONDS = 30.0
SETTLE_SECONDS = 1.0
# appendfsync everysec: a shard killed whole (master and replica) can lose its last second or
# two of writes, as in test_full_restart.py.
AOF_WINDOW_SECONDS = 2.0


def _label(name: str, durability: bool) -> str:
    return f"cluster: {name}" + ("" if durability else ", durability off")


async def test_repeated_kills_of_a_slot_master_lose_no_acknowledged_write(
    chaos_cluster, cluster_durability, profile
):
    outcome = await run_scenario(
        _label("kill slot master", cluster_durability),
        ClusterSubject(chaos_cluster),
        lambda record: kill_slot_master_repeatedly(
            chaos_cluster,
            record,
            repeats=profile.cluster_kill_repeats,
            settle_seconds=SETTLE_SECONDS,
        ),
        profile,
        durability=cluster_durability,
    )
    verdict = outcome.verdict
    if cluster_durability:
        assert verdict.lost == []
    assert verdict.phantom_sessions == []
    assert_failures_are_outages(outcome.record)
    assert len(verdict.windows) == profile.cluster_kill_repeats
    assert all(w.switch_master is not None for w in verdict.windows)
    assert max(verdict.outages) < OUTAGE_BOUND_SECONDS
    assert verdict.acknowledged_after_last_fault > 0


async def test_a_paused_slot_master_rejoins_as_a_replica_and_loses_no_acknowledged_write(
    chaos_cluster, cluster_durability, profile
):
    outcome = await run_scenario(
        _label("pause slot master", cluster_durability),
        ClusterSubject(chaos_cluster),
        lambda record: pause_slot_master(chaos_cluster, record, seconds=profile.hold_seconds),
        profile,
        durability=cluster_durability,
    )
    verdict = outcome.verdict
    # Back, it is a replica: a write in one of its former slots is sent to the new master.
    assert outcome.observations["direct_write_to_old_master"].startswith("MovedError")
    if cluster_durability:
        assert verdict.lost == []
    assert verdict.phantom_sessions == []
    assert_failures_are_outages(outcome.record)
    assert verdict.windows[0].switch_master is not None
    assert max(verdict.outages) < OUTAGE_BOUND_SECONDS
    assert verdict.acknowledged_after_last_fault > 0


async def test_losing_a_whole_shard_leaves_the_other_shards_sessions_writable(
    chaos_cluster, cluster_durability, profile
):
    outcome = await run_scenario(
        _label("lose a shard", cluster_durability),
        ClusterSubject(chaos_cluster),
        lambda record: lose_shard(chaos_cluster, record, hold_seconds=profile.hold_seconds),
        profile,
        durability=cluster_durability,
    )
    verdict, record = outcome.verdict, outcome.record
    lost_shard = outcome.affected or frozenset()
    killed_at = record.marks_of("fault")[0].time
    restarted_at = record.marks_of("heal")[0].time
    elsewhere = [
        w
        for w in record.of_kind("write")
        if w.session not in lost_shard and killed_at < w.started and w.finished < restarted_at
    ]
    assert set(outcome.observations["survivors_cluster_state"].values()) == {"ok"}
    assert [w for w in verdict.lost if killed_at - w.finished > AOF_WINDOW_SECONDS] == []
    assert verdict.phantom_sessions == []
    assert_failures_are_outages(outcome.record)
    assert verdict.acknowledged_after_last_fault > 0
    assert elsewhere
    assert all(w.ok for w in elsewhere)
