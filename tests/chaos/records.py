"""What a chaos run records: every operation the load made, the faults injected and what the
sentinels (or the cluster's nodes) announced, all on one clock that starts with the run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

OperationKind = Literal["write", "read"]
MarkKind = Literal["fault", "heal", "sentinel", "cluster"]
# What announces a new master, by who announces it: Sentinel's `+switch-master`, or a Cluster
# replica that took its master's slots (tests/chaos/cluster_events.py).
SWITCH_ANNOUNCEMENTS: dict[MarkKind, str] = {"sentinel": "+switch-master", "cluster": "+promoted"}


@dataclass(frozen=True)
class Operation:
    """One write or read. `error` is the exception's type name; None means the library
    acknowledged the write (save returned) or answered the read."""

    kind: OperationKind
    session: str
    value: int | None  # the counter written, or the one read (None: nothing read)
    started: float
    finished: float
    error: str | None = None
    stale: bool = False  # a read answered by a replica while no master was reachable

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Mark:
    """A moment on the timeline: a fault injected, a repair, or a sentinel event."""

    time: float
    kind: MarkKind
    label: str


@dataclass
class RunRecord:
    """The clock and everything recorded against it."""

    started_at: float = field(default_factory=time.monotonic)
    operations: list[Operation] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    # The first message of each kind of failure ("write: SessionStoreUnavailable"), so a
    # report says why, not only how often.
    error_examples: dict[str, str] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.started_at

    def mark(self, kind: MarkKind, label: str) -> None:
        self.marks.append(Mark(self.now(), kind, label))

    def note_error(self, kind: OperationKind, exc: BaseException) -> str:
        """Keep the first message of this kind of failure; returns the exception's type."""
        name = type(exc).__name__
        self.error_examples.setdefault(f"{kind}: {name}", str(exc)[:300])
        return name

    def marks_of(self, kind: MarkKind, label_prefix: str = "") -> list[Mark]:
        return [m for m in self.marks if m.kind == kind and m.label.startswith(label_prefix)]

    def switches(self) -> list[Mark]:
        """Every announcement of a new master, whichever topology made it."""
        return [
            m for kind, label in SWITCH_ANNOUNCEMENTS.items() for m in self.marks_of(kind, label)
        ]

    def of_kind(self, kind: OperationKind) -> list[Operation]:
        return [op for op in self.operations if op.kind == kind]
