"""The one retry layer: what it retries, what it counts, and when it gives up."""

import asyncio
import ssl
import time

import pytest
from redis import exceptions as redis_errors

from sessionlib.resilience import RetryPolicy, retry_reason
from tests.support.observers import RecordingObserver

FAST = RetryPolicy(deadline_seconds=1.0, initial_backoff_seconds=0.001, max_backoff_seconds=0.01)


def failing(times: int, error: Exception, result: str = "ok"):
    calls = []

    async def attempt() -> str:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise error
        return result

    return attempt, calls


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (redis_errors.ConnectionError("refused"), "connection"),
        (redis_errors.TimeoutError("timed out"), "timeout"),
        (
            redis_errors.ReadOnlyError("READONLY You can't write against a read only replica."),
            "readonly",
        ),
        (redis_errors.ResponseError("NOREPLICAS Not enough good replicas to write."), "noreplicas"),
        (
            redis_errors.ResponseError(
                "Error running script (call to f_1): @user_script:12: READONLY You can't write"
            ),
            "readonly",
        ),
        (
            # Redis 6.2 puts the whole error reply, dash included, inside a script error.
            redis_errors.ResponseError(
                "Error running script (call to f_1): @user_script:1: @user_script: 1: "
                "-READONLY You can't write against a read only replica."
            ),
            "readonly",
        ),
        (redis_errors.ResponseError("MASTERDOWN Link with MASTER is down"), "masterdown"),
        (redis_errors.BusyLoadingError("LOADING Redis is loading"), "loading"),
        (redis_errors.ResponseError("TRYAGAIN Multiple keys request during rehashing"), "tryagain"),
        (redis_errors.ResponseError("CLUSTERDOWN The cluster is down"), "clusterdown"),
        # As redis-py's parser hands them over: the class names the reply, the text no longer.
        (redis_errors.ClusterDownError("The cluster is down"), "clusterdown"),
        (redis_errors.TryAgainError("Multiple keys request during rehashing"), "tryagain"),
        (redis_errors.MasterDownError("Link with MASTER is down"), "masterdown"),
    ],
)
def test_failover_errors_are_retryable_with_a_reason(error, reason):
    assert retry_reason(error) == reason


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ResponseError("WRONGTYPE Operation against a key"),
        ValueError("bug"),
        # A refusal is the caller's own mistake: the same answer on every attempt.
        redis_errors.AuthenticationError("invalid username-password pair"),
        redis_errors.NoPermissionError("NOPERM User app has no permissions to run 'evalsha'"),
        redis_errors.ConnectionError("Error connecting"),  # with an SSL cause, below
    ],
)
def test_other_errors_are_not_retried(error):
    if type(error) is redis_errors.ConnectionError:
        error.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert retry_reason(error) is None


async def test_a_first_attempt_that_succeeds_counts_no_retry():
    observer = RecordingObserver()
    attempt, calls = failing(0, RuntimeError())
    assert await FAST.call("load", attempt, observer) == "ok"
    assert len(calls) == 1 and not observer.retries


async def test_retryable_failures_are_retried_and_counted_by_reason():
    observer = RecordingObserver()
    attempt, calls = failing(3, redis_errors.ConnectionError("refused"))
    assert await FAST.call("save", attempt, observer) == "ok"
    assert len(calls) == 4
    assert observer.retries == {("save", "connection"): 3}


async def test_a_non_retryable_error_surfaces_at_once():
    observer = RecordingObserver()
    attempt, calls = failing(1, redis_errors.ResponseError("WRONGTYPE"))
    with pytest.raises(redis_errors.ResponseError):
        await FAST.call("load", attempt, observer)
    assert len(calls) == 1 and not observer.retries


async def test_the_deadline_bounds_the_retries_and_the_last_error_surfaces():
    policy = RetryPolicy(
        deadline_seconds=0.2, initial_backoff_seconds=0.01, max_backoff_seconds=0.05
    )
    attempt, calls = failing(10_000, redis_errors.TimeoutError("timed out"))
    with pytest.raises(redis_errors.TimeoutError):
        await policy.call("load", attempt, RecordingObserver())
    assert calls[-1] - calls[0] < 1.0, "no attempt starts after the deadline"
    assert len(calls) >= 3


