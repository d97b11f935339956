"""Every Redis node killed at once and started again: the append-only file brings the
sessions back; only the last second before the kill is at risk (appendfsync everysec)."""

from __future__ import annotations

import pytest

from tests.chaos.runner import run_scenario
from tests.chaos.scenarios import restart_all_redis

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

# appendfsync everysec: at most about a second of writes is not yet on disk, two with a
# slow disk (Redis delays the write while an fsync is still running).
AOF_WINDOW_SECONDS = 2.0


async def test_sessions_survive_a_restart_of_every_redis_node(local_topology, profile):
    outcome = await run_scenario(
        "restart every Redis node",
        local_topology,
        lambda record: restart_all_redis(local_topology, record),
        profile,
    )
    verdict = outcome.verdict
    killed_at = outcome.record.marks_of("fault")[0].time
    assert [w for w in verdict.lost if killed_at - w.finished > AOF_WINDOW_SECONDS] == []
    assert verdict.phantom_sessions == []
    assert verdict.acknowledged_after_last_fault > 0
