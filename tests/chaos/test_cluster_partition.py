"""A Cluster master cut off from every other node while clients still reach it: its replica
takes its slots, and with durability on nothing it accepts alone is acknowledged, so nothing
is lost (without durability, what it acknowledged in the first node-timeout is measured)."""

from __future__ import annotations

import pytest

from tests.chaos.cluster_scenarios import assert_failures_are_outages, partition_master
from tests.chaos.cluster_subject import ClusterSubject
from tests.chaos.runner import run_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

# As for a kill (test_cluster_failures.py): the promoted replica writes once the old master
# rejoins it, i.e. once the partition heals.
OUTAGE_BOUND_SECONDS = 30.0


async def test_an_isolated_cluster_master_acknowledges_nothing_that_is_lost(
    partitionable_cluster, namespace, cluster_durability, profile
):
    outcome = await run_scenario(
        "cluster: partition master" + ("" if cluster_durability else ", durability off"),
        ClusterSubject(partitionable_cluster),
        lambda record: partition_master(
            partitionable_cluster, record, namespace, hold_seconds=profile.hold_seconds
        ),
        profile,
        durability=cluster_durability,
    )
    verdict = outcome.verdict
    assert outcome.observations["isolated_master_role_during_split"] == "master"
    if cluster_durability:
        assert verdict.lost == []
    assert verdict.phantom_sessions == []
    assert_failures_are_outages(outcome.record)
    assert verdict.windows[0].switch_master is not None
    assert max(verdict.outages) < OUTAGE_BOUND_SECONDS
    assert verdict.acknowledged_after_last_fault > 0
