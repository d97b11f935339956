"""Command line of the local topology: `python -m deploy.local <command>`.
Prints what a person needs to know; expected failures exit 1 with one message, no traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from deploy.local.cluster import ClusterSpec, LocalCluster
from deploy.local.errors import AlreadyRunning, TopologyError
from deploy.local.haproxy import DEFAULT_PORT as HAPROXY_PORT
from deploy.local.haproxy import running_master_endpoint, start_master_endpoint
from deploy.local.observability import (
    ObservabilityPorts,
    running_observability,
    start_observability,
)
from deploy.local.processes import liveness
from deploy.local.spec import TopologySpec
from deploy.local.stack import ServicePorts, running_services, start_services
from deploy.local.topology import CLI_COMMAND, DEFAULT_RUN_DIR, LocalTopology, NodeStatus

PROG = CLI_COMMAND

EPILOG = f"""\
Settings: every flag below falls back to an environment variable, then to the default
(DESIGN.md §3); only `up` takes ports, the other commands read them from the state file
that `up` wrote in the run directory.
  --run-dir DIR            SESSIONLIB_LOCAL_RUN_DIR          default {DEFAULT_RUN_DIR}
  --redis-ports P,P,P      SESSIONLIB_LOCAL_REDIS_PORTS      default 6380,6381,6382
                           (the first one starts as master)
  --sentinel-ports P,P,P   SESSIONLIB_LOCAL_SENTINEL_PORTS   default 26380,26381,26382
  --password PW            SESSIONLIB_LOCAL_REDIS_PASSWORD   default none (no AUTH)
  --secure                 SESSIONLIB_LOCAL_SECURE=1         default off: TLS only (mutual)
                           on every port and ACL users with generated passwords; CA,
                           certificates and users.json under the run directory (mode 0600)
  --prometheus-port P      SESSIONLIB_LOCAL_PROMETHEUS_PORT  default 9090
  --redis-exporter-port P  SESSIONLIB_LOCAL_REDIS_EXPORTER_PORT  default 9121
  --scrape-interval D      SESSIONLIB_LOCAL_SCRAPE_INTERVAL  default 5s
                           (Prometheus and redis_exporter start only when installed;
                           `make setup` installs both on Debian/Ubuntu)
  --haproxy                SESSIONLIB_LOCAL_HAPROXY=1        default off: HAProxy, an
                           endpoint that always leads to the current master
  --haproxy-port P         SESSIONLIB_LOCAL_HAPROXY_PORT     default {HAPROXY_PORT}
  --mode sentinel|cluster  SESSIONLIB_LOCAL_MODE             default sentinel; cluster: a
                           Redis Cluster of 3 masters + 3 replicas, gateway and cart in
                           Cluster mode, redis_exporter and Prometheus (job redis-cluster)
  --cluster-ports P,...    SESSIONLIB_LOCAL_CLUSTER_PORTS    default 7001,...,7006
                           (the first three start as masters, the next three replicate them)
  --cluster-bus-ports P,.. SESSIONLIB_LOCAL_CLUSTER_BUS_PORTS  default each port + 10000

NODE is a name (redis-1, sentinel-2), a port (6381), host:port, or `master` (the
current master as the sentinels name it). In cluster mode NODE is a name (cluster-1), a
port (7001) or host:port, and `master KEY|SLOT` names the master serving a key or a slot
(digits below 16384 are a slot; write the key 123 as {{123}}, which hashes the same).

Examples:
  {PROG} up
  {PROG} up --secure
  {PROG} kill master && {PROG} wait-failover --from 127.0.0.1:6380
  {PROG} restart redis-1
  {PROG} up --mode cluster && {PROG} master session:42
  {PROG} down
