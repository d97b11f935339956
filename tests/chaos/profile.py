"""How hard and how long the chaos suite pushes: `CHAOS_PROFILE=ci` (inside `make test`)
or `full` (`make chaos`); the scenarios and assertions are the same in both."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ChaosProfile:
    name: str
    workers: int
    sessions_per_worker: int
    # After each operation of a writer or reader: keeps the 2-core machine for Redis. Each
    # write adds an attribute, so enough sessions keep every one of them small.
    think_seconds: float
    warmup_seconds: float
    cooldown_seconds: float
    kill_repeats: int
    kill_repeats_without_durability: int
    # The same kills with TLS and ACL users (DESIGN §3b): the secure topology recovers alike.
    kill_repeats_secure: int
    hold_seconds: float
    # Cluster mode (tests/chaos/test_cluster_*.py): kills of one slot's master, and whether the
    # scenarios also run with durability off (they run with it on whenever sessionlib has WAIT
    # in Cluster mode; before that, off only).
    cluster_kill_repeats: int
    cluster_durability_off_too: bool
    # Live resharding: slots moved together, and how long each batch stays half-migrated
    # (keys moved, slots still MIGRATING) so that clients meet ASK on reads and writes.
    reshard_batch_slots: int
    reshard_ask_seconds: float


PROFILES = {
    "ci": ChaosProfile(
        name="ci",
        workers=8,
        sessions_per_worker=10,
        think_seconds=0.02,
        warmup_seconds=2.0,
        cooldown_seconds=3.0,
        kill_repeats=2,
        kill_repeats_without_durability=1,
        kill_repeats_secure=1,
        hold_seconds=3.0,
        cluster_kill_repeats=2,
        cluster_durability_off_too=False,
        reshard_batch_slots=8,
        reshard_ask_seconds=0.5,
    ),
    "full": ChaosProfile(
        name="full",
        workers=12,
        sessions_per_worker=20,
        think_seconds=0.03,
        warmup_seconds=3.0,
        cooldown_seconds=5.0,
        kill_repeats=5,
        kill_repeats_without_durability=5,
        kill_repeats_secure=3,
        hold_seconds=5.0,
        cluster_kill_repeats=5,
        cluster_durability_off_too=True,
        reshard_batch_slots=4,
        reshard_ask_seconds=1.0,
    ),
}


def current_profile() -> ChaosProfile:
    """The profile `CHAOS_PROFILE` names; `ci` when unset."""
    name = os.environ.get("CHAOS_PROFILE", "ci")
    if name not in PROFILES:
        raise ValueError(f"CHAOS_PROFILE must be one of {', '.join(PROFILES)}, not {name!r}")
    return PROFILES[name]
