"""The local Redis Cluster (DESIGN §3a): six redis-server processes on 127.0.0.1, three masters
with a replica each. Creates it with fixed master/replica pairs, checks it, breaks it on purpose."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from deploy.local import probes
from deploy.local.configs import cluster_directives, render_redis_conf
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
from deploy.local.spec import Node
from deploy.local.topology import CLI_COMMAND, DEFAULT_RUN_DIR, NodeStatus

log = logging.getLogger("deploy.local")

# Beside the Sentinel topology's state.json in the same run directory: the command line finds
# which of the two runs by which file exists.
CLUSTER_STATE_FILE = "cluster-state.json"
SLOT_COUNT = 16384

NodeRef = Node | str | int


@dataclass(frozen=True)
class ClusterSpec:
    """What to start: the first third of `ports` are masters, then their replicas in the same
    order (7004 replicates 7001, ...). The defaults are DESIGN §3a."""

    ports: tuple[int, ...] = (7001, 7002, 7003, 7004, 7005, 7006)
    # Cluster bus (gossip) ports; empty means Redis's own rule, port + 10000.
    bus_ports: tuple[int, ...] = ()
    host: str = "127.0.0.1"
    password: str | None = None
    replicas_per_master: int = 1
    node_timeout_ms: int = 1000
    min_replicas_to_write: int = 1
    min_replicas_max_lag: int = 10

    def __post_init__(self) -> None:
        group = 1 + self.replicas_per_master
        if self.replicas_per_master < 1 or len(self.ports) % group or len(self.ports) < 3 * group:
            raise TopologyError(
                f"a cluster needs at least 3 masters with {self.replicas_per_master} replica(s) "
                f"each, i.e. a multiple of {group} ports, >= {3 * group}; got {list(self.ports)}"
            )
        if self.bus_ports and len(self.bus_ports) != len(self.ports):
            raise TopologyError(
                f"give one bus port per node ({len(self.ports)}), got {list(self.bus_ports)}"
            )
        every = [*self.ports, *self.cluster_bus_ports]
        if len(set(every)) != len(every):
            raise TopologyError(f"every node and bus port must differ, got {every}")
        if any(not 0 < port < 65536 for port in every):
            raise TopologyError(f"ports must be between 1 and 65535, got {every}")
        if self.password is not None and any(c in self.password for c in " \t\n\"'\\"):
            raise TopologyError("the Redis password must not contain spaces, quotes or \\")

    @property
    def cluster_bus_ports(self) -> tuple[int, ...]:
        return self.bus_ports or tuple(port + 10000 for port in self.ports)

    @property
    def master_count(self) -> int:
        return len(self.ports) // (1 + self.replicas_per_master)

    @property
    def nodes(self) -> list[Node]:
        return [
            Node(f"cluster-{i}", "redis", self.host, port) for i, port in enumerate(self.ports, 1)
        ]

    def group(self, node: Node) -> int:
        """Which master/replica group (0-based) a node starts in: node i and i + masters, ..."""
        return self.nodes.index(node) % self.master_count

    def slot_ranges(self) -> list[tuple[int, int]]:
        """The slots each group serves, split evenly as `redis-cli --cluster create` does."""
        per_master = SLOT_COUNT / self.master_count
        ranges, first = [], 0
        for i in range(self.master_count):
            last = SLOT_COUNT - 1 if i == self.master_count - 1 else round((i + 1) * per_master) - 1
            ranges.append((first, last))
            first = last + 1
        return ranges

    def to_settings(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ClusterSpec:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in settings.items()
            if key in known
        }
        return cls(**values)


def slot_of(key_or_slot: str | int) -> int:
    """A slot number: an int, or text of digits below 16384, is a slot; anything else is a key
    (so the key "123" is written "{123}", whose hash tag hashes the same)."""
    if isinstance(key_or_slot, int) or (key_or_slot.isdigit() and int(key_or_slot) < SLOT_COUNT):
        slot = int(key_or_slot)
        if not 0 <= slot < SLOT_COUNT:
            raise TopologyError(f"a slot is between 0 and {SLOT_COUNT - 1}, got {slot}")
        return slot
    return int(key_slot(key_or_slot.encode()))


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of CLUSTER NODES: who a node thinks another one is."""

    node_id: str
    address: str
    flags: frozenset[str]
    master_id: str | None
    slots: str

    @classmethod
    def parse(cls, line: str) -> ClusterNodeView:
        words = line.split()
        # "127.0.0.1:7001@17001[,hostname]" -> "127.0.0.1:7001"
        address = words[1].split("@")[0]
        return cls(
            node_id=words[0],
            address=address,
            flags=frozenset(words[2].split(",")),
            master_id=None if words[3] == "-" else words[3],
            slots=" ".join(words[8:]),
        )


