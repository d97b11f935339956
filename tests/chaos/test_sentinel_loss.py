"""Losing sentinels: one of three goes unnoticed; two of three leave no quorum to fail over,
and the master, healthy, keeps serving every write."""

from __future__ import annotations

import pytest

from tests.chaos.runner import run_scenario
from tests.chaos.scenarios import kill_sentinels

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


@pytest.mark.parametrize("killed", [1, 2])
async def test_killing_sentinels_changes_nothing_for_clients(local_topology, profile, killed):
    outcome = await run_scenario(
        f"kill {killed} of 3 sentinels",
        local_topology,
        lambda record: kill_sentinels(
            local_topology, record, count=killed, hold_seconds=profile.hold_seconds
        ),
        profile,
    )
    verdict = outcome.verdict
    before = outcome.observations["master_before"]
    assert outcome.observations["master_named_by_survivors"] == [before] * (3 - killed)
    assert verdict.windows[0].switch_master is None
    assert verdict.errors == {}
    assert verdict.lost == []
    assert verdict.writes_acknowledged == verdict.writes
