"""Killing and pausing the master under load: with durability on no acknowledged write is
lost, the same store recovers by itself, and the write outage stays near Sentinel's own."""

from __future__ import annotations

import pytest

from tests.chaos.runner import run_scenario
from tests.chaos.scenarios import kill_master_repeatedly, pause_master

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

# Sentinel locally: down-after 2 s, then the vote and the promotion (failover-timeout 3 s).
OUTAGE_BOUND_SECONDS = 15.0
SETTLE_SECONDS = 1.0


async def test_repeated_master_kills_lose_no_acknowledged_write(local_topology, profile):
    outcome = await run_scenario(
        "kill master",
        local_topology,
        lambda record: kill_master_repeatedly(
            local_topology, record, repeats=profile.kill_repeats, settle_seconds=SETTLE_SECONDS
        ),
        profile,
    )
    verdict = outcome.verdict
    assert verdict.lost == []
    assert verdict.phantom_sessions == []
    assert len(verdict.windows) == profile.kill_repeats
    assert all(w.switch_master is not None for w in verdict.windows)
    assert max(verdict.outages) < OUTAGE_BOUND_SECONDS
    assert verdict.acknowledged_after_last_fault > 0


async def test_master_kills_over_tls_with_acl_users_lose_no_acknowledged_write(
    secure_topology, profile
):
    outcome = await run_scenario(
        "kill master, TLS + ACL",
        secure_topology,
        lambda record: kill_master_repeatedly(
            secure_topology,
            record,
            repeats=profile.kill_repeats_secure,
            settle_seconds=SETTLE_SECONDS,
        ),
        profile,
    )
    verdict = outcome.verdict
    assert verdict.lost == []
    assert verdict.phantom_sessions == []
    assert len(verdict.windows) == profile.kill_repeats_secure
    assert all(w.switch_master is not None for w in verdict.windows)
    assert max(verdict.outages) < OUTAGE_BOUND_SECONDS
    assert verdict.acknowledged_after_last_fault > 0


async def test_master_kills_without_durability_recover_and_report_their_losses(
    local_topology, profile
):
    outcome = await run_scenario(
        "kill master, durability off",
        local_topology,
        lambda record: kill_master_repeatedly(
            local_topology,
            record,
            repeats=profile.kill_repeats_without_durability,
            settle_seconds=SETTLE_SECONDS,
        ),
        profile,
        durability=False,
    )
    # Losses are possible here by design (asynchronous replication); the report counts them.
    assert max(outcome.verdict.outages) < OUTAGE_BOUND_SECONDS
    assert outcome.verdict.acknowledged_after_last_fault > 0


async def test_with_stale_reads_sessions_stay_readable_while_the_master_is_gone(
    local_topology, profile
):
    outcome = await run_scenario(
        "kill master, stale reads on",
        local_topology,
        lambda record: kill_master_repeatedly(
            local_topology, record, repeats=1, settle_seconds=SETTLE_SECONDS
        ),
        profile,
        stale_reads=True,
    )
    verdict = outcome.verdict
    assert verdict.lost == []
    assert verdict.reads_from_replicas > 0
    assert verdict.windows[0].reads_ok_in_outage > 0
    assert "read" not in verdict.errors


async def test_a_paused_master_is_demoted_on_return_and_loses_no_acknowledged_write(
    local_topology, profile
):
    outcome = await run_scenario(
        "pause master",
        local_topology,
        lambda record: pause_master(local_topology, record, seconds=profile.hold_seconds),
        profile,
    )
    verdict = outcome.verdict
    assert outcome.observations["direct_write_to_old_master"].startswith("ReadOnlyError")
    assert verdict.lost == []
    assert verdict.phantom_sessions == []
    assert max(verdict.outages) < OUTAGE_BOUND_SECONDS
    assert verdict.acknowledged_after_last_fault > 0
