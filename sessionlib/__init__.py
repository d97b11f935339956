"""sessionlib: highly available HTTP sessions in Redis for ASGI microservices.

Import the middleware, the store and the settings from here.
"""

from sessionlib.config import Settings, load_settings
from sessionlib.errors import (
    ConfigurationError,
    DurabilityShortfall,
    SessionDataError,
    SessionError,
    SessionStoreUnavailable,
    SessionTooLarge,
)
from sessionlib.middleware import SessionMiddleware
from sessionlib.session import Session
from sessionlib.store import SessionStore

__all__ = [
    "ConfigurationError",
    "DurabilityShortfall",
    "Session",
    "SessionDataError",
    "SessionError",
    "SessionMiddleware",
    "SessionStore",
    "SessionStoreUnavailable",
    "SessionTooLarge",
    "Settings",
    "load_settings",
]
