"""Bookkeeping for the processes the local tools start: records, the state file, signals, ports.
A recorded pid is only ever signalled after /proc shows it still runs the program we started."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deploy.local.errors import MissingBinary, TopologyError

Liveness = Literal["alive", "paused", "dead"]

INSTALL_HINT = (
    "run `make setup`, or install Redis yourself "
    "(Debian/Ubuntu: apt-get install redis-server redis-sentinel redis-tools)"
)


@dataclass
class ManagedProcess:
    """One process a tool started: enough to recognise, stop and start it again.

    `kind` groups processes ("redis", "sentinel"; later services, prometheus, exporters) so
    new kinds join the same state file without changing its format.
    """

    name: str
    kind: str
    argv: list[str]
    port: int
    log: str
    host: str = "127.0.0.1"
    cwd: str | None = None
    pid: int | None = None
    netns: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class RunState:
    """What a run directory records: the settings it was started with and its processes."""

    settings: dict[str, Any] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)


def load_state(path: Path) -> RunState | None:
    """The state saved at `path`, or None when there is none."""
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(ManagedProcess)}
        processes = [
            ManagedProcess(**{k: v for k, v in entry.items() if k in known})
            for entry in raw["processes"]
        ]
        return RunState(settings=raw["settings"], processes=processes)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise TopologyError(
            f"the state file {path} is unreadable ({exc}); check with `pgrep -a redis` that "
            "nothing it started still runs, then delete it"
        ) from exc


def save_state(path: Path, state: RunState) -> None:
    """Write `state` atomically, so a crash mid-write never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": state.settings,
        "processes": [dataclasses.asdict(p) for p in state.processes],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


def find_binary(program: str) -> str:
    """Absolute path of `program` on PATH, or a MissingBinary error saying how to get it."""
    found = shutil.which(program)
    if found is None:
        raise MissingBinary(f"`{program}` was not found on PATH; {INSTALL_HINT}")
    return found


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails, i.e. something else already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Redis binds with SO_REUSEADDR too, so a port only held by TIME_WAIT sockets is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


# Below Linux's ephemeral range (32768 and up), so no outgoing connection takes a port between
# the check and the server binding it, and clear of the ports of `make up-local` (6380-6382,
# 26380-26382, 8080, 8081, 9090, 9121).
FREE_PORT_RANGE = range(20000, 26000)

# "start-end" (end excluded): a slice of FREE_PORT_RANGE for this process and its children.
# Parallel test workers each get their own, since a port found free by one can be taken by
# another before its server binds it.
FREE_PORT_RANGE_VARIABLE = "SESSIONLIB_FREE_PORT_RANGE"


def free_port_range() -> range:
    """The ports `find_free_ports` picks from: FREE_PORT_RANGE, or the slice named in
    `SESSIONLIB_FREE_PORT_RANGE`."""
    named = os.environ.get(FREE_PORT_RANGE_VARIABLE)
    if not named:
        return FREE_PORT_RANGE
    start, _, end = named.partition("-")
    try:
        return range(int(start), int(end))
    except ValueError:
        raise ValueError(f"{FREE_PORT_RANGE_VARIABLE} must be 'start-end', not {named!r}") from None


