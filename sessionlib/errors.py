"""The exceptions sessionlib raises, as one small hierarchy.

Callers catch `SessionError` for everything, or one subclass for the case they handle.
"""

from __future__ import annotations


class SessionError(Exception):
    """Base of every error sessionlib raises on purpose."""


class ConfigurationError(SessionError):
    """The settings are invalid or unsafe for the chosen profile."""


class SessionStoreUnavailable(SessionError):
    """Redis could not be reached (or had no writable master) before the deadline."""

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class SessionDataError(SessionError):
    """Session data cannot be stored: not JSON-compatible, or over a limit."""


class SessionTooLarge(SessionDataError):
    """An attribute, the whole session, or the attribute count exceeds its limit."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size}, over the limit of {limit}")
        self.what = what
        self.size = size
        self.limit = limit


class DurabilityShortfall(SessionError):
    """Fewer replicas acknowledged a write than asked for (shortfall policy `fail`)."""

    def __init__(self, acknowledged: int, wanted: int) -> None:
        super().__init__(f"write reached {acknowledged} of {wanted} replicas")
        self.acknowledged = acknowledged
        self.wanted = wanted


class SessionMoved(SessionError):
    """The session id changed under this request (a login regenerated it): a write to
    the old id was not stored, and the old id grants nothing any more."""


class SessionStoreRefused(SessionError):
    """Redis answered but refused us: wrong credentials, a missing ACL permission, a
    refused certificate. The caller's own mistake, not an outage: never retried."""

    retry_after_seconds = 1
