"""Live resharding under load: every slot holding sessions on one master moves to another
while writers and readers run. Clients meet ASK while a slot is half-migrated and MOVED once
it is reassigned, and follow both: no acknowledged write is lost, with or without WAIT, and
next to no request fails (none in most runs; the report names any failure)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from tests.chaos.cluster_scenarios import assert_failures_are_outages, reshard_live_slots
from tests.chaos.cluster_subject import ClusterSubject
from tests.chaos.runner import run_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


async def test_resharding_the_slots_of_live_sessions_loses_nothing_and_redirects_clients(
    chaos_cluster, cluster_durability, profile
):
    outcome = await run_scenario(
        "cluster: live resharding" + ("" if cluster_durability else ", durability off"),
        ClusterSubject(chaos_cluster),
        lambda record: reshard_live_slots(
            chaos_cluster,
            record,
            batch_slots=profile.reshard_batch_slots,
            ask_seconds=profile.reshard_ask_seconds,
        ),
        profile,
        durability=cluster_durability,
    )
    verdict, observed = outcome.verdict, outcome.observations
    # Reads and writes of sessions whose slot was half-migrated: served through ASK only.
    # (A session's key has the id as its hash tag: the id's slot is the key's.)
    through_ask = [
        op
        for op in outcome.record.operations
        for window in observed["half_migrated"]
        if key_slot(op.session.encode()) in window["slots"]
        and window["from"] <= op.started < window["to"]
    ]
    assert {op.kind for op in through_ask if op.ok} == {"read", "write"}
    assert observed["slots_moved"] > 0
    assert observed["keys_migrated"] >= observed["slots_moved"]
    assert outcome.heard["redirections"]["ASK"] > 0
    assert outcome.heard["redirections"]["MOVED"] > 0
    assert verdict.lost == []
    assert verdict.phantom_sessions == []
    assert_failures_are_outages(outcome.record)
    assert verdict.writes - verdict.writes_acknowledged <= verdict.writes // 100
