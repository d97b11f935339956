"""Figures with their spread: the median and quartiles of values from repeated rounds.

A comparison pairs round i of one variant with round i of another, so ratios come per round.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of `values`."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Spread:
    """One figure measured `n` times: its median, quartiles and extremes."""

    median: float
    p25: float
    p75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a figure needs at least one value")
        if len(values) == 1:
            only = values[0]
            return cls(only, only, only, only, only, 1)
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), q1, q3, min(values), max(values), len(values))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sample:
    """One timed round of one variant: throughput, latency percentiles, and the CPU time per
    operation of the Python process doing the work and of redis-server (steadier than
    throughput on a shared machine, since time spent waiting for a core is not counted)."""

    rate: float
    p50_ms: float
    p99_ms: float
    python_cpu_us: float
    redis_cpu_us: float
    count: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


METRICS = ("rate", "p50_ms", "p99_ms", "python_cpu_us", "redis_cpu_us")


def compare(rounds: dict[str, list[Sample]], reference: str) -> dict[str, Any]:
    """Every variant's figures, and its throughput over the reference's round by round."""
    summary: dict[str, Any] = {}
    for variant, samples in rounds.items():
        pairs = zip(samples, rounds[reference], strict=True)
        summary[variant] = {
            **{m: Spread.of([getattr(s, m) for s in samples]).to_json() for m in METRICS},
            "ratio_to_reference": Spread.of([s.rate / r.rate for s, r in pairs]).to_json(),
            "rounds": [s.to_json() for s in samples],
        }
    return {"reference": reference, "variants": summary}
