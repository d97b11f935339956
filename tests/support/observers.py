"""A StoreObserver that remembers what it was told, for tests to assert on."""

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RecordingObserver:
    operations: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)
    destroyed: Counter = field(default_factory=Counter)
    created: int = 0
    shortfalls: int = 0
    masters: list[tuple[str, bool]] = field(default_factory=list)
    topology_refreshes: int = 0

    def operation(self, operation: str, outcome: str, seconds: float) -> None:
        self.operations[(operation, outcome)] += 1

    def retry(self, operation: str, reason: str) -> None:
        self.retries[(operation, reason)] += 1

    def session_created(self) -> None:
        self.created += 1

    def session_destroyed(self, reason: str) -> None:
        self.destroyed[reason] += 1

    def session_size(self, size_bytes: int) -> None:
        pass

    def durability_shortfall(self) -> None:
        self.shortfalls += 1

    def master_changed(self, address: str, *, failover: bool) -> None:
        self.masters.append((address, failover))

    def topology_refreshed(self) -> None:
        self.topology_refreshes += 1
