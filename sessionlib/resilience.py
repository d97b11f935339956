"""The one retry layer: deadline-bounded exponential backoff with jitter, over a
classification of the Redis errors that a failover produces.

redis-py's own retries are off (see connection.py), so every retry is counted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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
        attempt still running when it passes is cancelled and reported as a timeout.
        The first attempt runs without tenacity: building the retry loop costs more CPU
        than a Redis round trip, and almost every call succeeds at once. `nap` sleeps
        between attempts (the Sentinel watcher's wakes up early when a new master is
        announced); `before_retry` runs before an attempt that follows a failure
        suggesting a wrong node. Every operation the store retries is idempotent, so
        running one again after an unknown outcome is safe.
        """
        try:
            async with asyncio.timeout(self.deadline_seconds):
                return await self._attempts(operation, attempt, observer, before_retry, nap)
        except TimeoutError:
            observer.retry(operation, "timeout")
            raise redis_errors.TimeoutError(
                f"{operation}: no answer within the {self.deadline_seconds:g}s deadline"
            ) from None

    async def _attempts(
        self,
        operation: str,
        attempt: Callable[[], Awaitable[T]],
        observer: StoreObserver,
        before_retry: Callable[[], Awaitable[None]] | None,
        nap: Callable[[float], Awaitable[None]],
    ) -> T:
        started = time.monotonic()
        try:
            return await attempt()
        except Exception as exc:
            reason = retry_reason(exc)
            if reason is None:
                raise
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
