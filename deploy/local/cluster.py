"""The local Redis Cluster (DESIGN §3a): six redis-server processes on 127.0.0.1, three masters
with a replica each. Creates it with fixed master/replica pairs, checks it, breaks it on purpose."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.crc import key_slot

from deploy.local import probes
from deploy.local.configs import write_cluster_node_conf
from deploy.local.credentials import Credentials, private_dir
from deploy.local.errors import TopologyError
from deploy.local.process_set import CLI_COMMAND, DEFAULT_RUN_DIR, NodeRef, ProcessSet
from deploy.local.processes import ManagedProcess, find_binary, liveness
from deploy.local.spec import Node, SavedSpec

log = logging.getLogger("deploy.local")

# Beside the Sentinel topology's state.json in the same run directory: the command line finds
# which of the two runs by which file exists.
CLUSTER_STATE_FILE = "cluster-state.json"
SLOT_COUNT = 16384
# Live resharding: keys per MIGRATE call, and how long one call may take.
MIGRATE_KEYS_PER_CALL = 10
MIGRATE_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class ClusterSpec(SavedSpec):
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
    # DESIGN §3b as in the Sentinel topology: TLS only (mutual) on every port, the cluster
    # bus and replication included, and ACL users with generated passwords instead of
    # `password` (deploy/local/credentials.py).
    secure: bool = False

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
        if self.secure and self.password is not None:
            raise TopologyError(
                "a secure cluster has ACL users with generated passwords; it takes no --password"
            )

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


class LocalCluster(ProcessSet[ClusterSpec]):
    """The Redis Cluster recorded in one run directory: start, inspect, break and stop it.

    Every method reads the state file afresh, like LocalTopology, so the CLI, a test and a
    chaos script can act on the same running cluster one after another. `restart` brings a
    node back with its config, data and nodes.conf: a master whose replica took over comes
    back as that one's replica.
    """

    running_name = "a local Redis Cluster"
    start_hint = f"start the cluster with `{CLI_COMMAND} up --mode cluster`"
    port_options = "--cluster-ports/--cluster-bus-ports (or SESSIONLIB_LOCAL_CLUSTER_PORTS)"

    def __init__(
        self,
        run_dir: str | os.PathLike[str] = DEFAULT_RUN_DIR,
        spec: ClusterSpec | None = None,
    ) -> None:
        super().__init__(run_dir, CLUSTER_STATE_FILE, spec, ClusterSpec)
        self._last_check = ""  # the report of the latest `redis-cli --cluster check`
        self._credentials: Credentials | None = None

    # --- what the cluster is ---------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        return self.spec.nodes

    @property
    def startup_nodes(self) -> list[str]:
        """`host:port` of every node, what a cluster client is given to find the rest."""
        return [node.address for node in self.nodes]

    @property
    def credentials(self) -> Credentials | None:
        """The CA, certificates and ACL passwords of a secure cluster (None otherwise), as
        `up` wrote them into the run directory (the same files as the secure topology's)."""
        if self.spec.secure and self._credentials is None:
            self._credentials = Credentials.load(self.run_dir)
        return self._credentials

    def login(self, user: str = "admin") -> probes.Login:
        """How `user` logs in to the nodes; a plain cluster has users in name only: its
        password (if any), whoever asks."""
        credentials = self.credentials
        if credentials is None:
            return probes.Login(password=self.spec.password)
        return probes.Login(credentials.password(user), user, credentials.client_tls)

    def redis_settings(self) -> dict[str, Any]:
        """sessionlib's `redis` settings for this cluster, as the services get them (the
        counterpart of LocalTopology.redis_settings): Cluster mode, every node a startup node,
        and when secure the `sessionlib` user over mutual TLS with host names checked."""
        settings: dict[str, Any] = {"mode": "cluster", "cluster_nodes": self.startup_nodes}
        credentials = self.credentials
        if credentials is None:
            if self.spec.password:
                settings["password"] = self.spec.password
            return settings
        tls = credentials.client_tls
        return settings | {
            "username": "sessionlib",
            "password": credentials.password("sessionlib"),
            "tls": {
                "enabled": True,
                "ca_file": str(tls.ca_file),
                "cert_file": str(tls.cert_file),
                "key_file": str(tls.key_file),
            },
        }

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

    # --- start and stop --------------------------------------------------------------------

    def up(self, timeout: float = 60.0) -> None:
        """Start the six nodes, create the cluster and return once `redis-cli --cluster check`
        is clean and every node reports cluster_state:ok. Stops what it started on failure."""
        redis_server = find_binary("redis-server")
        redis_cli = find_binary("redis-cli")
        self._forget_crashed_run()
        self._check_ports_free()
        # Always from empty data and an empty nodes.conf: a node remembering an older cluster
        # would refuse to join this one.
        self._clear_previous_run()
        if self.spec.secure:
            # Fresh like the data: a new CA, new certificates and new passwords on every `up`.
            hosts = tuple(node.host for node in self.nodes)
            self._credentials = Credentials.create(private_dir(self.run_dir), hosts)
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

    # --- wait for repair -------------------------------------------------------------------

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

    # --- move slots (live resharding) ------------------------------------------------------

    def live_masters(self) -> list[Node]:
        """The running nodes that report ROLE master."""
        found = []
        for node in self.nodes:
            try:
                with self.client(node) as client:
                    if probes.role(client)[0] == "master":
                        found.append(node)
            except redis.RedisError:
                continue  # dead or paused
        return found

    def node_id(self, ref: NodeRef) -> str:
        """A node's cluster id (CLUSTER MYID)."""
        return _text(self._command(self.node(ref), "CLUSTER", "MYID"))

    def open_slot_migration(self, source: NodeRef, target: NodeRef, slots: list[int]) -> int:
        """The first half of moving `slots` as `redis-cli --cluster reshard` does: IMPORTING on
        the target, MIGRATING on the source, then MIGRATE of the slots' keys. Until
        `finish_slot_migration`, clients reach those keys through ASK. Returns how many moved."""
        from_, to = self.node(source), self.node(target)
        source_id, target_id = self.node_id(from_), self.node_id(to)
        with self.client(to) as target_client, self.client(from_) as source_client:
            for slot in slots:
                # The target first, as redis-cli does: a key moved already is then found there.
                target_client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
                source_client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        return self._move_slot_keys(from_, to, slots)

    def finish_slot_migration(self, source: NodeRef, target: NodeRef, slots: list[int]) -> None:
        """Give `slots` to `target` for good: the target, then the source, then every other
        master (as redis-cli does); clients with the old map get MOVED from then on. A
        MIGRATING slot sends writes of keys it does not hold to the target (ASK), so only a
        key the source held can be left there: moved first."""
        from_, to = self.node(source), self.node(target)
        target_id = self.node_id(to)
        others = [n for n in self.live_masters() if n not in (from_, to)]
        self._move_slot_keys(from_, to, slots)
        for node in [to, from_, *others]:
            with self.client(node) as client:
                for slot in slots:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def _move_slot_keys(self, source: Node, target: Node, slots: list[int]) -> int:
        """MIGRATE what the source still holds of `slots`, a few keys per call."""
        moved = 0
        with self.client(source) as client:
            for slot in slots:
                while keys := client.execute_command(
                    "CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_KEYS_PER_CALL
                ):
                    client.execute_command(
                        "MIGRATE", target.host, target.port, "", 0, MIGRATE_TIMEOUT_MS,
                        *self._migrate_auth(), "KEYS", *keys,
                    )  # fmt: skip
                    moved += len(keys)
        return moved

    def _migrate_auth(self) -> list[str]:
        """MIGRATE's AUTH/AUTH2 arguments: the source logs in to the target as we do."""
        login = self.login()
        if login.password is None:
            return []
        if login.username:
            return ["AUTH2", login.username, login.password]
        return ["AUTH", login.password]

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
        login = self.login()
        if login.password:
            env["REDISCLI_AUTH"] = login.password  # not on the command line, not in ps
        result = subprocess.run(
            [redis_cli, *_cli_login_args(login), "--cluster", "check", live[0].address],
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

    def _servers(self) -> list[Node]:
        return self.nodes

    def _describe(self, node: Node) -> tuple[str, str]:
        """Its role and the slots it serves (a master) or whom it replicates."""
        return self._ask(node, _role_and_slots)

    def _wanted_ports(self) -> Iterator[tuple[str, int, str]]:
        for node, bus in zip(self.nodes, self.spec.cluster_bus_ports, strict=True):
            yield node.host, node.port, node.name
            yield node.host, bus, f"{node.name}'s cluster bus"

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

    def _command(self, node: Node, *args: str | int) -> Any:
        return self._ask(node, lambda client: probes.command(client, *map(str, args)))

    def _ask_quietly(
        self, node: Node, question: Callable[[redis.Redis], probes.T]
    ) -> probes.T | None:
        try:
            return self._ask(node, question)
        except redis.RedisError:
            return None

    def _node_process(self, node: Node, program: str) -> ManagedProcess:
        directory = self.run_dir / node.name
        config = write_cluster_node_conf(
            directory,
            node,
            bus_port=self.spec.cluster_bus_ports[self.nodes.index(node)],
            node_timeout_ms=self.spec.node_timeout_ms,
            password=self.spec.password,
            min_replicas_to_write=self.spec.min_replicas_to_write,
            min_replicas_max_lag=self.spec.min_replicas_max_lag,
            credentials=self.credentials,
        )
        return self._process_record(node, [program, str(config)], directory)


def _cli_login_args(login: probes.Login) -> list[str]:
    """redis-cli's options for `login` besides its password (given in REDISCLI_AUTH)."""
    if login.tls is None:
        return []
    return [
        "--tls",
        "--cacert",
        str(login.tls.ca_file),
        "--cert",
        str(login.tls.cert_file),
        "--key",
        str(login.tls.key_file),
        "--user",
        login.username or "default",
    ]


def _role_and_slots(client: redis.Redis) -> tuple[str, str]:
    """The role a cluster node reports and a one-line detail (its slots), for `status`."""
    reply = probes.role(client)
    if reply[0] != "master":
        return "replica", f"of {reply[1]}:{reply[2]}, link {reply[3]}"
    myself = next(v for v in cluster_nodes(client) if "myself" in v.flags)
    slots = myself.slots or "no slots"
    return "master", f"slots {slots}, {len(reply[2])} replica(s) connected"
