"""The local Redis HA topology: a master, its replicas and sentinels as processes on 127.0.0.1.
Starts it, waits until it is consistent, reports on it and breaks it on purpose for chaos work."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from deploy.local import probes
from deploy.local.configs import write_redis_conf, write_sentinel_conf
from deploy.local.credentials import Credentials, private_dir
from deploy.local.errors import AlreadyRunning, PortInUse, TopologyError
from deploy.local.processes import (
    Liveness,
    ManagedProcess,
    RunState,
    find_binary,
    liveness,
    load_state,
    port_in_use,
    save_state,
    send_signal,
    spawn,
    stop_processes,
    wait_for_liveness,
)
from deploy.local.spec import Node, TopologySpec

log = logging.getLogger("deploy.local")

DEFAULT_RUN_DIR = Path(".run/local")
STATE_FILE = "state.json"
# How a person runs the command line (deploy/local/__main__.py); messages here and in the CLI
# quote it, and the CLI is never imported back.
CLI_COMMAND = "python -m deploy.local"

NodeRef = Node | str | int


@dataclass(frozen=True)
class NodeStatus:
    """One row of `status`: the process as /proc sees it and the role the node reports."""

    node: Node
    pid: int | None
    liveness: Liveness
    role: str
    detail: str
    log: str


class LocalTopology:
    """The topology recorded in one run directory: start, inspect, break and stop it.

    Every method reads the state file afresh, so several tools (the CLI, a test, a chaos
    script) can act on the same running topology one after another.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] = DEFAULT_RUN_DIR,
        spec: TopologySpec | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.state_path = self.run_dir / STATE_FILE
        if spec is None:
            state = load_state(self.state_path)
            spec = TopologySpec.from_settings(state.settings) if state else TopologySpec()
        self.spec = spec
        self._credentials: Credentials | None = None

    # --- what the topology is ------------------------------------------------------------

    @property
    def redis_nodes(self) -> list[Node]:
        return self.spec.redis_nodes

    @property
    def sentinel_nodes(self) -> list[Node]:
        return self.spec.sentinel_nodes

    @property
    def master_name(self) -> str:
        return self.spec.master_name

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """What a Sentinel client (redis-py `Sentinel`, sessionlib settings) is given."""
        return [(node.host, node.port) for node in self.sentinel_nodes]

    @property
    def credentials(self) -> Credentials | None:
        """The CA, certificates and ACL passwords of a secure topology (None otherwise), as
        `up` wrote them into the run directory."""
        if self.spec.secure and self._credentials is None:
            self._credentials = Credentials.load(self.run_dir)
        return self._credentials

    def login(self, user: str = "admin") -> probes.Login:
        """How `user` logs in to the nodes; the plain topology has users in name only: its
        password (if any) on the Redis nodes, whoever asks."""
        credentials = self.credentials
        if credentials is None:
            return probes.Login(password=self.spec.password)
        return probes.Login(credentials.password(user), user, credentials.client_tls)

    def redis_settings(self) -> dict[str, Any]:
        """sessionlib's `redis` settings for this topology, as the services get them: Sentinel
        mode and, when secure, the `sessionlib` user over mutual TLS to nodes and sentinels
        (with the host name checked against the certificates)."""
        settings: dict[str, Any] = {
            "mode": "sentinel",
            "sentinels": [f"{host}:{port}" for host, port in self.sentinel_addresses],
            "master_name": self.master_name,
        }
        credentials = self.credentials
        if credentials is None:
            if self.spec.password:
                settings["password"] = self.spec.password
            return settings
        password = credentials.password("sessionlib")
        tls = credentials.client_tls
        return settings | {
            "username": "sessionlib",
            "password": password,
            "sentinel_username": "sessionlib",
            "sentinel_password": password,
            "tls": {
                "enabled": True,
                "ca_file": str(tls.ca_file),
                "cert_file": str(tls.cert_file),
                "key_file": str(tls.key_file),
            },
        }

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every process recorded in the state file, of any kind."""
        state = load_state(self.state_path)
        return state.processes if state else []

    def node(self, ref: NodeRef) -> Node:
        """Resolve a Node, a name (`redis-2`), a port (6381), `host:port` or "master"."""
        if isinstance(ref, Node):
            return ref
        nodes = [*self.redis_nodes, *self.sentinel_nodes]
        text = self.master_address() if ref == "master" else str(ref)
        for node in nodes:
            if text in (node.name, str(node.port), node.address):
                return node
        known = ", ".join(f"{n.name} ({n.port})" for n in nodes)
        raise TopologyError(f"no node {ref!r}; known nodes: {known}, or 'master'")

    def client(self, ref: NodeRef) -> redis.Redis:
        """A sync client for one node that fails fast instead of retrying (close it after)."""
        return probes.connect(self.node(ref), self.login())

    # --- start and stop --------------------------------------------------------------------

    def __enter__(self) -> LocalTopology:
        """`with LocalTopology(dir, spec) as topology:` runs it for the block, whatever
        happens in it."""
        self.up()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def up(self, timeout: float = 30.0) -> None:
        """Start every node and return once replication is linked and the sentinels agree.

        On any failure (Ctrl-C included) it stops what it started before raising.
        """
        redis_server = find_binary("redis-server")
        redis_sentinel = find_binary("redis-sentinel")
        self._forget_crashed_run()
        self._check_ports_free()
        self._clear_previous_run()
        if self.spec.secure:
            # Fresh like the data: a new CA, new certificates and new passwords on every `up`.
            hosts = tuple(node.host for node in [*self.redis_nodes, *self.sentinel_nodes])
            self._credentials = Credentials.create(private_dir(self.run_dir), hosts)
        deadline = time.monotonic() + timeout
        master = self.redis_nodes[0]
        login = self.login()
        try:
            for node in self.redis_nodes:
                replica_of = None if node == master else (master.host, master.port)
                self.start_process(self._redis_process(node, redis_server, replica_of))
            probes.wait_until(
                deadline,
                f"Redis replication not ready after {timeout:g}s; logs in {self._log_dir}",
                lambda: probes.replication_problems(self.spec, login),
                self.processes,
            )
            for node in self.sentinel_nodes:
                self.start_process(self._sentinel_process(node, redis_sentinel, master))
            probes.wait_until(
                deadline,
                f"sentinels did not agree after {timeout:g}s; logs in {self._log_dir}",
                lambda: probes.sentinel_problems(self.spec, login),
                self.processes,
            )
        except BaseException:
            stopped = self.down()
            log.warning("stopped what had started: %s", ", ".join(stopped) or "nothing")
            raise

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

    # --- inspect ---------------------------------------------------------------------------

    def master_address(self) -> str:
        """`host:port` of the master that a majority of all sentinels name."""
        views = self._sentinel_views()
        votes = Counter(view for view in views.values() if view is not None)
        majority = len(self.sentinel_nodes) // 2 + 1
        if votes:
            address, count = votes.most_common(1)[0]
            if count >= majority:
                return address
        seen = ", ".join(f"{name}: {view or 'no answer'}" for name, view in views.items())
        raise TopologyError(f"no majority of sentinels names a master ({seen or 'none alive'})")

    def status(self) -> list[NodeStatus]:
        """Every node with its pid, alive/paused/dead, and the role it reports itself."""
        records = {p.name: p for p in self.processes}
        rows = []
        for node in [*self.redis_nodes, *self.sentinel_nodes]:
            record = records.get(node.name)
            state: Liveness = liveness(record) if record else "dead"
            role, detail = "-", ""
            if state == "alive":
                try:
                    role, detail = probes.describe(node, self.spec, self.login())
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
        """SIGKILL a node; returns it (handy with "master")."""
        return self._signal(ref, signal.SIGKILL, "dead")

    def pause(self, ref: NodeRef) -> Node:
        """SIGSTOP a node: it keeps its connections open and answers nothing."""
        return self._signal(ref, signal.SIGSTOP, "paused")

    def resume(self, ref: NodeRef) -> Node:
        """SIGCONT a paused node."""
        return self._signal(ref, signal.SIGCONT, "alive")

    def _signal(self, ref: NodeRef, signum: signal.Signals, becomes: Liveness) -> Node:
        node, process = self._running(ref)
        send_signal(process, signum)
        wait_for_liveness(process, becomes, timeout=5.0)
        return node

    def restart(self, ref: NodeRef, timeout: float = 30.0) -> Node:
        """Start a node again with its config and data (stopping it first if it still runs).

        The config is the one Redis or Sentinel last rewrote, so a node keeps the role it was
        given; a restarted old master comes back as master, and Sentinel turns it into a
        replica of the current one within about 20 s (see `wait_for_replica`).
        """
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

    def wait_for_failover(self, old_address: str, timeout: float = 30.0) -> str:
        """Wait until every live sentinel names one new master that reports ROLE master.

        Returns the new master's `host:port`.
        """
        agreed: list[str] = []

        def problems() -> list[str]:
            views = self._sentinel_views()
            named = set(views.values())
            address = named.pop() if len(named) == 1 else None
            if address is None or address == old_address:
                return [f"sentinels name {views} (waiting for one address != {old_address})"]
            reported = self._ask(self.node(address), probes.role)[0]
            if reported != "master":
                return [f"sentinels name {address}, which reports ROLE {reported}"]
            agreed.append(address)
            return []

        probes.wait_until(
            time.monotonic() + timeout,
            f"no failover away from {old_address} within {timeout:g}s",
            problems,
        )
        return agreed[-1]

    def wait_for_replica(self, ref: NodeRef, timeout: float = 30.0) -> None:
        """Wait until a node is a replica of the current master with its link up."""
        node = self.node(ref)

        def problems() -> list[str]:
            master = self.master_address()
            reply = self._ask(node, probes.role)
            linked = reply[0] == "slave" and reply[3] == "connected"
            if linked and f"{reply[1]}:{reply[2]}" == master:
                return []
            return [f"{node.name} reports ROLE {reply[:4]}, want a linked replica of {master}"]

        probes.wait_until(
            time.monotonic() + timeout,
            f"{node.name} did not become a replica within {timeout:g}s",
            problems,
        )

    def wait_for_health(self, timeout: float = 60.0) -> str:
        """Wait until every recorded process runs, every sentinel names one master that
        reports ROLE master, and every other Redis node is its replica with the link up: the
        state chaos work must leave behind. Returns the master's `host:port`."""
        healthy: list[str] = []

        def problems() -> list[str]:
            down = [p.name for p in self.processes if liveness(p) != "alive"]
            if down:
                return [f"not running: {', '.join(down)}"]
            views = self._sentinel_views()
            named = set(views.values())
            master = named.pop() if len(named) == 1 else None
            if master is None:
                return [f"sentinels do not agree on a master: {views}"]
            found = []
            for node in self.redis_nodes:
                reply = self._ask(node, probes.role)
                if node.address == master and reply[0] != "master":
                    found.append(f"{node.name} is named master but reports ROLE {reply[0]}")
                elif node.address != master and (
                    reply[0] != "slave"
                    or f"{reply[1]}:{reply[2]}" != master
                    or reply[3] != "connected"
                ):
                    found.append(f"{node.name} reports ROLE {reply[:4]}, not a replica of {master}")
            if not found:
                healthy.append(master)
            return found

        probes.wait_until(
            time.monotonic() + timeout, f"the topology did not heal within {timeout:g}s", problems
        )
        return healthy[-1]

    # --- internals -------------------------------------------------------------------------

    def _forget_crashed_run(self) -> None:
        state = load_state(self.state_path)
        if state is None:
            return
        running = [p for p in state.processes if liveness(p) != "dead"]
        if running:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in running)
            raise AlreadyRunning(
                f"a local topology is already running from {self.run_dir}: {names}. "
                "Stop it with `make down-local` (default run dir) or "
                f"`{CLI_COMMAND} down --run-dir {self.run_dir}`"
            )
        log.warning(
            "%s records an earlier run whose processes are all gone (crashed?); removing it",
            self.state_path,
        )
        self.state_path.unlink()

    def _check_ports_free(self) -> None:
        for node in [*self.redis_nodes, *self.sentinel_nodes]:
            # A node in a namespace binds an address the root namespace does not have; the
            # namespace is fresh, so nothing else listens there.
            if node.netns is None and port_in_use(node.host, node.port):
                raise PortInUse(
                    f"port {node.port} on {node.host} (wanted for {node.name}) is already in "
                    "use. Choose other ports with --redis-ports/--sentinel-ports (or "
                    "SESSIONLIB_LOCAL_REDIS_PORTS/SESSIONLIB_LOCAL_SENTINEL_PORTS), or stop "
                    "what holds it; if it is an earlier local topology: `make down-local`"
                )

    def _clear_previous_run(self) -> None:
        # `up` always starts from empty data so that the first Redis port is the master, as
        # the contract says; data kept from before would carry an older, conflicting history.
        # Only folders holding the config this tool renders are removed, never a stranger's.
        for node in [*self.redis_nodes, *self.sentinel_nodes]:
            directory = self.run_dir / node.name
            if (directory / f"{node.kind}.conf").exists():
                shutil.rmtree(directory)
            self._log_path(node).unlink(missing_ok=True)

    @property
    def _log_dir(self) -> Path:
        return self.run_dir / "logs"

    def _log_path(self, node: Node) -> Path:
        return self._log_dir / f"{node.name}.log"

    def _redis_process(
        self, node: Node, program: str, replica_of: tuple[str, int] | None
    ) -> ManagedProcess:
        directory = self.run_dir / node.name
        config = write_redis_conf(directory, node, self.spec, replica_of, self.credentials)
        return self._process_record(node, [program, str(config)], directory)

    def _sentinel_process(self, node: Node, program: str, master: Node) -> ManagedProcess:
        directory = self.run_dir / node.name
        config = write_sentinel_conf(directory, node, self.spec, master, self.credentials)
        return self._process_record(node, [program, str(config)], directory)

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

    def _record(self, node: Node) -> ManagedProcess:
        for process in self.processes:
            if process.name == node.name:
                return process
        raise TopologyError(
            f"{node.name} is not recorded in {self.state_path}; start the topology with `up`"
        )

    def _running(self, ref: NodeRef) -> tuple[Node, ManagedProcess]:
        node = self.node(ref)
        process = self._record(node)
        if liveness(process) == "dead":
            raise TopologyError(f"{node.name} ({node.address}) is not running")
        return node, process

    def _ask(self, node: Node, question: Callable[[redis.Redis], probes.T]) -> probes.T:
        return probes.ask(node, self.login(), question)

    def _sentinel_views(self) -> dict[str, str | None]:
        """The master each running sentinel names (None: no answer); paused ones are skipped."""
        records = {p.name: p for p in self.processes}
        views: dict[str, str | None] = {}
        for sentinel in self.sentinel_nodes:
            record = records.get(sentinel.name)
            if record is None or liveness(record) != "alive":
                continue
            try:
                views[sentinel.name] = self._ask(
                    sentinel, lambda c: probes.named_master(c, self.master_name)
                )
            except redis.RedisError:
                views[sentinel.name] = None
        return views


if __name__ == "__main__":
    # The command line moved to deploy/local/__main__.py: say so rather than do nothing.
    raise SystemExit(f"usage: {CLI_COMMAND} <command> (this module has no command line)")
