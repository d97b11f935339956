"""Prometheus and redis_exporter beside the local stack (Sentinel topology or Redis Cluster), each
when installed: the shared deploy/prometheus/prometheus.yml rendered with local targets, both
recorded so `down` stops them."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from deploy.local.cluster import LocalCluster
from deploy.local.credentials import write_private
from deploy.local.errors import PortInUse
from deploy.local.processes import ManagedProcess, port_in_use
from deploy.local.spec import Node
from deploy.local.stack import ServiceHost, ServicePorts, wait_until_answering
from deploy.local.topology import LocalTopology

log = logging.getLogger("deploy.local")

PROMETHEUS_DIR = Path(__file__).resolve().parents[1] / "prometheus"
# The upstream binary's name first, then Debian's (package prometheus-redis-exporter).
REDIS_EXPORTER_PROGRAMS = ("redis_exporter", "prometheus-redis-exporter")
INSTALL_HINT = "Debian/Ubuntu: apt-get install prometheus prometheus-redis-exporter"


@dataclass(frozen=True)
class ObservabilityPorts:
    """Where Prometheus and redis_exporter listen (DESIGN §3)."""

    prometheus: int = 9090
    redis_exporter: int = 9121


@dataclass(frozen=True)
class ScrapeTargets:
    """What the local Prometheus scrapes: `host:port` of each service, redis:// URLs of the
    nodes, sentinels and cluster nodes (scraped through the exporter); empty lists leave a job
    without targets (a Sentinel topology has no cluster nodes, a cluster no sentinels)."""

    prometheus: list[str]
    redis_exporter: list[str]
    gateway: list[str]
    cart: list[str]
    redis: list[str]
    sentinel: list[str]
    redis_cluster: list[str] = field(default_factory=list)


def render_prometheus_config(
    targets: ScrapeTargets, *, redis_exporter_address: str, scrape_interval: str
) -> str:
    """deploy/prometheus/prometheus.yml filled in, its rules read from deploy/prometheus/."""

    def items(addresses: list[str]) -> str:
        return ", ".join(json.dumps(address) for address in addresses)

    template = Template((PROMETHEUS_DIR / "prometheus.yml").read_text())
    return template.substitute(
        SCRAPE_INTERVAL=scrape_interval,
        RULES_DIR=str(PROMETHEUS_DIR),
        PROMETHEUS_TARGETS=items(targets.prometheus),
        GATEWAY_TARGETS=items(targets.gateway),
        CART_TARGETS=items(targets.cart),
        REDIS_EXPORTER_TARGETS=items(targets.redis_exporter),
        REDIS_TARGETS=items(targets.redis),
        SENTINEL_TARGETS=items(targets.sentinel),
        REDIS_CLUSTER_TARGETS=items(targets.redis_cluster),
        REDIS_EXPORTER_ADDRESS=redis_exporter_address,
    )


def start_observability(
    topology: LocalTopology | LocalCluster,
    ports: ObservabilityPorts,
    services: ServicePorts | None,
    *,
    scrape_interval: str = "5s",
    timeout: float = 30.0,
) -> list[ManagedProcess]:
    """Start redis_exporter and Prometheus on 127.0.0.1, each only when installed, and wait
    until both answer. `services` None: the gateway and cart are not scraped."""
    exporter_program = next(filter(None, map(shutil.which, REDIS_EXPORTER_PROGRAMS)), None)
    prometheus_program = shutil.which("prometheus")
    wanted = [
        ("redis_exporter", exporter_program, ports.redis_exporter),
        ("prometheus", prometheus_program, ports.prometheus),
    ]
    for name, program, port in wanted:
        if program is None:
            log.warning("%s is not installed; the stack runs without it (%s)", name, INSTALL_HINT)
        elif port_in_use("127.0.0.1", port):
            raise PortInUse(
                f"port {port} ({name}) is already in use; stop what holds it or choose other "
                "ports (--prometheus-port/--redis-exporter-port)"
            )
    # Each process with the path that answers 200 once it serves.
    started: list[tuple[ManagedProcess, str]] = []
    exporter = f"127.0.0.1:{ports.redis_exporter}"
    if exporter_program is not None:
        redis_exporter = _start_redis_exporter(topology, exporter_program, ports.redis_exporter)
        started.append((redis_exporter, "/"))
    if prometheus_program is not None:
        targets = ScrapeTargets(
            prometheus=[f"127.0.0.1:{ports.prometheus}"],
            redis_exporter=[exporter] if exporter_program else [],
            gateway=[f"127.0.0.1:{services.gateway}"] if services else [],
            cart=[f"127.0.0.1:{services.cart}"] if services else [],
            **(_redis_targets(topology) if exporter_program else {}),
        )
        config = render_prometheus_config(
            targets, redis_exporter_address=exporter, scrape_interval=scrape_interval
        )
        prometheus = _start_prometheus(topology, prometheus_program, ports.prometheus, config)
        started.append((prometheus, "/-/ready"))
    deadline = time.monotonic() + timeout
    for process, path in started:
        wait_until_answering(process, path, deadline)
    return [process for process, _ in started]


def _redis_targets(topology: LocalTopology | LocalCluster) -> dict[str, list[str]]:
    """ScrapeTargets' redis, sentinel and redis_cluster lists: the Sentinel topology's nodes
    and sentinels, or every node of the cluster (each scraped, so each one's view counts)."""
    if isinstance(topology, LocalCluster):
        return {"redis": [], "sentinel": [], "redis_cluster": _redis_urls(topology, topology.nodes)}
    return {
        "redis": _redis_urls(topology, topology.redis_nodes),
        "sentinel": _redis_urls(topology, topology.sentinel_nodes),
    }


def _data_nodes(topology: LocalTopology | LocalCluster) -> list[Node]:
    """The nodes that hold data (and so a password): not the sentinels."""
    return topology.nodes if isinstance(topology, LocalCluster) else topology.redis_nodes


def _redis_urls(topology: LocalTopology | LocalCluster, nodes: list[Node]) -> list[str]:
    scheme = "rediss" if topology.spec.secure else "redis"
    return [f"{scheme}://{node.address}" for node in nodes]


def _start_redis_exporter(
    topology: LocalTopology | LocalCluster, program: str, port: int
) -> ManagedProcess:
    directory = topology.run_dir / "redis_exporter"
    directory.mkdir(parents=True, exist_ok=True)
    argv = [
        program,
        f"-web.listen-address=127.0.0.1:{port}",
        # Empty: the exporter scrapes only the targets Prometheus names.
        "-redis.addr=",
        # Below Prometheus' scrape timeout, so a paused node shows as redis_up 0 rather than
        # as a failed scrape of the exporter.
        "-connection-timeout=1s",
    ]
    credentials = topology.credentials
    if credentials is not None:
        # Secure mode: the `exporter` user over mutual TLS on nodes and sentinels, its
        # password in a 0600 file. No CONFIG GET (-config-command=-): it would hand the
        # exporter masterauth, and deploy/redis/users.acl does not allow it.
        sentinels = [] if isinstance(topology, LocalCluster) else topology.sentinel_nodes
        urls = _redis_urls(topology, [*_data_nodes(topology), *sentinels])
        password_file = write_private(
            directory / "passwords.json",
            json.dumps(dict.fromkeys(urls, credentials.password("exporter"))),
        )
        tls = credentials.client_tls
        argv += [
            "-redis.user=exporter",
            f"-redis.password-file={password_file}",
            f"-tls-ca-cert-file={tls.ca_file}",
            f"-tls-client-cert-file={tls.cert_file}",
            f"-tls-client-key-file={tls.key_file}",
            "-config-command=-",
        ]
    elif topology.spec.password:
        # A map from target URL to password, so the password stays out of the command line
        # and the sentinels (which have none locally) are asked without one.
        passwords = directory / "passwords.json"
        passwords.unlink(missing_ok=True)
        passwords.touch(mode=0o600)
        urls = _redis_urls(topology, _data_nodes(topology))
        passwords.write_text(json.dumps(dict.fromkeys(urls, topology.spec.password)))
        argv.append(f"-redis.password-file={passwords}")
    process = ManagedProcess(
        name="redis_exporter",
        kind="observability",
        argv=argv,
        port=port,
        log=str(topology.run_dir / "logs" / "redis_exporter.log"),
        cwd=str(directory),
    )
    topology.start_process(process)
    return process


def _start_prometheus(
    topology: LocalTopology | LocalCluster, program: str, port: int, config: str
) -> ManagedProcess:
    directory = topology.run_dir / "prometheus"
    # Like the Redis nodes, every `up` starts from empty data.
    shutil.rmtree(directory / "data", ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(config)
    process = ManagedProcess(
        name="prometheus",
        kind="observability",
        argv=[
            program,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port=port,
        log=str(topology.run_dir / "logs" / "prometheus.log"),
        cwd=str(directory),
    )
    topology.start_process(process)
    return process


def running_observability(host: ServiceHost) -> list[ManagedProcess]:
    return [p for p in host.processes if p.kind == "observability"]
