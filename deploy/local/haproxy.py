"""The master endpoint of the local topology (opt-in): HAProxy with a role check in front of the
Redis nodes, from the shared deploy/haproxy/haproxy.cfg, recorded so `down` stops it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from string import Template

import redis

from deploy.local import probes
from deploy.local.credentials import private_dir, write_private
from deploy.local.errors import MissingBinary, PortInUse
from deploy.local.processes import ManagedProcess, port_in_use
from deploy.local.spec import Node
from deploy.local.topology import LocalTopology

TEMPLATE = Path(__file__).resolve().parents[1] / "haproxy" / "haproxy.cfg"
# In the Redis range and clear of the nodes (6380-6382) and of Debian's own redis-server (6379).
DEFAULT_PORT = 6390
DEFAULT_CHECK_INTERVAL_MS = 1000
NAME = "haproxy"
INSTALL_HINT = "Debian/Ubuntu: apt-get install haproxy (or `make setup`)"


def render_haproxy_cfg(
    *,
    bind: str,
    servers: list[tuple[str, str]],
    check_interval_ms: int = DEFAULT_CHECK_INTERVAL_MS,
    check_auth: str = "",
    server_options: str = "",
) -> str:
    """deploy/haproxy/haproxy.cfg filled in: clients connect at `bind` ("host:port"), and reach
    whichever of `servers` ((name, "host:port") pairs) reports role:master."""
    lines = "\n".join(f"    server {name} {address}" for name, address in servers)
    return Template(TEMPLATE.read_text()).substitute(
        BIND=bind,
        CHECK_INTERVAL_MS=check_interval_ms,
        CHECK_AUTH=check_auth,
        SERVER_OPTIONS=server_options,
        SERVERS=lines,
    )


def check_auth_lines(password: str | None, user: str | None = None) -> str:
    """The check's AUTH exchange (nothing without a password). Passwords never hold white
    space or quotes here: TopologySpec refuses them and generated ones are URL-safe."""
    if password is None:
        return ""
    who = f"{user} {password}" if user else password
    return f'    tcp-check send "AUTH {who}\\r\\n"\n    tcp-check expect string +OK'


def master_endpoint_config(
    topology: LocalTopology, port: int, check_interval_ms: int = DEFAULT_CHECK_INTERVAL_MS
) -> str:
    """The config of `topology`'s endpoint on 127.0.0.1:`port`: the password of the plain
    topology, or in secure mode the read-only `exporter` user and mutual TLS for the checks
    (clients' own connections pass through untouched, TLS and all)."""
    credentials = topology.credentials
    if credentials is None:
        auth, options = check_auth_lines(topology.spec.password), ""
    else:
        auth = check_auth_lines(credentials.password("exporter"), "exporter")
        pem = write_private(
            topology.run_dir / NAME / "client.pem",
            credentials.client.cert_file.read_text() + credentials.client.key_file.read_text(),
        )
        # Only the checks use TLS (check-ssl, not ssl): the chain is verified against the
        # local CA; the host name is not (HAProxy checks it only against an SNI name).
        options = f"check-ssl verify required ca-file {credentials.ca_file} crt {pem}"
    return render_haproxy_cfg(
        bind=f"127.0.0.1:{port}",
        servers=[(node.name, node.address) for node in topology.redis_nodes],
        check_interval_ms=check_interval_ms,
        check_auth=auth,
        server_options=options,
    )


def endpoint_node(port: int) -> Node:
    """The endpoint as a Redis node the probes (and tests) can connect to."""
    return Node("master-endpoint", "redis", "127.0.0.1", port)


def find_haproxy() -> str | None:
    """HAProxy's path: on PATH, or where Debian installs it (/usr/sbin, off a user's PATH)."""
    return shutil.which(NAME) or shutil.which(NAME, path="/usr/local/sbin:/usr/sbin")


def start_master_endpoint(
    topology: LocalTopology,
    port: int = DEFAULT_PORT,
    check_interval_ms: int = DEFAULT_CHECK_INTERVAL_MS,
    timeout: float = 30.0,
) -> ManagedProcess:
    """Start HAProxy on 127.0.0.1:`port` and wait until it leads to the master."""
    program = find_haproxy()
    if program is None:
        raise MissingBinary(f"the master endpoint needs HAProxy, not found on PATH; {INSTALL_HINT}")
    if port_in_use("127.0.0.1", port):
        raise PortInUse(
            f"port {port} (the master endpoint) is already in use; stop what holds it or "
            "choose another (--haproxy-port)"
        )
    # Private like a secure node's folder: the config holds the check's password.
    directory = private_dir(topology.run_dir / NAME)
    config = write_private(
        directory / "haproxy.cfg", master_endpoint_config(topology, port, check_interval_ms)
    )
    process = ManagedProcess(
        name=NAME,
        kind=NAME,
        # -db: stay in the foreground, as every process the topology records does.
        argv=[program, "-db", "-f", str(config)],
        port=port,
        log=str(topology.run_dir / "logs" / f"{NAME}.log"),
        cwd=str(directory),
    )
    topology.start_process(process)
    node = endpoint_node(port)
    probes.wait_until(
        time.monotonic() + timeout,
        f"the master endpoint 127.0.0.1:{port} did not lead to a master within {timeout:g}s",
        lambda: _endpoint_problems(node, topology),
        [process],
    )
    return process


def _endpoint_problems(node: Node, topology: LocalTopology) -> list[str]:
    try:
        reply = probes.ask(node, topology.login(), probes.role)
    except redis.RedisError as exc:
        return [f"no answer through the endpoint yet ({exc})"]
    if reply[0] != "master":
        return [f"the endpoint leads to a node reporting ROLE {reply[0]}"]
    return []


def running_master_endpoint(topology: LocalTopology) -> list[ManagedProcess]:
    return [p for p in topology.processes if p.kind == NAME]