def cluster_nodes(client: redis.Redis) -> list[ClusterNodeView]:
    text = probes.command(client, "CLUSTER", "NODES")
    return [ClusterNodeView.parse(line) for line in _text(text).splitlines() if line.strip()]


def cluster_info(client: redis.Redis) -> dict[str, str]:
    reply = probes.command(client, "CLUSTER", "INFO")
    if isinstance(reply, dict):  # some redis-py versions parse it
        return {str(k): str(v) for k, v in reply.items()}
    lines = (line.partition(":") for line in _text(reply).splitlines() if ":" in line)
    return {name: value.strip() for name, _, value in lines}


def slot_owner(client: redis.Redis, slot: int) -> str | None:
    """`host:port` of the master this node says serves `slot` (CLUSTER SLOTS), or None."""
    for entry in probes.command(client, "CLUSTER", "SLOTS"):
        if int(entry[0]) <= slot <= int(entry[1]):
            return f"{_text(entry[2][0])}:{int(entry[2][1])}"
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LocalCluster:
    """The Redis Cluster recorded in one run directory: start, inspect, break and stop it.

    Every method reads the state file afresh, like LocalTopology, so the CLI, a test and a
    chaos script can act on the same running cluster one after another.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] = DEFAULT_RUN_DIR,
        spec: ClusterSpec | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.state_path = self.run_dir / CLUSTER_STATE_FILE
        if spec is None:
            state = load_state(self.state_path)
            spec = ClusterSpec.from_settings(state.settings) if state else ClusterSpec()
        self.spec = spec
        self._last_check = ""  # the report of the latest `redis-cli --cluster check`

    # --- what the cluster is ---------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        return self.spec.nodes

    @property
    def startup_nodes(self) -> list[str]:
        """`host:port` of every node, what a cluster client is given to find the rest."""
        return [node.address for node in self.nodes]

    @property
    def processes(self) -> list[ManagedProcess]:
        state = load_state(self.state_path)
        return state.processes if state else []

    def login(self) -> probes.Login:
        return probes.Login(password=self.spec.password)

    def node(self, ref: NodeRef) -> Node:
        """Resolve a Node, a name (`cluster-2`), a port (7002) or `host:port`."""
        if isinstance(ref, Node):
            return ref
        for node in self.nodes:
            if str(ref) in (node.name, str(node.port), node.address):
                return node
        known = ", ".join(f"{n.name} ({n.port})" for n in self.nodes)
        hint = "; `master KEY|SLOT` names the master of a key" if ref == "master" else ""
        raise TopologyError(f"no cluster node {ref!r}; known nodes: {known}{hint}")

    def client(self, ref: NodeRef) -> redis.Redis:
        """A sync client for one node that fails fast instead of retrying (close it after)."""
        return probes.connect(self.node(ref), self.login())

    # --- start and stop --------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.up()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def up(self, timeout: float = 60.0) -> None:
        """Start the six nodes, create the cluster and return once `redis-cli --cluster check`
        is clean and every node reports cluster_state:ok. Stops what it started on failure."""
        redis_server = find_binary("redis-server")
        redis_cli = find_binary("redis-cli")
        self._forget_crashed_run()
        self._check_ports_free()
        self._clear_previous_run()
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                self.start_process(self._node_process(node, redis_server))
            late = f"after {timeout:g}s"
            self._wait(deadline, f"nodes did not answer PING {late}", self._ping_problems)
            self._create(deadline, late)
            self._wait(deadline, f"the cluster was not ready {late}", self._readiness_problems)
            self._wait(
                deadline,
                f"`redis-cli --cluster check` did not pass {late}",
                lambda: self._check_problems(redis_cli),
            )
        except BaseException:
            stopped = self.down()
            log.warning("stopped what had started: %s", ", ".join(stopped) or "nothing")
            raise

    def start_process(self, process: ManagedProcess) -> None:
        """Start `process` and record it at once, so even a crash right after can be undone."""
        spawn(process)
        state = load_state(self.state_path) or RunState(settings=self.spec.to_settings())
        state.processes = [p for p in state.processes if p.name != process.name] + [process]
        save_state(self.state_path, state)
        log.info("started %s on %s (pid %s)", process.name, process.address, process.pid)

    def down(self, timeout: float = 10.0) -> list[str]:
        """Stop every recorded process and remove the state file; returns who was running."""
        stopped = stop_processes(self.processes, timeout)
        self.state_path.unlink(missing_ok=True)
        return stopped

    def is_running(self) -> bool:
        return any(liveness(p) != "dead" for p in self.processes)

    def check(self) -> str:
        """The output of `redis-cli --cluster check` against the first live node; raises
        TopologyError when it reports a warning or an error."""
        problems = self._check_problems(find_binary("redis-cli"))
        if problems:
            raise TopologyError("; ".join(problems))
        return self._last_check

    # --- inspect ---------------------------------------------------------------------------

    def master_of(self, key_or_slot: str | int) -> Node:
        """The master that serves a key's slot (or a slot), as most live nodes see it."""
        slot = slot_of(key_or_slot)
        views = Counter(
            owner
            for node in self._live_nodes()
            if (owner := self._ask_quietly(node, lambda c: slot_owner(c, slot))) is not None
        )
        if not views:
            raise TopologyError(f"no live node names a master for slot {slot}")
        address, count = views.most_common(1)[0]
        if count * 2 <= sum(views.values()):
            raise TopologyError(f"the nodes disagree on who serves slot {slot}: {dict(views)}")
        return self.node(address)

    def status(self) -> list[NodeStatus]:
        """Every node with its pid, alive/paused/dead, its role and the slots it serves."""
        records = {p.name: p for p in self.processes}
        rows = []
        for node in self.nodes:
            record = records.get(node.name)
            state: Liveness = liveness(record) if record else "dead"
            role, detail = "-", ""
            if state == "alive":
                try:
                    role, detail = probes.ask(node, self.login(), _describe)
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

    def summary(self) -> str:
        """One line on the cluster as the first live node sees it."""
        for node in self._live_nodes():
            info = self._ask_quietly(node, cluster_info)
            if info is not None:
                return (
                    f"cluster_state:{info.get('cluster_state')}, "
                    f"{info.get('cluster_slots_ok')}/{SLOT_COUNT} slots ok, "
                    f"{info.get('cluster_size')} masters serving slots, "
                    f"{info.get('cluster_known_nodes')} nodes known (per {node.name})"
                )
        return "no live node answers"

    # --- break and repair ------------------------------------------------------------------

    def kill(self, ref: NodeRef) -> Node:
        """SIGKILL a node."""
        return self._signal(ref, signal.SIGKILL, "dead")

    def pause(self, ref: NodeRef) -> Node:
        """SIGSTOP a node: it keeps its connections open and answers nothing."""
        return self._signal(ref, signal.SIGSTOP, "paused")

    def resume(self, ref: NodeRef) -> Node:
        """SIGCONT a paused node."""
        return self._signal(ref, signal.SIGCONT, "alive")

    def restart(self, ref: NodeRef, timeout: float = 30.0) -> Node:
        """Start a node again with its config, data and nodes.conf (stopping it first if it
        still runs). A master whose replica took over comes back as that one's replica."""
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

    def wait_for_failover(self, old: NodeRef, timeout: float = 30.0) -> Node:
        """Wait until another node of `old`'s group serves its slots, reports ROLE master, and
        every live node says cluster_state:ok. Returns the new master."""
        old_node = self.node(old)
        first_slot = self.spec.slot_ranges()[self.spec.group(old_node)][0]
        found: list[Node] = []

        def problems() -> list[str]:
            owner = self.master_of(first_slot)
            if owner == old_node:
                return [f"{old_node.name} still serves slot {first_slot}"]
            if self._ask(owner, probes.role)[0] != "master":
                return [f"{owner.name} is named for slot {first_slot} but is not master yet"]
            not_ok = self._not_ok_nodes()
            if not_ok:
                return not_ok
            found.append(owner)
            return []

        self._wait(
            time.monotonic() + timeout,
            f"no failover away from {old_node.name} within {timeout:g}s",
            problems,
        )
        return found[-1]

    def wait_for_replica(self, ref: NodeRef, timeout: float = 30.0) -> Node:
        """Wait until a node is a replica, link up, of the master serving its group's slots.
        Returns that master."""
        node = self.node(ref)
        first_slot = self.spec.slot_ranges()[self.spec.group(node)][0]
        found: list[Node] = []

        def problems() -> list[str]:
            master = self.master_of(first_slot)
            reply = self._ask(node, probes.role)
            linked = reply[0] == "slave" and reply[3] == "connected"
            if linked and f"{reply[1]}:{reply[2]}" == master.address:
                found.append(master)
                return []
            return [f"{node.name} reports ROLE {reply[:4]}, want a linked replica of {master}"]

        self._wait(
            time.monotonic() + timeout,
            f"{node.name} did not become a replica within {timeout:g}s",
            problems,
        )
        return found[-1]

    def wait_for_health(self, timeout: float = 60.0) -> None:
        """Wait until every node runs, says cluster_state:ok, and each group has one master
        with all its other nodes as linked replicas: the state chaos work must leave behind."""

        def problems() -> list[str]:
            down = [p.name for p in self.processes if liveness(p) != "alive"]
            if down:
                return [f"not running: {', '.join(down)}"]
            return self._readiness_problems()

        self._wait(
            time.monotonic() + timeout, f"the cluster did not heal within {timeout:g}s", problems
        )

    # --- creating the cluster --------------------------------------------------------------

    def _create(self, deadline: float, late: str) -> None:
        """Slots to the masters, one meeting, then each replica to its own master. Done by hand
        rather than `redis-cli --cluster create`, which pairs nodes its own way on one host."""
        masters = self.nodes[: self.spec.master_count]
        ids = {node: _text(self._command(node, "CLUSTER", "MYID")) for node in self.nodes}
        for node, (first, last) in zip(masters, self.spec.slot_ranges(), strict=True):
            self._command(node, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for epoch, node in enumerate(self.nodes, 1):
            # Distinct epochs up front, as redis-cli does, so no collision has to be resolved.
            self._command(node, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        introducer, *others = self.nodes
        buses = dict(zip(self.nodes, self.spec.cluster_bus_ports, strict=True))
        for node in others:
            self._command(introducer, "CLUSTER", "MEET", node.host, node.port, buses[node])
        self._wait(deadline, f"the nodes did not all meet {late}", self._meeting_problems)
        for node in self.nodes[self.spec.master_count :]:
            self._command(node, "CLUSTER", "REPLICATE", ids[masters[self.spec.group(node)]])
        log.info("cluster created: %s", self._pairs())

    def _pairs(self) -> str:
        masters = self.nodes[: self.spec.master_count]
        return ", ".join(
            f"{node.port} replicates {masters[self.spec.group(node)].port}"
            for node in self.nodes[self.spec.master_count :]
        )

    def _meeting_problems(self) -> list[str]:
        problems = []
        for node in self.nodes:
            views = self._ask(node, cluster_nodes)
            settled = [v for v in views if not v.flags & {"handshake", "noaddr"}]
            if len(settled) < len(self.nodes):
                problems.append(f"{node.name} knows {len(settled)} of {len(self.nodes)} nodes")
        return problems

    # --- readiness -------------------------------------------------------------------------

    def _ping_problems(self) -> list[str]:
        return [p for node in self.nodes for p in probes.ping_problems(node, self.login())]

    def _not_ok_nodes(self) -> list[str]:
        problems = []
        for node in self._live_nodes():
            info = self._ask(node, cluster_info)
            if info.get("cluster_state") != "ok":
                problems.append(f"{node.name}: cluster_state:{info.get('cluster_state')}")
        return problems

    def _readiness_problems(self) -> list[str]:
        """Empty once every node says cluster_state:ok with all slots served and all nodes
        known, and each group's master has its replicas linked."""
        problems = []
        for node in self.nodes:
            info = self._ask(node, cluster_info)
            if (
                info.get("cluster_state") != "ok"
                or info.get("cluster_slots_ok") != str(SLOT_COUNT)
                or info.get("cluster_known_nodes") != str(len(self.nodes))
            ):
                problems.append(
                    f"{node.name}: cluster_state:{info.get('cluster_state')}, "
                    f"slots ok {info.get('cluster_slots_ok')}, "
                    f"known nodes {info.get('cluster_known_nodes')}"
                )
        if problems:
            return problems
        for first_slot, _ in self.spec.slot_ranges():
            master = self.master_of(first_slot)
            group = [n for n in self.nodes if self.spec.group(n) == self.spec.group(master)]
            for node in group:
                reply = self._ask(node, probes.role)
                if node == master and reply[0] != "master":
                    problems.append(f"{node.name} serves slot {first_slot} but is {reply[0]}")
                elif node != master and (
                    reply[0] != "slave"
                    or f"{reply[1]}:{reply[2]}" != master.address
                    or reply[3] != "connected"
                ):
                    problems.append(
                        f"{node.name} reports ROLE {reply[:4]}, not a linked replica of "
                        f"{master.address}"
                    )
        return problems

    def _check_problems(self, redis_cli: str) -> list[str]:
        """What `redis-cli --cluster check` finds wrong, from a live node (empty: clean)."""
        live = self._live_nodes()
        if not live:
            return ["no live node to check from"]
        env = dict(os.environ)
        if self.spec.password:
            env["REDISCLI_AUTH"] = self.spec.password  # not on the command line, not in ps
        result = subprocess.run(
            [redis_cli, "--cluster", "check", live[0].address],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        # redis-cli colours its report even into a pipe.
        self._last_check = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
        found = [
            line.strip()
            for line in (result.stdout + result.stderr).splitlines()
            if "[ERR]" in line or "[WARNING]" in line
        ]
        if result.returncode != 0 and not found:
            found.append(f"redis-cli exited {result.returncode}: {result.stderr.strip()}")
        if f"[OK] All {SLOT_COUNT} slots covered." not in result.stdout:
            found.append("redis-cli does not report all slots covered")
        return found

    # --- internals -------------------------------------------------------------------------

    def _wait(self, deadline: float, failure: str, problems: Callable[[], list[str]]) -> None:
        probes.wait_until(
            deadline,
            f"{failure}; logs in {self._log_dir}",
            problems,
            [p for p in self.processes if liveness(p) != "dead"],
        )

    def _live_nodes(self) -> list[Node]:
        records = {p.name: p for p in self.processes}
        return [
            node
            for node in self.nodes
            if node.name in records and liveness(records[node.name]) == "alive"
        ]

    def _ask(self, node: Node, question: Callable[[redis.Redis], probes.T]) -> probes.T:
        return probes.ask(node, self.login(), question)

    def _command(self, node: Node, *args: str | int) -> Any:
        return self._ask(node, lambda client: probes.command(client, *map(str, args)))

    def _ask_quietly(
        self, node: Node, question: Callable[[redis.Redis], probes.T]
    ) -> probes.T | None:
        try:
            return self._ask(node, question)
        except redis.RedisError:
            return None

    def _signal(self, ref: NodeRef, signum: signal.Signals, becomes: Liveness) -> Node:
        node = self.node(ref)
        process = self._record(node)
        if liveness(process) == "dead":
            raise TopologyError(f"{node.name} ({node.address}) is not running")
        send_signal(process, signum)
        wait_for_liveness(process, becomes, timeout=5.0)
        return node

    def _record(self, node: Node) -> ManagedProcess:
        for process in self.processes:
            if process.name == node.name:
                return process
        raise TopologyError(
            f"{node.name} is not recorded in {self.state_path}; start the cluster with "
            f"`{CLI_COMMAND} up --mode cluster`"
        )

    def _forget_crashed_run(self) -> None:
        state = load_state(self.state_path)
        if state is None:
            return
        running = [p for p in state.processes if liveness(p) != "dead"]
        if running:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in running)
            raise AlreadyRunning(
                f"a local Redis Cluster is already running from {self.run_dir}: {names}. "
                "Stop it with `make down-local` (default run dir) or "
                f"`{CLI_COMMAND} down --run-dir {self.run_dir}`"
            )
        log.warning(
            "%s records an earlier run whose processes are all gone (crashed?); removing it",
            self.state_path,
        )
        self.state_path.unlink()

    def _check_ports_free(self) -> None:
        for node, bus in zip(self.nodes, self.spec.cluster_bus_ports, strict=True):
            for port, what in ((node.port, node.name), (bus, f"{node.name}'s cluster bus")):
                if port_in_use(node.host, port):
                    raise PortInUse(
                        f"port {port} on {node.host} (wanted for {what}) is already in use. "
                        "Choose other ports with --cluster-ports/--cluster-bus-ports (or "
                        "SESSIONLIB_LOCAL_CLUSTER_PORTS), or stop what holds it; if it is an "
                        "earlier local topology: `make down-local`"
                    )

    def _clear_previous_run(self) -> None:
        # Always from empty data and an empty nodes.conf: a node remembering an older cluster
        # would refuse to join this one. Only folders holding this tool's config are removed.
        for node in self.nodes:
            directory = self.run_dir / node.name
            if (directory / "redis.conf").exists():
                shutil.rmtree(directory)
            self._log_path(node).unlink(missing_ok=True)

    @property
    def _log_dir(self) -> Path:
        return self.run_dir / "logs"

    def _log_path(self, node: Node) -> Path:
        return self._log_dir / f"{node.name}.log"

    def _node_process(self, node: Node, program: str) -> ManagedProcess:
        directory = self.run_dir / node.name
        directory.mkdir(parents=True, exist_ok=True)
        bus = self.spec.cluster_bus_ports[self.nodes.index(node)]
        text = render_redis_conf(
            host=node.host,
            port=node.port,
            directory=directory,
            password=self.spec.password,
            replica_of=None,  # the cluster assigns roles, never a replicaof line
            min_replicas_to_write=self.spec.min_replicas_to_write,
            min_replicas_max_lag=self.spec.min_replicas_max_lag,
        ) + cluster_directives(bus_port=bus, node_timeout_ms=self.spec.node_timeout_ms)
        config = directory / "redis.conf"
        config.write_text(text)
        return ManagedProcess(
            name=node.name,
            kind="redis",
            argv=[program, str(config)],
            port=node.port,
            host=node.host,
            log=str(self._log_path(node)),
            cwd=str(directory),
        )


def _describe(client: redis.Redis) -> tuple[str, str]:
    """The role a cluster node reports and a one-line detail (its slots), for `status`."""
    reply = probes.role(client)
    if reply[0] != "master":
        return "replica", f"of {reply[1]}:{reply[2]}, link {reply[3]}"
    myself = next(v for v in cluster_nodes(client) if "myself" in v.flags)
    slots = myself.slots or "no slots"
    return "master", f"slots {slots}, {len(reply[2])} replica(s) connected"
