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


def retry_reason(exc: BaseException) -> str | None:
    """The metric label for a retryable error, or None when retrying cannot help."""
    if isinstance(exc, MasterNotFoundError):
        return "no_master"
    if isinstance(exc, redis_errors.BusyLoadingError):
        return "loading"
    if isinstance(exc, redis_errors.ReadOnlyError):
        return "readonly"
    if isinstance(exc, redis_errors.TimeoutError):
        return "timeout"
    if isinstance(exc, redis_errors.ConnectionError | ConnectionError | OSError):
        return "connection"
    if isinstance(exc, redis_errors.ResponseError):
        words = str(exc).replace(":", " ").split()
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
        """Run `attempt` until it succeeds, fails for good, or the deadline would pass.

        The first attempt runs bare: building the retry loop costs more CPU than a Redis
        round trip, and almost every call succeeds at once. `nap` sleeps between attempts
        (the Sentinel watcher's wakes up early when a new master is announced). Every
        operation the store retries is idempotent (writes set absolute values), so running
        one again after an unknown outcome is safe.
        """
        started = time.monotonic()
        try:
            return await attempt()
        except Exception as exc:
            reason = retry_reason(exc)
            if reason is None:
                raise
            observer.retry(operation, reason)
            first_failure = exc
        await nap(self.initial_backoff_seconds)
        remaining = self.deadline_seconds - (time.monotonic() - started)
        if remaining <= 0:
            raise first_failure

        def count(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            observer.retry(operation, (exc and retry_reason(exc)) or "unknown")

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
                if before_retry is not None:
                    with contextlib.suppress(Exception):  # its own failure is no news
                        await before_retry()
                return await attempt()
        raise AssertionError("tenacity ends with a result or an exception")
