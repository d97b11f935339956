"""Runs one scenario end to end: sessions, load and topology listener up, fault injected and
repaired, load stopped, topology healed, every session read back, verdict reported."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import redis

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
# A fault that reaches only some sessions (a Cluster shard's) names them in its observations
# under this key: its outage is measured on them (the others go on, see checker.check).
AFFECTED = "affected_sessions"


class Listener(Protocol):
    """Marks what the topology announces on the run's timeline while the load runs."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def summary(self) -> dict[str, Any]:
        """What it heard, as report fields."""
        ...


class Subject(Protocol):
    """The system under test, as the runner needs it whatever its topology (a LocalTopology
    through SentinelSubject, a LocalCluster through tests/chaos/cluster_subject.py)."""

    def redis_settings(self) -> dict[str, Any]: ...

    def listener(self, record: RunRecord) -> Listener: ...

    def wait_for_health(self, timeout: float) -> object: ...

    def reader(self) -> AbstractContextManager[redis.Redis | redis.RedisCluster]:
        """A client that reads every session from the master owning it."""
        ...


@dataclass(frozen=True)
class SentinelSubject:
    topology: LocalTopology

    def redis_settings(self) -> dict[str, Any]:
        return self.topology.redis_settings()

    def listener(self, record: RunRecord) -> Listener:
        return SentinelEvents(self.topology, record)

    def wait_for_health(self, timeout: float) -> object:
        return self.topology.wait_for_health(timeout)

    def reader(self) -> redis.Redis:
        return self.topology.client(self.topology.master_address())


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    observations: Observations
    record: RunRecord
    heard: dict[str, Any]  # the listener's summary: sentinel events, or cluster redirections
    affected: frozenset[str] | None = None  # the sessions the fault reached, when not all


def chaos_settings(subject: Subject, *, durability: bool, stale_reads: bool) -> Settings:
    """The library as a service would configure it, except the knobs under test."""
    return load_settings(
        "dev",
        redis=subject.redis_settings(),
        session={
            "durability": {"replicas": 1 if durability else 0, "on_shortfall": "fail"},
            "stale_reads_during_failover": stale_reads,
        },
    )


async def run_scenario(
    name: str,
    topology: LocalTopology | Subject,
    fault: Fault,
    profile: ChaosProfile,
    *,
    durability: bool = True,
    stale_reads: bool = False,
) -> Outcome:
    """Run `fault` under load with one store that lives through it all, then judge."""
    subject = SentinelSubject(topology) if isinstance(topology, LocalTopology) else topology
    settings = chaos_settings(subject, durability=durability, stale_reads=stale_reads)
    store = SessionStore.from_settings(settings)
    try:
        sessions = await create_sessions(store, profile.workers * profile.sessions_per_worker)
        record = RunRecord()
        events = subject.listener(record)
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
        await asyncio.to_thread(subject.wait_for_health, HEAL_TIMEOUT)
        keys = {session: store.session_key(session) for session in sessions}
        with subject.reader() as client:
            stored = await asyncio.to_thread(read_back, client, keys)
    finally:
        await store.close()
    reached = observations.pop(AFFECTED, None)
    affected = None if reached is None else frozenset(reached)
    verdict = check(record, stored, affected)
    heard = events.summary()
    data = report.entry(verdict, observations, record, settings, profile) | heard
    data["outage_measured_on"] = (
        "all sessions" if affected is None else f"the {len(affected)} sessions the fault reaches"
    )
    report.save(name, data, record)
    return Outcome(verdict, observations, record, heard, affected)
