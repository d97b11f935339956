"""sessionlib: highly available HTTP sessions in Redis for ASGI microservices.

Import the middleware, the store and the settings from here.
"""

from importlib import metadata as _metadata

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

try:
    __version__ = _metadata.version("sessionlib")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

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
    "__version__",
    "load_settings",
]