def find_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports on `host` that nothing listens on right now (for tests and
    benchmarks that run beside a `make up-local`)."""
    ports = free_port_range()
    chosen: list[int] = []
    while len(chosen) < count:
        # Random rather than sequential, so two runs side by side rarely pick the same.
        port = random.choice(ports)  # noqa: S311 - spreading, not secrecy
        if port not in chosen and not port_in_use(host, port):
            chosen.append(port)
    return chosen


# Handles of the processes this Python process started itself: polling them reaps the exited
# ones, which otherwise stay zombies that /proc still lists.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(process: ManagedProcess) -> None:
    """Start `process` in a session of its own, output appended to its log; sets its pid.

    In a network namespace it starts through `ip netns exec`, which execs the program in
    place: the pid and the command line are the program's own, as for any other process.
    """
    Path(process.log).parent.mkdir(parents=True, exist_ok=True)
    enter = ["ip", "netns", "exec", process.netns] if process.netns else []
    with open(process.log, "ab") as log:
        # A new session keeps the process out of the terminal's process group, so Ctrl-C on
        # the tool (or on pytest) does not kill the topology behind its back.
        child = subprocess.Popen(
            [*enter, *process.argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=process.cwd,
            start_new_session=True,
        )
    _children[child.pid] = child
    process.pid = child.pid
    if enter:
        _wait_for_exec(child, enter[0])


def _wait_for_exec(child: subprocess.Popen[bytes], launcher: str) -> None:
    """Wait (a moment) until `launcher` has exec'd the program, so that from here on the pid
    shows the program's own command line, as `runs_recorded_program` expects."""
    deadline = time.monotonic() + 5.0
    prefix = launcher.encode() + b"\0"
    while child.poll() is None and time.monotonic() < deadline:
        try:
            if not Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(prefix):
                return
        except OSError:
            return
        time.sleep(0.005)


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def runs_recorded_program(process: ManagedProcess) -> bool:
    """Whether the recorded pid still runs the recorded program (not a recycled pid)."""
    if process.pid is None:
        return False
    # Redis overwrites its command line with its title right after it starts; a read in the
    # middle of that sees a blank or half-written line, so a mismatch is read again.
    for attempt in range(3):
        if attempt:
            time.sleep(0.01)
        if _command_line_matches(process):
            return True
    return False


def _command_line_matches(process: ManagedProcess) -> bool:
    try:
        raw = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    if args == process.argv:
        return True
    # Redis overwrites its command line with its title, "<argv[0]> <bind>:<port> ...".
    words = " ".join(args).split()
    return (
        len(words) > 1
        and words[0] == process.argv[0]
        and any(word.endswith(f":{process.port}") for word in words[1:])
    )


def liveness(process: ManagedProcess) -> Liveness:
    """alive, paused (SIGSTOP) or dead; a pid now used by another program counts as dead."""
    if process.pid is None:
        return "dead"
    _reap(process.pid)
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text()
    except OSError:
        return "dead"
    # The state letter follows the parenthesised command name, which may contain spaces.
    state = stat.rpartition(")")[2].split()[0]
    if state in ("Z", "X") or not runs_recorded_program(process):
        return "dead"
    return "paused" if state in ("T", "t") else "alive"


def send_signal(process: ManagedProcess, signum: signal.Signals) -> bool:
    """Send `signum` if the process is still ours and running; False when it was not."""
    if process.pid is None or liveness(process) == "dead":
        return False
    try:
        os.kill(process.pid, signum)
    except ProcessLookupError:
        return False
    return True


def wait_for_liveness(process: ManagedProcess, wanted: Liveness, timeout: float) -> bool:
    """Poll until the process reaches `wanted`; False when it did not within `timeout`."""
    deadline = time.monotonic() + timeout
    while liveness(process) != wanted:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop_processes(processes: Iterable[ManagedProcess], timeout: float = 10.0) -> list[str]:
    """SIGTERM, wait up to `timeout`, then SIGKILL; returns the names of those that ran."""
    running = [p for p in processes if liveness(p) != "dead"]
    remaining = running
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        # Asked again each second: Redis ignores a SIGTERM that arrives while it writes its
        # first AOF (a replica right after its initial sync) and needs a second one.
        for process in remaining:
            send_signal(process, signal.SIGTERM)
            # A paused process only acts on SIGTERM once it runs again.
            send_signal(process, signal.SIGCONT)
        next_request = min(deadline, time.monotonic() + 1.0)
        while remaining and time.monotonic() < next_request:
            time.sleep(0.05)
            remaining = [p for p in remaining if liveness(p) != "dead"]
    for process in remaining:
        send_signal(process, signal.SIGKILL)
        wait_for_liveness(process, "dead", timeout=5.0)
    return [p.name for p in running]


def log_tail(process: ManagedProcess, lines: int = 5) -> str:
    """The last lines of a process's log, indented, for error messages."""
    with contextlib.suppress(OSError):
        text = Path(process.log).read_text(errors="replace").strip().splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:])
    return "    (no log)"
