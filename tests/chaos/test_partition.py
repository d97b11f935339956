"""A master cut off from its sentinels and replicas while clients still reach it (split
brain): with durability on, nothing it accepts alone is acknowledged, so nothing is lost."""

from __future__ import annotations

import pytest

from tests.chaos.runner import run_scenario
from tests.chaos.scenarios import partition_master

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

OUTAGE_BOUND_SECONDS = 15.0


async def test_an_isolated_master_acknowledges_nothing_that_is_lost(
    partitionable_topology, namespace, profile
):
    outcome = await run_scenario(
        "partition master",
        partitionable_topology,
        lambda record: partition_master(
            partitionable_topology, record, namespace, hold_seconds=profile.hold_seconds
        ),
        profile,
    )
    verdict = outcome.verdict
    assert outcome.observations["isolated_master_role_during_split"] == "master"
    assert verdict.lost == []
    assert verdict.phantom_sessions == []
    assert max(verdict.outages) < OUTAGE_BOUND_SECONDS
    assert verdict.acknowledged_after_last_fault > 0


async def test_without_durability_an_isolated_master_loses_what_it_acknowledged(
    partitionable_topology, namespace, profile
):
    outcome = await run_scenario(
        "partition master, durability off",
        partitionable_topology,
        lambda record: partition_master(
            partitionable_topology, record, namespace, hold_seconds=profile.hold_seconds
        ),
        profile,
        durability=False,
    )
    # Reported, not asserted: this run shows why the durability option exists.
    assert outcome.verdict.acknowledged_after_last_fault > 0
