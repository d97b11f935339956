"""The chaos suite's lost-write checker, on hand-made records: it must catch a lost write
even when later writes hid it, and measure the outage clients saw after a fault."""

from tests.chaos.checker import StoredCounters, check
from tests.chaos.harness import marker
from tests.chaos.records import Mark, Operation, RunRecord


def write(k: int, started: float, finished: float, error: str | None = None) -> Operation:
    return Operation("write", "s", k, started, finished, error)


def record_of(*operations: Operation, marks: tuple[Mark, ...] = ()) -> RunRecord:
    record = RunRecord(started_at=0.0)
    record.operations.extend(operations)
    record.marks.extend(marks)
    return record


def held(*ks: int) -> dict[str, StoredCounters]:
    return {"s": StoredCounters(max(ks, default=0), frozenset(marker(k) for k in ks))}


def test_an_acknowledged_write_missing_from_redis_is_lost_even_when_later_ones_arrived():
    record = record_of(write(1, 0.0, 0.1), write(2, 0.2, 0.3), write(3, 0.4, 0.5))
    verdict = check(record, held(1, 3))
    assert [w.value for w in verdict.lost] == [2]


def test_a_failed_write_may_or_may_not_have_landed():
    record = record_of(write(1, 0.0, 0.1), write(2, 0.2, 0.3, "DurabilityShortfall"))
    assert check(record, held(1)).lost == []
    assert check(record, held(1, 2)).lost == []


def test_a_value_nobody_wrote_marks_the_session_as_corrupt():
    record = record_of(write(1, 0.0, 0.1))
    assert check(record, held(1, 7)).phantom_sessions == ["s"]


def test_the_outage_is_the_longest_stretch_without_an_acknowledged_write_after_the_fault():
    fault = Mark(1.0, "fault", "SIGKILL redis-1")
    switch = Mark(3.0, "sentinel", "+switch-master mymaster a 1 b 2")
    record = record_of(
        write(1, 0.8, 0.9),
        write(2, 0.95, 1.1),
        write(3, 1.1, 2.0, "SessionStoreUnavailable"),
        write(4, 2.0, 3.5),
        write(5, 3.5, 3.6),
        marks=(fault, switch),
    )
    window = check(record, held(1, 2, 4, 5)).windows[0]
    assert (window.outage_start, window.outage_end) == (1.1, 3.5)
    assert window.error_window_seconds == 1.5
    assert window.switch_to_first_write_seconds == 0.5


def test_a_fault_that_reaches_one_shard_is_measured_on_that_shards_sessions_and_its_promotion():
    fault = Mark(1.0, "fault", "SIGKILL cluster-2")
    promoted = Mark(3.0, "cluster", "+promoted cluster-5")
    on_shard = [
        Operation("write", "s", 1, 0.8, 0.9),
        Operation("write", "s", 2, 1.0, 3.2, "SessionStoreUnavailable"),
        Operation("write", "s", 3, 3.2, 3.4),
    ]
    elsewhere = [Operation("write", "t", k, 1.0 + k / 10, 1.05 + k / 10) for k in range(1, 20)]
    record = record_of(*on_shard, *elsewhere, marks=(fault, promoted))
    stored = held(1, 3) | {"t": StoredCounters(19, frozenset(marker(k) for k in range(1, 20)))}

    window = check(record, stored, affected={"s"}).windows[0]

    assert (window.outage_start, window.outage_end) == (1.0, 3.4)
    assert window.switch_master == 3.0
    assert check(record, stored).windows[0].outage_seconds < 1.0


def test_writes_that_never_come_back_are_down_until_the_load_ends():
    fault = Mark(1.0, "fault", "SIGKILL cluster-1")
    record = record_of(
        write(1, 0.9, 1.05),
        write(2, 1.1, 1.2, "SessionError"),
        write(3, 1.3, 4.0, "SessionError"),
        marks=(fault,),
    )
    window = check(record, held(1)).windows[0]
    assert (window.outage_start, window.outage_end) == (1.05, 4.0)
