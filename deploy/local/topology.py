"""The local Redis HA topology: a master, its replicas and sentinels as processes on 127.0.0.1.
Starts it, waits until it is consistent, reports on it and breaks it on purpose for chaos work."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import redis

from deploy.local import probes
from deploy.local.configs import write_redis_conf, write_sentinel_conf
from deploy.local.credentials import Credentials, private_dir
from deploy.local.errors import TopologyError
from deploy.local.process_set import CLI_COMMAND as CLI_COMMAND
from deploy.local.process_set import DEFAULT_RUN_DIR as DEFAULT_RUN_DIR
from deploy.local.process_set import NodeRef as NodeRef
from deploy.local.process_set import NodeStatus as NodeStatus
from deploy.local.process_set import ProcessSet
from deploy.local.processes import ManagedProcess, find_binary, liveness
from deploy.local.spec import Node, TopologySpec

log = logging.getLogger("deploy.local")

STATE_FILE = "state.json"


class LocalTopology(ProcessSet[TopologySpec]):
    """The topology recorded in one run directory: start, inspect, break and stop it.

    Every method reads the state file afresh, so several tools (the CLI, a test, a chaos
    script) can act on the same running topology one after another. `restart` brings a node
    back with the config Redis or Sentinel last rewrote, so it keeps the role it was given: a
    restarted old master comes back as master, and Sentinel turns it into a replica of the
    current one within about 20 s (see `wait_for_replica`).
    """

    running_name = "a local topology"
    start_hint = "start the topology with `up`"
    port_options = (
        "--redis-ports/--sentinel-ports (or "
        "SESSIONLIB_LOCAL_REDIS_PORTS/SESSIONLIB_LOCAL_SENTINEL_PORTS)"
    )

    def __init__(
        self,
        run_dir: str | os.PathLike[str] = DEFAULT_RUN_DIR,
        spec: TopologySpec | None = None,
    ) -> None:
        super().__init__(run_dir, STATE_FILE, spec, TopologySpec)
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

    def node(self, ref: NodeRef) -> Node:
        """Resolve a Node, a name (`redis-2`), a port (6381), `host:port` or "master"."""
        if isinstance(ref, Node):
            return ref
        nodes = self._servers()
        text = self.master_address() if ref == "master" else str(ref)
        for node in nodes:
            if text in (node.name, str(node.port), node.address):
                return node
        known = ", ".join(f"{n.name} ({n.port})" for n in nodes)
        raise TopologyError(f"no node {ref!r}; known nodes: {known}, or 'master'")

    # --- start and stop --------------------------------------------------------------------

    def up(self, timeout: float = 30.0) -> None:
        """Start every node and return once replication is linked and the sentinels agree.

        On any failure (Ctrl-C included) it stops what it started before raising.
        """
        redis_server = find_binary("redis-server")
        redis_sentinel = find_binary("redis-sentinel")
        self._forget_crashed_run()
        self._check_ports_free()
        # Always from empty data so that the first Redis port is the master, as the contract
        # says; data kept from before would carry an older, conflicting history.
        self._clear_previous_run()
        if self.spec.secure:
            # Fresh like the data: a new CA, new certificates and new passwords on every `up`.
            hosts = tuple(node.host for node in self._servers())
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

    # --- wait for repair -------------------------------------------------------------------

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

    def _servers(self) -> list[Node]:
        return [*self.redis_nodes, *self.sentinel_nodes]

    def _describe(self, node: Node) -> tuple[str, str]:
        return probes.describe(node, self.spec, self.login())

    def _wanted_ports(self) -> Iterator[tuple[str, int, str]]:
        for node in self._servers():
            # A node in a namespace binds an address the root namespace does not have; the
            # namespace is fresh, so nothing else listens there.
            if node.netns is None:
                yield node.host, node.port, node.name

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
