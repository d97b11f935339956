"""A set of local server processes recorded in a state file: start, stop, signal, crashed-run
cleanup. What the Sentinel topology (topology.py) and the Redis Cluster (cluster.py) share."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Self, TypeVar

import redis

from deploy.local import probes
from deploy.local.errors import AlreadyRunning, PortInUse, TopologyError
from deploy.local.processes import (
    Liveness,
    ManagedProcess,
    RunState,
    liveness,
    load_state,
    port_in_use,
    save_state,
    send_signal,
    spawn,
    stop_processes,
    wait_for_liveness,
)
from deploy.local.spec import Node, SavedSpec

log = logging.getLogger("deploy.local")

DEFAULT_RUN_DIR = Path(".run/local")
# How a person runs the command line (deploy/local/__main__.py); messages here and in the CLI
# quote it, and the CLI is never imported back.
CLI_COMMAND = "python -m deploy.local"

NodeRef = Node | str | int
SpecT = TypeVar("SpecT", bound=SavedSpec)


@dataclass(frozen=True)
class NodeStatus:
    """One row of `status`: the process as /proc sees it and the role the node reports."""

    node: Node
    pid: int | None
    liveness: Liveness
    role: str
    detail: str
    log: str


class ProcessSet(ABC, Generic[SpecT]):
    """The servers recorded in one state file of a run directory, and their spec.

    Every method reads the state file afresh, so several tools (the CLI, a test, a chaos
    script) can act on the same running set one after another.
    """

    # What a subclass is called and how a person fixes a clash, in its messages.
    running_name: ClassVar[str]  # "a local topology" is already running ...
    start_hint: ClassVar[str]  # ... is not recorded; <start_hint>
    port_options: ClassVar[str]  # Choose other ports with <port_options>, ...

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        state_file: str,
        spec: SpecT | None,
        spec_type: type[SpecT],
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.state_path = self.run_dir / state_file
        if spec is None:
            state = load_state(self.state_path)
            spec = spec_type.from_settings(state.settings) if state else spec_type()
        self.spec = spec

    # --- what a subclass says about itself -------------------------------------------------

    @abstractmethod
    def up(self, timeout: float = ...) -> None:
        """Start every server and return once they work together; stop them on failure."""

    @abstractmethod
    def node(self, ref: NodeRef) -> Node:
        """Resolve a Node, its name, its port or `host:port`."""

    @abstractmethod
    def login(self) -> probes.Login:
        """How a tool logs in to the nodes."""

    @abstractmethod
    def _servers(self) -> list[Node]:
        """Every node this set runs, in the order `status` lists them."""

    @abstractmethod
    def _describe(self, node: Node) -> tuple[str, str]:
        """The role a live node reports and a one-line detail, for `status`."""

    @abstractmethod
    def _wanted_ports(self) -> Iterable[tuple[str, int, str]]:
        """(host, port, what it is for) of every port `up` listens on and checks is free."""

    # --- the processes ---------------------------------------------------------------------

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every process recorded in the state file, of any kind."""
        state = load_state(self.state_path)
        return state.processes if state else []

    def client(self, ref: NodeRef) -> redis.Redis:
        """A sync client for one node that fails fast instead of retrying (close it after)."""
        return probes.connect(self.node(ref), self.login())

    def __enter__(self) -> Self:
        """`with LocalTopology(dir, spec) as topology:` (or a LocalCluster) runs it for the
        block, whatever happens in it."""
        self.up()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def start_process(self, process: ManagedProcess) -> None:
        """Start `process` and record it at once, so even a crash right after can be undone.

        Any kind of process can be recorded (later: services, exporters); `down` stops all.
        """
        spawn(process)
        state = load_state(self.state_path) or RunState(settings=self.spec.to_settings())
        state.processes = [p for p in state.processes if p.name != process.name] + [process]
        save_state(self.state_path, state)
        log.info("started %s on %s (pid %s)", process.name, process.address, process.pid)

    def down(self, timeout: float = 10.0) -> list[str]:
        """Stop every recorded process and remove the state file; returns who was running."""
        # Sentinels stop before Redis so they do not start a failover while the nodes go;
        # anything else (services, exporters) stops first since it depends on both.
        order = {"redis": 2, "sentinel": 1}
        processes = sorted(self.processes, key=lambda p: order.get(p.kind, 0))
        stopped = stop_processes(processes, timeout)
        self.state_path.unlink(missing_ok=True)
        return stopped

    def is_running(self) -> bool:
        """Whether any recorded process is still alive or paused."""
        return any(liveness(p) != "dead" for p in self.processes)

    def status(self) -> list[NodeStatus]:
        """Every node with its pid, alive/paused/dead, and the role it reports itself."""
        records = {p.name: p for p in self.processes}
        rows = []
        for node in self._servers():
            record = records.get(node.name)
            state: Liveness = liveness(record) if record else "dead"
            role, detail = "-", ""
            if state == "alive":
                try:
                    role, detail = self._describe(node)
                except redis.RedisError as exc:
                    role, detail = "?", f"no answer ({exc})"
            rows.append(
                NodeStatus(
                    node=node,
                    pid=record.pid if record else None,
                    liveness=state,
                    role=role,
                    detail=detail,
                    log=record.log if record else "",
                )
            )
        return rows

    # --- break and repair ------------------------------------------------------------------

    def kill(self, ref: NodeRef) -> Node:
        """SIGKILL a node; returns it."""
        return self._signal(ref, signal.SIGKILL, "dead")

    def pause(self, ref: NodeRef) -> Node:
        """SIGSTOP a node: it keeps its connections open and answers nothing."""
        return self._signal(ref, signal.SIGSTOP, "paused")

    def resume(self, ref: NodeRef) -> Node:
        """SIGCONT a paused node."""
        return self._signal(ref, signal.SIGCONT, "alive")

    def restart(self, ref: NodeRef, timeout: float = 30.0) -> Node:
        """Start a node again with its config and data (stopping it first if it still runs),
        and wait until it answers PING. The config is the one the server last rewrote."""
        node = self.node(ref)
        process = self._record(node)
        stop_processes([process])
        self.start_process(process)
        probes.wait_until(
            time.monotonic() + timeout,
            f"{node.name} did not answer after restart within {timeout:g}s",
            lambda: probes.ping_problems(node, self.login()),
            [process],
        )
        return node

    # --- internals -------------------------------------------------------------------------

    def _signal(self, ref: NodeRef, signum: signal.Signals, becomes: Liveness) -> Node:
        node, process = self._running(ref)
        send_signal(process, signum)
        wait_for_liveness(process, becomes, timeout=5.0)
        return node

    def _record(self, node: Node) -> ManagedProcess:
        for process in self.processes:
            if process.name == node.name:
                return process
        raise TopologyError(f"{node.name} is not recorded in {self.state_path}; {self.start_hint}")

    def _running(self, ref: NodeRef) -> tuple[Node, ManagedProcess]:
        node = self.node(ref)
        process = self._record(node)
        if liveness(process) == "dead":
            raise TopologyError(f"{node.name} ({node.address}) is not running")
        return node, process

    def _ask(self, node: Node, question: Callable[[redis.Redis], probes.T]) -> probes.T:
        return probes.ask(node, self.login(), question)

    def _forget_crashed_run(self) -> None:
        state = load_state(self.state_path)
        if state is None:
            return
        running = [p for p in state.processes if liveness(p) != "dead"]
        if running:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in running)
            raise AlreadyRunning(
                f"{self.running_name} is already running from {self.run_dir}: {names}. "
                "Stop it with `make down-local` (default run dir) or "
                f"`{CLI_COMMAND} down --run-dir {self.run_dir}`"
            )
        log.warning(
            "%s records an earlier run whose processes are all gone (crashed?); removing it",
            self.state_path,
        )
        self.state_path.unlink()

    def _check_ports_free(self) -> None:
        for host, port, what in self._wanted_ports():
            if port_in_use(host, port):
                raise PortInUse(
                    f"port {port} on {host} (wanted for {what}) is already in use. "
                    f"Choose other ports with {self.port_options}, or stop what holds it; "
                    "if it is an earlier local topology: `make down-local`"
                )

    def _clear_previous_run(self) -> None:
        # `up` always starts from empty data: data kept from before would carry an older,
        # conflicting history (see each `up`). Only folders holding the config this tool
        # renders are removed, never a stranger's.
        for node in self._servers():
            directory = self.run_dir / node.name
            if (directory / f"{node.kind}.conf").exists():
                shutil.rmtree(directory)
            self._log_path(node).unlink(missing_ok=True)

    @property
    def _log_dir(self) -> Path:
        return self.run_dir / "logs"

    def _log_path(self, node: Node) -> Path:
        return self._log_dir / f"{node.name}.log"

    def _process_record(self, node: Node, argv: list[str], directory: Path) -> ManagedProcess:
        return ManagedProcess(
            name=node.name,
            kind=node.kind,
            argv=argv,
            port=node.port,
            host=node.host,
            log=str(self._log_path(node)),
            cwd=str(directory),
            netns=node.netns,
        )
