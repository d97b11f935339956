"""How long and how often each benchmark runs: the full plan and the `--quick` smoke plan.

Rounds are what spreads and ratios are computed over; more rounds, steadier medians.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Plan:
    name: str
    library_rounds: int  # per operation and concurrency, each variant once per round
    library_seconds: float  # one timed round of one variant
    library_concurrency: tuple[int, ...]
    http_rounds: int  # per mix, each app once per round
    http_seconds: int  # one wrk run
    http_warm_up_seconds: int  # one untimed wrk run per app and mix first (0: none)
    http_connections: int  # wrk connections, and as many sessions per app
    round_trip_requests: int  # requests per kind whose Redis commands are counted
    failovers: int  # master kills; both clients are timed on each
    memory_sessions: int  # sessions per layout and configuration
    near_cache_logouts: int  # logouts elsewhere timed until the near cache refuses the id
    near_cache_sessions: int  # sessions cached to measure memory per cached session
    near_cache_failovers: int  # master kills read through, with and without the near cache

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


FULL = Plan(
    name="full",
    library_rounds=11,
    library_seconds=1.0,
    library_concurrency=(1, 64),
    http_rounds=7,
    http_seconds=4,
    http_warm_up_seconds=1,
    http_connections=32,
    round_trip_requests=100,
    failovers=5,
    memory_sessions=20,
    near_cache_logouts=200,
    near_cache_sessions=1000,
    near_cache_failovers=3,
)

QUICK = Plan(
    name="quick",
    library_rounds=2,
    library_seconds=0.2,
    library_concurrency=(1, 64),
    http_rounds=1,
    http_seconds=1,
    http_warm_up_seconds=0,
    http_connections=8,
    round_trip_requests=5,
    failovers=1,
    memory_sessions=2,
    near_cache_logouts=20,
    near_cache_sessions=200,
    near_cache_failovers=1,
)
