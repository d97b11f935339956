"""Runs one scenario end to end: sessions, load and sentinel listener up, fault injected and
repaired, load stopped, topology healed, every session read back, verdict reported."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from deploy.local.topology import LocalTopology
from sessionlib.config import Settings, load_settings
from sessionlib.store import SessionStore
from tests.chaos import report
from tests.chaos.checker import Verdict, check, read_back
from tests.chaos.harness import LoadGenerator, create_sessions
from tests.chaos.profile import ChaosProfile
from tests.chaos.records import RunRecord
from tests.chaos.scenarios import Observations
from tests.chaos.sentinel_events import SentinelEvents

Fault = Callable[[RunRecord], Awaitable[Observations]]
HEAL_TIMEOUT = 90.0


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    observations: Observations
    record: RunRecord


def chaos_settings(topology: LocalTopology, *, durability: bool, stale_reads: bool) -> Settings:
    """The library as a service would configure it, except the knobs under test."""
    return load_settings(
        "dev",
        redis=topology.redis_settings(),
        session={
            "durability": {"replicas": 1 if durability else 0, "on_shortfall": "fail"},
            "stale_reads_during_failover": stale_reads,
        },
    )


async def run_scenario(
    name: str,
    topology: LocalTopology,
    fault: Fault,
    profile: ChaosProfile,
    *,
    durability: bool = True,
    stale_reads: bool = False,
) -> Outcome:
    """Run `fault` under load with one store that lives through it all, then judge."""
    settings = chaos_settings(topology, durability=durability, stale_reads=stale_reads)
    store = SessionStore.from_settings(settings)
    try:
        sessions = await create_sessions(store, profile.workers * profile.sessions_per_worker)
        record = RunRecord()
        events = SentinelEvents(topology, record)
        load = LoadGenerator(
            store, sessions, record, workers=profile.workers, think_seconds=profile.think_seconds
        )
        events.start()
        load.start()
        try:
            await asyncio.sleep(profile.warmup_seconds)
            observations = await fault(record)
            await asyncio.sleep(profile.cooldown_seconds)
        finally:
            await load.stop()
            await events.stop()
        await asyncio.to_thread(topology.wait_for_health, HEAL_TIMEOUT)
        keys = {session: store.session_key(session) for session in sessions}
        stored = await asyncio.to_thread(read_back, topology, keys)
    finally:
        await store.close()
    verdict = check(record, stored)
    report.save(name, report.entry(verdict, observations, record, settings, profile), record)
    return Outcome(verdict, observations, record)
