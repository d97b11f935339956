"""Failures of the local tools that users cause or can fix, each with a message meant for them.
The CLI prints these without a traceback; anything else is a bug and keeps its traceback."""


class TopologyError(Exception):
    """An expected failure: the message says what went wrong and what to do about it."""


class MissingBinary(TopologyError):
    """A program the topology runs (redis-server, redis-sentinel) is not on PATH."""


class PortInUse(TopologyError):
    """A port the topology needs is already taken by another process."""


class AlreadyRunning(TopologyError):
    """The run directory records processes that are still running."""


class NotReady(TopologyError):
    """Processes started but did not reach a consistent state in time."""
