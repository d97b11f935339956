"""What the store reports about itself, as a protocol the metrics module implements.

The store depends on this seam, not on prometheus-client, so the layers stay in order.
"""

from __future__ import annotations

from typing import Protocol

# Every `operation` label the store reports (its `_call` names), so observers can make
# their series before the first call. A new store operation belongs here too.
STORE_OPERATIONS = (
    "load",
    "load_stale",
    "save",
    "create",
    "regenerate",
    "mark_moved",
    "evict",
    "delete",
    "sessions_of",
    "revoke",
    "load_scripts",
    "ping",
)


class StoreObserver(Protocol):
    def operation(self, operation: str, outcome: str, seconds: float) -> None: ...

    def retry(self, operation: str, reason: str) -> None: ...

    def session_created(self) -> None: ...

    def session_destroyed(self, reason: str) -> None: ...

    def session_size(self, size_bytes: int) -> None: ...

    def durability_shortfall(self) -> None: ...

    def master_changed(self, address: str, *, failover: bool) -> None: ...

    def topology_refreshed(self) -> None: ...


class NullObserver:
    """Observes nothing; the default when metrics are not wanted."""

    def operation(self, operation: str, outcome: str, seconds: float) -> None:
        pass

    def retry(self, operation: str, reason: str) -> None:
        pass

    def session_created(self) -> None:
        pass

    def session_destroyed(self, reason: str) -> None:
        pass

    def session_size(self, size_bytes: int) -> None:
        pass

    def durability_shortfall(self) -> None:
        pass

    def master_changed(self, address: str, *, failover: bool) -> None:
        pass

    def topology_refreshed(self) -> None:
        pass