async def test_before_retry_runs_before_each_retried_attempt_only():
    confirmations = []

    async def confirm():
        confirmations.append(True)

    attempt, calls = failing(2, redis_errors.ConnectionError("refused"))
    await FAST.call("load", attempt, RecordingObserver(), before_retry=confirm)
    assert (len(calls), len(confirmations)) == (3, 2)


async def test_a_nap_that_is_woken_early_shortens_the_wait():
    woken = asyncio.Event()
    naps = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        await woken.wait()  # what the Sentinel watcher's nap does on +switch-master

    policy = RetryPolicy(deadline_seconds=30.0, initial_backoff_seconds=10.0)
    attempt, calls = failing(1, redis_errors.ConnectionError("refused"))
    task = asyncio.create_task(policy.call("save", attempt, RecordingObserver(), nap=nap))
    await asyncio.sleep(0.05)
    woken.set()
    assert await asyncio.wait_for(task, 5) == "ok"
    assert naps == [10.0] and len(calls) == 2


async def test_the_sentinel_watchers_nap_ends_when_a_new_master_is_announced():
    from sessionlib.config import RedisSettings
    from sessionlib.connection import create_redis, watch_master

    settings = RedisSettings(mode="sentinel", sentinels=["127.0.0.1:1"])
    observer = RecordingObserver()
    watcher = watch_master(create_redis(settings), settings, observer)
    napping = asyncio.create_task(watcher.nap(30.0))
    await asyncio.sleep(0.01)
    await watcher.switch_to(("127.0.0.1", 6381))
    await asyncio.wait_for(napping, 1.0)
    assert observer.masters == [("127.0.0.1:6381", False)]


@pytest.mark.parametrize(
    ("error", "asks_sentinel"),
    [
        (redis_errors.ResponseError("NOREPLICAS Not enough good replicas to write."), False),
        (redis_errors.BusyLoadingError("LOADING Redis is loading"), False),
        (redis_errors.ReadOnlyError("READONLY You can't write against a read only replica."), True),
        (redis_errors.ConnectionError("refused"), True),
    ],
)
async def test_only_a_failure_that_suggests_a_wrong_node_re_asks_sentinel(error, asks_sentinel):
    # Re-asking drops the pool's idle connections: a short NOREPLICAS must not.
    confirmations = []

    async def confirm():
        confirmations.append(True)

    attempt, _ = failing(1, error)
    await FAST.call("save", attempt, RecordingObserver(), before_retry=confirm)
    assert bool(confirmations) is asks_sentinel


async def test_the_deadlines_timeout_names_the_last_failure_an_attempt_reported():
    attempts = 0

    async def refused_then_hangs() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise redis_errors.ConnectionError("127.0.0.1:6380 is not a master\n(ROLE slave)")
        await asyncio.sleep(30)
        return "never"

    policy = RetryPolicy(deadline_seconds=0.3, initial_backoff_seconds=0.01)
    with pytest.raises(redis_errors.TimeoutError) as timed_out:
        await policy.call("load", refused_then_hangs, RecordingObserver())
    assert str(timed_out.value) == (
        "load: no answer within the 0.3s deadline "
        "(last failure: 127.0.0.1:6380 is not a master (ROLE slave))"
    )


async def test_the_deadline_also_bounds_an_attempt_that_hangs():
    async def hangs() -> str:
        await asyncio.sleep(30)
        return "never"

    observer = RecordingObserver()
    started = time.monotonic()
    with pytest.raises(redis_errors.TimeoutError, match="deadline"):
        await RetryPolicy(deadline_seconds=0.2).call("load", hangs, observer)
    assert time.monotonic() - started < 5.0, "bounded by the deadline, not by the attempt"
    assert observer.retries[("load", "timeout")] == 1