"""


def _ports(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ports like 6380,6381,6382, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; `--help` documents the flags and their environment variables."""
    run_dir = argparse.ArgumentParser(add_help=False)
    run_dir.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ.get("SESSIONLIB_LOCAL_RUN_DIR", DEFAULT_RUN_DIR)),
        metavar="DIR",
        help="where state, configs, data and logs live (default: %(default)s)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Start, inspect and break the local Redis HA topology "
        "(1 master, 2 replicas, 3 sentinels on 127.0.0.1).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        parents=[run_dir],
        help="start it and wait until ready",
        description="Start the topology from empty data and wait until replicas are linked "
        "and the sentinels agree; then the gateway and cart, and redis_exporter and "
        "Prometheus when installed. Flags fall back to the SESSIONLIB_LOCAL_* environment "
        "variables listed in the main --help.",
    )
    up.add_argument(
        "--redis-ports",
        type=_ports,
        default=_ports(os.environ.get("SESSIONLIB_LOCAL_REDIS_PORTS", "6380,6381,6382")),
        metavar="P,P,P",
        help="Redis ports, the first starts as master (default: 6380,6381,6382)",
    )
    up.add_argument(
        "--sentinel-ports",
        type=_ports,
        default=_ports(os.environ.get("SESSIONLIB_LOCAL_SENTINEL_PORTS", "26380,26381,26382")),
        metavar="P,P,P",
        help="Sentinel ports (default: 26380,26381,26382)",
    )
    up.add_argument(
        "--password",
        default=os.environ.get("SESSIONLIB_LOCAL_REDIS_PASSWORD") or None,
        metavar="PW",
        help="requirepass/masterauth of the Redis nodes (default: none)",
    )
    up.add_argument(
        "--secure",
        action="store_true",
        default=os.environ.get("SESSIONLIB_LOCAL_SECURE", "") in ("1", "yes", "true"),
        help="TLS only (mutual) and ACL users instead of plain text (DESIGN.md §3b)",
    )
    up.add_argument("--timeout", type=float, default=30.0, help="seconds (default: 30)")
    up.add_argument(
        "--mode",
        choices=["sentinel", "cluster"],
        default=os.environ.get("SESSIONLIB_LOCAL_MODE") or "sentinel",
        help="Sentinel topology or Redis Cluster (DESIGN.md §3a) (default: %(default)s)",
    )
    up.add_argument(
        "--cluster-ports",
        type=_ports,
        default=_ports(
            os.environ.get("SESSIONLIB_LOCAL_CLUSTER_PORTS", "7001,7002,7003,7004,7005,7006")
        ),
        metavar="P,...",
        help="cluster mode: node ports, masters first (default: 7001-7006)",
    )
    up.add_argument(
        "--cluster-bus-ports",
        type=_ports,
        default=_ports(os.environ.get("SESSIONLIB_LOCAL_CLUSTER_BUS_PORTS", "")),
        metavar="P,...",
        help="cluster mode: cluster bus ports (default: each node port + 10000)",
    )
    up.add_argument(
        "--gateway-port",
        type=int,
        default=int(os.environ.get("SESSIONLIB_LOCAL_GATEWAY_PORT", "8080")),
        help="gateway service port (default: 8080)",
    )
    up.add_argument(
        "--cart-port",
        type=int,
        default=int(os.environ.get("SESSIONLIB_LOCAL_CART_PORT", "8081")),
        help="cart service port (default: 8081)",
    )
    up.add_argument(
        "--no-services", action="store_true", help="only Redis and Sentinel, no gateway/cart"
    )
    up.add_argument(
        "--prometheus-port",
        type=int,
        default=int(os.environ.get("SESSIONLIB_LOCAL_PROMETHEUS_PORT", "9090")),
        help="Prometheus port, when installed (default: 9090)",
    )
    up.add_argument(
        "--redis-exporter-port",
        type=int,
        default=int(os.environ.get("SESSIONLIB_LOCAL_REDIS_EXPORTER_PORT", "9121")),
        help="redis_exporter port, when installed (default: 9121)",
    )
    up.add_argument(
        "--scrape-interval",
        default=os.environ.get("SESSIONLIB_LOCAL_SCRAPE_INTERVAL", "5s"),
        metavar="DURATION",
        help="how often Prometheus scrapes and evaluates its rules (default: 5s)",
    )
    up.add_argument(
        "--no-observability", action="store_true", help="no Prometheus and no redis_exporter"
    )
    up.add_argument(
        "--haproxy",
        action="store_true",
        default=os.environ.get("SESSIONLIB_LOCAL_HAPROXY", "") in ("1", "yes", "true"),
        help="also start HAProxy: one endpoint that always leads to the master (needs haproxy)",
    )
    up.add_argument(
        "--haproxy-port",
        type=int,
        default=int(os.environ.get("SESSIONLIB_LOCAL_HAPROXY_PORT", str(HAPROXY_PORT))),
        help=f"the master endpoint's port (default: {HAPROXY_PORT})",
    )

    commands.add_parser("down", parents=[run_dir], help="stop everything `up` started")
    commands.add_parser("status", parents=[run_dir], help="each node's state and role")
    master = commands.add_parser(
        "master", parents=[run_dir], help="print the current master host:port"
    )
    master.add_argument(
        "key", nargs="?", metavar="KEY|SLOT", help="cluster mode: the key or slot to look up"
    )
    for name, text in [
        ("kill", "SIGKILL a node"),
        ("pause", "SIGSTOP a node"),
        ("resume", "SIGCONT a paused node"),
        ("restart", "start a node again with its config and data"),
    ]:
        command = commands.add_parser(name, parents=[run_dir], help=text)
        command.add_argument("node", metavar="NODE")
    wait = commands.add_parser(
        "wait-failover", parents=[run_dir], help="wait until sentinels agree on a new master"
    )
    wait.add_argument("--from", dest="old", required=True, metavar="HOST:PORT")
    wait.add_argument("--timeout", type=float, default=30.0, help="seconds (default: 30)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll
    try:
        return _run(args)
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, as other command line tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes it at exit
        return 0


def _run(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.run_dir)
    # `up` starts the mode asked for; the other commands act on whichever mode runs.
    in_cluster_mode = args.mode == "cluster" if args.command == "up" else bool(cluster.processes)
    if in_cluster_mode:
        return _run_cluster(args, cluster)
    if args.command == "up":
        _refuse_while_running(cluster)
        spec = TopologySpec(
            redis_ports=args.redis_ports,
            sentinel_ports=args.sentinel_ports,
            password=args.password,
            secure=args.secure,
        )
        topology = LocalTopology(args.run_dir, spec)
        topology.up(timeout=args.timeout)
        services = None if args.no_services else ServicePorts(args.gateway_port, args.cart_port)
        try:
            if services is not None:
                start_services(topology, services)
            if not args.no_observability:
                observability = ObservabilityPorts(args.prometheus_port, args.redis_exporter_port)
                start_observability(
                    topology, observability, services, scrape_interval=args.scrape_interval
                )
            if args.haproxy:
                start_master_endpoint(topology, args.haproxy_port)
        except TopologyError:
            topology.down()
            raise
        _print_table(topology.status())
        _print_services(topology)
        sentinels = ",".join(f"{host}:{port}" for host, port in topology.sentinel_addresses)
        print(f"\nmaster name {topology.master_name}; sentinels {sentinels}")
        _print_master_endpoint(topology)
        if topology.spec.secure:
            _print_secure_access(topology)
        print(f"stop it with: {_down_command(topology)}")
        return 0

    topology = LocalTopology(args.run_dir)
    if args.command == "down":
        return _down(topology)
    if args.command == "master" and args.key is not None:
        raise TopologyError("`master KEY|SLOT` is for cluster mode; the Sentinel topology has one")
    if not topology.processes:
        raise TopologyError(
            f"no local topology is recorded in {topology.run_dir}; start one with "
            f"`make up-local` or `{PROG} up --run-dir {topology.run_dir}`"
        )
    if args.command == "status":
        _print_table(topology.status())
        _print_services(topology)
        try:
            master = topology.master_address()
        except TopologyError as exc:
            master = f"unknown: {exc}"
        print(f"\nmaster (per sentinels): {master}")
        _print_master_endpoint(topology)
    elif args.command == "master":
        print(topology.master_address())
    elif args.command == "wait-failover":
        print(topology.wait_for_failover(args.old, timeout=args.timeout))
    else:
        _act_on_node(topology, args)
    return 0


def _run_cluster(args: argparse.Namespace, cluster: LocalCluster) -> int:
    """The commands in cluster mode (DESIGN.md §3a): the six nodes, then gateway and cart in
    Cluster mode, redis_exporter and Prometheus (every node scraped as job redis-cluster), as
    in Sentinel mode."""
    if args.command == "up":
        if args.haproxy:
            raise TopologyError("--haproxy is not available in cluster mode")
        _refuse_while_running(LocalTopology(args.run_dir))
        spec = ClusterSpec(
            ports=args.cluster_ports,
            bus_ports=args.cluster_bus_ports,
            password=args.password,
            secure=args.secure,
        )
        cluster = LocalCluster(args.run_dir, spec)
        started = time.monotonic()
        cluster.up(timeout=args.timeout)
        created = time.monotonic() - started
        services = None if args.no_services else ServicePorts(args.gateway_port, args.cart_port)
        try:
            if services is not None:
                start_services(cluster, services)
            if not args.no_observability:
                observability = ObservabilityPorts(args.prometheus_port, args.redis_exporter_port)
                start_observability(
                    cluster, observability, services, scrape_interval=args.scrape_interval
                )
        except TopologyError:
            cluster.down()
            raise
        _print_table(cluster.status())
        _print_services(cluster)
        print(f"\n{cluster.summary()}; created in {created:.1f}s")
        print(f"startup nodes {','.join(cluster.startup_nodes)}")
        if cluster.spec.secure:
            _print_secure_access(cluster)
        down = (
            "make down-local"
            if cluster.run_dir == DEFAULT_RUN_DIR.absolute()
            else (f"{PROG} down --run-dir {cluster.run_dir}")
        )
        print(f"stop it with: {down}")
        return 0
    if args.command == "down":
        stopped = cluster.down() + LocalTopology(args.run_dir).down()
        print(f"stopped {', '.join(stopped)}" if stopped else "none was still running")
        return 0
    if args.command == "status":
        _print_table(cluster.status())
        _print_services(cluster)
        print(f"\n{cluster.summary()}")
    elif args.command == "master":
        if args.key is None:
            raise TopologyError("in cluster mode give a key or a slot: `master KEY|SLOT`")
        print(cluster.master_of(args.key).address)
    elif args.command == "wait-failover":
        print(cluster.wait_for_failover(args.old, timeout=args.timeout).address)
    else:
        _act_on_node(cluster, args)
    return 0


def _act_on_node(servers: LocalTopology | LocalCluster, args: argparse.Namespace) -> None:
    """kill, pause, resume or restart one node, in either mode."""
    actions = {
        "kill": servers.kill,
        "pause": servers.pause,
        "resume": servers.resume,
        "restart": servers.restart,
    }
    node = actions[args.command](args.node)
    pid = next((p.pid for p in servers.processes if p.name == node.name), None)
    print(f"{args.command}: {node.name} ({node.address}, pid {pid})")


def _refuse_while_running(other: LocalTopology | LocalCluster) -> None:
    """One mode at a time per run directory: both use the same service ports and `down`."""
    if other.is_running():
        raise AlreadyRunning(
            f"{other.running_name} is already running from {other.run_dir}; stop it first with "
            f"`make down-local` (default run dir) or `{PROG} down --run-dir {other.run_dir}`"
        )


def _down(topology: LocalTopology) -> int:
    recorded = topology.processes
    if not recorded:
        print(f"nothing to stop: no local topology is recorded in {topology.run_dir}")
        return 0
    stopped = topology.down()
    if stopped:
        print(f"stopped {', '.join(stopped)}")
    else:
        print(
            f"none of the {len(recorded)} processes recorded in {topology.run_dir} was still "
            "running (crashed run?); removed its state file"
        )
    return 0


def _down_command(topology: LocalTopology) -> str:
    if topology.run_dir == DEFAULT_RUN_DIR.absolute():
        return "make down-local"
    return f"{PROG} down --run-dir {topology.run_dir}"


def _print_secure_access(servers: LocalTopology | LocalCluster) -> None:
    credentials = servers.credentials
    assert credentials is not None  # a secure topology or cluster has them
    tls = credentials.client_tls
    if isinstance(servers, LocalCluster):
        where = f"-c -p {servers.nodes[0].port}"  # -c: follow MOVED to the slot's master
    else:
        where = f"-p {servers.redis_nodes[0].port}"
    print(
        "TLS only, mutual, with ACL users admin, sessionlib, replica, sentinel, exporter "
        "(default off)\n"
        f"passwords: {_shown_path(str(servers.run_dir / 'users.json'))} (mode 0600)\n"
        f"connect:   redis-cli --tls --cacert {_shown_path(str(tls.ca_file))} "
        f"--cert {_shown_path(str(tls.cert_file))} --key {_shown_path(str(tls.key_file))} "
        f"--user sessionlib --askpass {where}"
    )


def _shown_path(path: str) -> str:
    """Paths under the current directory are shown relative to it, the others in full."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _print_services(servers: LocalTopology | LocalCluster) -> None:
    services = running_services(servers) + running_observability(servers)
    if services:
        print()
    width = max([8, *(len(process.name) for process in services)])
    for process in services:
        print(
            f"{process.name:<{width}} http://{process.address}  pid {process.pid}  "
            f"{liveness(process)}  log {_shown_path(process.log)}"
        )


def _print_master_endpoint(topology: LocalTopology) -> None:
    for process in running_master_endpoint(topology):
        print(
            f"master endpoint (HAProxy, for clients without Sentinel): {process.address}  "
            f"pid {process.pid}  {liveness(process)}  log {_shown_path(process.log)}"
        )


def _print_table(rows: list[NodeStatus]) -> None:
    table = [("NAME", "ADDRESS", "PID", "STATE", "ROLE", "DETAIL", "LOG")]
    table += [
        (
            row.node.name,
            row.node.address,
            str(row.pid or "-"),
            row.liveness,
            row.role,
            row.detail,
            _shown_path(row.log),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())
