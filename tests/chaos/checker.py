"""The Jepsen-style checker: reads every session back from the healed topology's master(s) and
judges the run's records: lost acknowledged writes, write outage per fault, errors, reads."""

from __future__ import annotations

import bisect
import itertools
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import redis

from tests.chaos.harness import COUNTER, marker
from tests.chaos.records import Mark, Operation, RunRecord


@dataclass(frozen=True)
class StoredCounters:
    """What one session holds once the run is over."""

    counter: int  # `n`; 0 when the session is gone
    markers: frozenset[str]  # the `w<k>` attributes present


def read_back(
    client: redis.Redis | redis.RedisCluster, keys: Mapping[str, str]
) -> dict[str, StoredCounters]:
    """Every session as the master that owns it holds it: `client` talks to the master (a
    Sentinel topology) or is a cluster client (one pipeline per node); decoded replies."""
    pipe = client.pipeline(transaction=False)
    for key in keys.values():
        pipe.hgetall(key)
    hashes = pipe.execute()
    return {
        session: StoredCounters(
            counter=int(json.loads(fields.get(COUNTER, "0"))),
            markers=frozenset(name for name in fields if name.startswith("w")),
        )
        for session, fields in zip(keys, hashes, strict=True)
    }


@dataclass(frozen=True)
class FaultWindow:
    """What clients saw after one fault, up to the next fault or the end of the load."""

    fault: Mark
    # The longest stretch without any acknowledged write: what a user of the library sees
    # as "writes are down", whether calls fail or only hang in the retry layer.
    outage_seconds: float
    outage_start: float
    outage_end: float
    # First write that failed after the fault, to the first one acknowledged after it.
    error_window_seconds: float | None
    switch_master: float | None
    switch_to_first_write_seconds: float | None
    # Writes begun after the switch was announced that still failed: the client was slow to
    # follow the new master (or the new master was not ready for writes yet).
    failed_after_switch: int
    # Reads begun while writes were down, and those of them answered before writes resumed.
    reads_in_outage: int
    reads_ok_in_outage: int


@dataclass(frozen=True)
class Verdict:
    lost: list[Operation]  # acknowledged writes whose `w<k>` is not in Redis
    phantom_sessions: list[str]  # hold a counter or marker never written: corruption
    windows: list[FaultWindow]
    writes: int
    writes_acknowledged: int
    reads: int
    reads_ok: int
    reads_from_replicas: int
    reads_behind: int  # answered with less than a write acknowledged before the read began
    errors: dict[str, dict[str, int]]  # operation kind -> exception type -> count
    acknowledged_after_last_fault: int

    @property
    def outages(self) -> list[float]:
        return [w.outage_seconds for w in self.windows]

    @property
    def read_availability(self) -> float:
        return self.reads_ok / self.reads if self.reads else 1.0


def check(
    record: RunRecord,
    stored: Mapping[str, StoredCounters],
    affected: Collection[str] | None = None,
) -> Verdict:
    """Judge a finished run against what Redis holds once the topology has healed. With
    `affected` (the sessions a fault can reach, e.g. one Cluster shard's) the windows of
    outage are measured on those sessions' operations alone."""
    writes, reads = record.of_kind("write"), record.of_kind("read")
    acked = [w for w in writes if w.ok]
    attempted: dict[str, set[str]] = defaultdict(set)
    for w in writes:
        attempted[w.session].add(marker(w.value or 0))
    lost = [w for w in acked if marker(w.value or 0) not in stored[w.session].markers]
    phantoms = [
        session
        for session, held in stored.items()
        if not held.markers <= attempted[session]
        or (held.counter and marker(held.counter) not in attempted[session])
    ]
    faults = record.marks_of("fault")
    # The load's end: what follows it (healing, reading back) is no outage.
    end = max((op.finished for op in record.operations), default=record.now())
    windows = [
        _window(record, fault, faults[i + 1].time if i + 1 < len(faults) else end, affected)
        for i, fault in enumerate(faults)
    ]
    errors: dict[str, Counter[str]] = defaultdict(Counter)
    for op in record.operations:
        if op.error is not None:
            errors[op.kind][op.error] += 1
    last_fault = faults[-1].time if faults else 0.0
    return Verdict(
        lost=lost,
        phantom_sessions=phantoms,
        windows=windows,
        writes=len(writes),
        writes_acknowledged=len(acked),
        reads=len(reads),
        reads_ok=sum(r.ok for r in reads),
        reads_from_replicas=sum(r.stale for r in reads),
        reads_behind=_reads_behind(acked, reads),
        errors={kind: dict(counts) for kind, counts in errors.items()},
        acknowledged_after_last_fault=sum(w.finished > last_fault for w in acked),
    )


def _window(
    record: RunRecord, fault: Mark, until: float, affected: Collection[str] | None
) -> FaultWindow:
    def reached(op: Operation) -> bool:
        return affected is None or op.session in affected

    writes = [w for w in record.of_kind("write") if fault.time < w.finished <= until and reached(w)]
    acks = sorted(w.finished for w in writes if w.ok)
    # Up to `until` too: writes that never came back are down until the next fault or the
    # end of the load.
    points = [fault.time, *acks, until]
    start, end = max(itertools.pairwise(points), key=lambda p: p[1] - p[0])
    failures = sorted(w.finished for w in writes if not w.ok)
    error_window = None
    if failures:
        recovered = [t for t in acks if t > failures[0]]
        error_window = (recovered[0] if recovered else until) - failures[0]
    switches = [m.time for m in record.switches() if fault.time < m.time <= until]
    switch = switches[0] if switches else None
    first_write = next((t - switch for t in acks if t > switch), None) if switch else None
    failed_after_switch = sum(
        not w.ok and switch is not None and w.started > switch for w in writes
    )
    reads = [r for r in record.of_kind("read") if start <= r.started <= end and reached(r)]
    answered = [r for r in reads if r.ok and r.finished <= end]
    return FaultWindow(
        fault=fault,
        outage_seconds=end - start,
        outage_start=start,
        outage_end=end,
        error_window_seconds=error_window,
        switch_master=switch,
        switch_to_first_write_seconds=first_write,
        failed_after_switch=failed_after_switch,
        reads_in_outage=len(reads),
        reads_ok_in_outage=len(answered),
    )


def _reads_behind(acked: list[Operation], reads: list[Operation]) -> int:
    """Reads that returned less than the last write acknowledged before they started."""
    times: dict[str, list[float]] = defaultdict(list)
    values: dict[str, list[int]] = defaultdict(list)
    for w in sorted(acked, key=lambda w: w.finished):
        times[w.session].append(w.finished)
        values[w.session].append(w.value or 0)
    behind = 0
    for r in reads:
        if r.ok:
            i = bisect.bisect_left(times[r.session], r.started)
            behind += bool(i and (r.value or 0) < values[r.session][i - 1])
    return behind


def median_and_max(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.median(values), max(values)
