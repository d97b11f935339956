"""The one retry layer: deadline-bounded exponential backoff with jitter, over a
classification of the Redis errors that a failover produces.

redis-py's own retries are off (see connection.py), so every retry is counted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from redis import exceptions as redis_errors
from redis.asyncio.sentinel import MasterNotFoundError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from sessionlib.config import RetrySettings
from sessionlib.observer import StoreObserver
from sessionlib.refusals import is_refusal

T = TypeVar("T")

# Error replies a failover or a restart produces, also when they arrive wrapped in a
# script error (a plain ResponseError whose text holds the reply).
_RETRYABLE_REPLIES = {
    "READONLY": "readonly",
    "NOREPLICAS": "noreplicas",
    "MASTERDOWN": "masterdown",
    "LOADING": "loading",
    "TRYAGAIN": "tryagain",
    "CLUSTERDOWN": "clusterdown",
}
# Errors a failover or a restart produces, by class; the first match names the reason.
_RETRYABLE_ERRORS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (MasterNotFoundError, "no_master"),
    (redis_errors.BusyLoadingError, "loading"),
    (redis_errors.ReadOnlyError, "readonly"),
    # redis-py strips the reply's first word from these, so the text cannot name them.
    (redis_errors.MasterDownError, "masterdown"),
    (redis_errors.ClusterDownError, "clusterdown"),
    (redis_errors.TryAgainError, "tryagain"),
    # A command redirected (MOVED, ASK) more often than the client allows: the slot map
    # is changing under it (a failover, a migration); redis-py says "TTL exhausted".
    (redis_errors.ClusterError, "redirects"),
    (redis_errors.TimeoutError, "timeout"),
    ((redis_errors.ConnectionError, ConnectionError, OSError), "connection"),
)
# Every `reason` a retry is reported with, so observers can make their series up front;
# `unknown` labels a failure the retry loop could not classify.
RETRY_REASONS = tuple(
    dict.fromkeys(
        [*(reason for _, reason in _RETRYABLE_ERRORS), *_RETRYABLE_REPLIES.values(), "unknown"]
    )
)


# Failures that suggest we may be talking to a node that is no longer the master: only
# these make the retry re-ask Sentinel and drop idle connections. A NOREPLICAS or
# LOADING comes from the right node, whose connections are worth keeping.
WRONG_NODE_REASONS = frozenset({"no_master", "readonly", "timeout", "connection", "masterdown"})


# How much of the last failure a deadline's message repeats.
_MAX_FAILURE_TEXT = 160


def retry_reason(exc: BaseException) -> str | None:
    """The metric label for a retryable error, or None when retrying cannot help
    (a refusal: wrong credentials, a missing permission, a refused certificate)."""
    if is_refusal(exc):
        return None
    for error_class, reason in _RETRYABLE_ERRORS:
        if isinstance(exc, error_class):
            return reason
    if isinstance(exc, redis_errors.ResponseError):
        # Every form Redis has used: "READONLY ...", "-READONLY ..." inside a script
        # error on 6.2, "Error running script (...): @user_script:1: READONLY ...".
        words = str(exc).replace(":", " ").replace("-", " ").split()
        for reply, reason in _RETRYABLE_REPLIES.items():
            if reply in words:
                return reason
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry; a value, so tests and profiles can swap it."""

    deadline_seconds: float = 5.0
    initial_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 0.5
    jitter_seconds: float = 0.05

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(**settings.model_dump())

    def within(self, deadline_seconds: float) -> RetryPolicy:
        """The same policy with a shorter deadline (never a longer one)."""
        return replace(self, deadline_seconds=min(deadline_seconds, self.deadline_seconds))

    async def call(
        self,
        operation: str,
        attempt: Callable[[], Awaitable[T]],
        observer: StoreObserver,
        *,
        before_retry: Callable[[], Awaitable[None]] | None = None,
        nap: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Run `attempt` until it succeeds, fails for good, or the deadline passes.

        The deadline bounds the whole operation, attempts and discovery included: an
        attempt still running when it passes is cancelled and reported as a timeout (as
        `asyncio.timeout` would, with one timer per event loop instead of one per call).
        The first attempt runs without tenacity: building the retry loop costs more CPU
        than a Redis round trip, and almost every call succeeds at once. `nap` sleeps
        between attempts (the Sentinel watcher's wakes up early when a new master is
        announced); `before_retry` runs before an attempt that follows a failure
        suggesting a wrong node. Every operation the store retries is idempotent, so
        running one again after an unknown outcome is safe.
        """
        call = _deadlines().enter(self.deadline_seconds)
        failures: list[Exception] = []
        try:
            return await self._attempts(operation, attempt, observer, before_retry, nap, failures)
        except asyncio.CancelledError:
            # Ours when the deadline cancelled it and nobody else asked for cancellation.
            if call.expired and call.withdraw_cancel() <= call.cancelling:
                raise self._deadline_passed(operation, observer, failures) from None
            raise
        except TimeoutError:
            # An attempt's own (built-in) timeout, left when retries ran out: the deadline's.
            raise self._deadline_passed(operation, observer, failures) from None
        finally:
            call.leave()

    def _deadline_passed(
        self, operation: str, observer: StoreObserver, failures: list[Exception]
    ) -> Exception:
        """The deadline's timeout, naming the last failure before it: an attempt cut off
        says nothing, the one before it may say why (a node that is not the master)."""
        observer.retry(operation, "timeout")
        last = next((f for f in reversed(failures) if not isinstance(f, TimeoutError)), None)
        why = f" (last failure: {_one_line(last)})" if last is not None else ""
        return redis_errors.TimeoutError(
            f"{operation}: no answer within the {self.deadline_seconds:g}s deadline{why}"
        )

    async def _attempts(
        self,
        operation: str,
        attempt: Callable[[], Awaitable[T]],
        observer: StoreObserver,
        before_retry: Callable[[], Awaitable[None]] | None,
        nap: Callable[[float], Awaitable[None]],
        failures: list[Exception],
    ) -> T:
        """The attempts; each retryable failure is appended to `failures`."""
        started = time.monotonic()
        try:
            return await attempt()
        except Exception as exc:
            reason = retry_reason(exc)
            if reason is None:
                raise
            failures.append(exc)
            observer.retry(operation, reason)
            last_reason = reason
            first_failure = exc
        await nap(self.initial_backoff_seconds)
        remaining = self.deadline_seconds - (time.monotonic() - started)
        if remaining <= 0:
            raise first_failure

        def count(state: RetryCallState) -> None:
            nonlocal last_reason
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, Exception):
                failures.append(exc)
            last_reason = (exc and retry_reason(exc)) or "unknown"
            observer.retry(operation, last_reason)

        retrying = AsyncRetrying(
            stop=stop_before_delay(remaining),
            wait=wait_exponential_jitter(
                multiplier=self.initial_backoff_seconds,
                max=self.max_backoff_seconds,
                jitter=self.jitter_seconds,
            ),
            retry=retry_if_exception(lambda exc: retry_reason(exc) is not None),
            before_sleep=count,
            sleep=nap,
            reraise=True,
        )
        async for attempt_state in retrying:
            with attempt_state:
                if before_retry is not None and last_reason in WRONG_NODE_REASONS:
                    with contextlib.suppress(Exception):  # its own failure is no news
                        await before_retry()
                return await attempt()
        raise AssertionError("tenacity ends with a result or an exception")


class _DeadlineCall:
    """One operation in flight: its task, when it must end, and whether it was cancelled
    for passing that point."""

    __slots__ = ("cancelling", "due", "expired", "owner", "task")

    def __init__(self, owner: _Deadlines, task: asyncio.Task[object], due: float) -> None:
        self.owner = owner
        self.task = task
        self.due = due
        self.cancelling = task.cancelling()
        self.expired = False

    def withdraw_cancel(self) -> int:
        """Take back the cancellation the deadline asked for; how many others remain."""
        self.expired = False
        return self.task.uncancel()

    def leave(self) -> None:
        self.owner.calls.discard(self)
        if self.expired:  # the deadline passed as the call ended: as asyncio.timeout does
            self.withdraw_cancel()


class _Deadlines:
    """The deadlines of the operations in flight on one event loop, watched by one timer
    set for the earliest of them. `asyncio.timeout` arms and cancels a timer per call,
    which costs more CPU than the rest of a successful call's trip through this layer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls: set[_DeadlineCall] = set()
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, seconds: float) -> _DeadlineCall:
        task = asyncio.current_task(self.loop)
        if task is None:
            raise RuntimeError("a store operation must run inside an asyncio task")
        call = _DeadlineCall(self, task, self.loop.time() + seconds)
        self.calls.add(call)
        if self._timer is None or call.due < self._timer.when():
            self._arm(call.due)
        return call

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        # A timer may fire a clock tick early; a call this close to its end is done.
        now = self.loop.time() + 0.001
        pending = []
        for call in self.calls:
            if call.expired:
                continue
            if call.due <= now:
                call.expired = True
                call.task.cancel()
            else:
                pending.append(call.due)
        if pending:
            self._arm(min(pending))


_deadlines_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


_last_deadlines: _Deadlines | None = None  # those of the loop seen last: nearly always


def _one_line(exc: Exception) -> str:
    """A failure as one short line (redis-py's messages may span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_FAILURE_TEXT else text[: _MAX_FAILURE_TEXT - 1] + "…"


def _deadlines() -> _Deadlines:
    global _last_deadlines
    loop = asyncio.get_running_loop()
    deadlines = _last_deadlines
    if deadlines is None or deadlines.loop is not loop:
        deadlines = _deadlines_by_loop.get(loop)
        if deadlines is None:
            deadlines = _deadlines_by_loop[loop] = _Deadlines(loop)
        _last_deadlines = deadlines
    return deadlines
