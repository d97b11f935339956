"""docker-compose.ha.yml (Sentinel; plain or TLS, deploy/compose/tls.yml) or
docker-compose.cluster.yml (Redis Cluster) brought up for real on a private Docker engine, in
host-network mode. The test's own ports and passwords go into an env file; deploy/compose/ha.sh
does the rest, certificates included."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from deploy.compose.engine import PrivateDockerEngine

REPO = Path(__file__).resolve().parents[2]
HA_SCRIPT = REPO / "deploy" / "compose" / "ha.sh"
SERVICE_PORT_NAMES = (
    "GATEWAY_PORT",
    "CART_PORT",
    "REDIS_EXPORTER_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
)
PORT_NAMES = (
    "REDIS_1_PORT",
    "REDIS_2_PORT",
    "REDIS_3_PORT",
    "SENTINEL_1_PORT",
    "SENTINEL_2_PORT",
    "SENTINEL_3_PORT",
    *SERVICE_PORT_NAMES,
)
# docker-compose.cluster.yml: cluster-1..3 start as masters, cluster-4..6 as their replicas.
CLUSTER_NODES = tuple(f"cluster-{n}" for n in range(1, 7))
CLUSTER_PORT_NAMES = (*(f"CLUSTER_{n}_PORT" for n in range(1, 7)), *SERVICE_PORT_NAMES)
# Grafana is not in Debian, so there is no stand-in for it: the run names every other service,
# and Compose starts exactly those (and what they depend on).
SERVICES = (
    "redis-1",
    "redis-2",
    "redis-3",
    "sentinel-1",
    "sentinel-2",
    "sentinel-3",
    "redis-exporter",
    "cart",
    "gateway",
    "prometheus",
)
CLUSTER_SERVICES = (*CLUSTER_NODES, "redis-exporter", "cart", "gateway", "prometheus")
MASTER_NAME = "mymaster"
# The users of deploy/redis/users.acl, each with its password in the env file.
ACL_USERS = ("admin", "sessionlib", "replica", "sentinel", "exporter")


@dataclass
class HaStack:
    """One project of docker-compose.ha.yml (or, in mode "cluster", docker-compose.cluster.yml)
    on `engine`, configured by `env_file`."""

    engine: PrivateDockerEngine
    env_file: Path
    project: str
    ports: dict[str, int]
    passwords: dict[str, str] = field(repr=False)
    # The TLS variant: certificates issued by ha.sh into tls_dir.
    tls_dir: Path | None = None
    mode: str = "sentinel"
    # Seconds per step, written to .run/compose/timings-<variant>.json at the end of the run.
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        engine: PrivateDockerEngine,
        directory: Path,
        ports: list[int],
        project: str,
        tls: bool = False,
        mode: str = "sentinel",
    ) -> HaStack:
        """Write the env file for a run on `ports` (as many as PORT_NAMES, or
        CLUSTER_PORT_NAMES in mode "cluster")."""
        names = CLUSTER_PORT_NAMES if mode == "cluster" else PORT_NAMES
        stack = cls(
            engine=engine,
            env_file=directory / "ha.env",
            project=project,
            ports=dict(zip(names, ports, strict=True)),
            passwords={user: secrets.token_hex(16) for user in ACL_USERS},
            tls_dir=directory / "tls" if tls else None,
            mode=mode,
        )
        lines = [f"{name}={port}" for name, port in stack.ports.items()]
        lines += [f"REDIS_{user.upper()}_PASSWORD={pw}" for user, pw in stack.passwords.items()]
        lines += [
            f"GRAFANA_ADMIN_PASSWORD={secrets.token_hex(8)}",
            f'SESSIONLIB_SIGNING_KEYS=["{secrets.token_hex(24)}"]',
            # The local topology's timings (DESIGN §6), so a failover takes seconds.
            "SENTINEL_DOWN_AFTER_MS=2000",
            "SENTINEL_FAILOVER_TIMEOUT_MS=3000",
            # As the local topology's Cluster mode (DESIGN §3a).
            "CLUSTER_NODE_TIMEOUT_MS=1000",
            "PROMETHEUS_SCRAPE_INTERVAL=1s",
        ]
        stack.env_file.write_text("\n".join(lines) + "\n")
        return stack

    def ha_env(self) -> dict[str, str]:
        """What ha.sh is run with: the private engine, host network, this project and variant."""
        env = self.engine.env()
        env.update(
            HA_ENV_FILE=str(self.env_file),
            HA_NETWORK="host",
            HA_PROJECT=self.project,
            HA_MODE=self.mode,
            HA_WAIT_SECONDS="240",
        )
        if self.tls_dir is not None:
            env.update(HA_TLS="1", HA_TLS_DIR=str(self.tls_dir), HA_PYTHON=sys.executable)
        return env

    def ha(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """deploy/compose/ha.sh ARGS for this project, on the private engine, host network."""
        result = subprocess.run(
            ["bash", str(HA_SCRIPT), *args],
            env=self.ha_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
            raise AssertionError(f"ha.sh {' '.join(args)} failed ({result.returncode}):\n{tail}")
        return result

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[f'{service.upper()}_PORT']}"

    def scrape_targets(self) -> dict[str, str]:
        """Prometheus' health of each target, keyed "<job> <instance>"."""
        answer = httpx.get(f"{self.url('prometheus')}/api/v1/targets", timeout=5).json()
        return {
            f"{t['labels']['job']} {t['labels']['instance']}": t["health"]
            for t in answer["data"]["activeTargets"]
        }

    def wait_every_target_up(self) -> list[str]:
        """Until Prometheus scrapes every target; the job of each."""
        wait_until(
            lambda: set(self.scrape_targets().values()) == {"up"},
            timeout=60,
            what="every Prometheus target up",
        )
        return [target.split()[0] for target in self.scrape_targets()]

    def container(self, service: str) -> str:
        """The id of `service`'s container, found by the labels Compose v1 and v2 both set."""
        ids = self.engine.docker(
            "ps", "-aq",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(ids) == 1, f"expected one container of {service}, found {ids}"
        return ids[0]

    def state(self, service: str) -> dict[str, object]:
        raw = self.engine.docker("inspect", "--format", "{{json .State}}", self.container(service))
        state: dict[str, object] = json.loads(raw.stdout)
        return state

    def redis_service_on_port(self, port: int) -> str:
        for number in (1, 2, 3):
            if self.ports[f"REDIS_{number}_PORT"] == port:
                return f"redis-{number}"
        raise AssertionError(f"no Redis node of the stack listens on {port}")

    def login(self, user: str = "admin") -> dict[str, Any]:
        """redis-py keywords of a host client logged in as `user` (over mutual TLS, with the
        client certificate ha.sh issued, in the TLS variant)."""
        kwargs: dict[str, Any] = {
            "username": user,
            "password": self.passwords[user],
            "socket_timeout": 1,
        }
        if self.tls_dir is not None:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=str(self.tls_dir / "ca.crt"),
                ssl_certfile=str(self.tls_dir / "client.crt"),
                ssl_keyfile=str(self.tls_dir / "client.key"),
            )
        return kwargs

    def sentinel(self) -> Sentinel:
        """A client on the host that finds the master through the stack's sentinels."""
        addresses = [("127.0.0.1", self.ports[f"SENTINEL_{n}_PORT"]) for n in (1, 2, 3)]
        return Sentinel(addresses, sentinel_kwargs=self.login(), **self.login())

    def master_address(self) -> tuple[str, int]:
        host, port = self.sentinel().discover_master(MASTER_NAME)
        return str(host), int(port)

    def master_client(self) -> redis.Redis:
        client: redis.Redis = self.sentinel().master_for(MASTER_NAME, decode_responses=True)
        return client

    def cluster(self) -> RedisCluster:
        """The admin user on the Cluster stack, from the host, knowing every node at start:
        any of them may be the one a test killed."""
        nodes = [ClusterNode("127.0.0.1", self.ports[f"CLUSTER_{n}_PORT"]) for n in range(1, 7)]
        return RedisCluster(startup_nodes=nodes, decode_responses=True, **self.login())

    def cluster_node(self, service: str) -> redis.Redis:
        """The admin user on one node of the Cluster stack (cluster-1..6), from the host."""
        port = self.ports[f"CLUSTER_{service.rsplit('-', 1)[1]}_PORT"]
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, **self.login())

    def cluster_service_owning(self, key: str) -> str:
        """The node (cluster-1..6) that serves the slot of `key` now."""
        with self.cluster() as cluster:
            port = cluster.get_node_from_key(key).port
        for service in CLUSTER_NODES:
            if self.ports[f"CLUSTER_{service.rsplit('-', 1)[1]}_PORT"] == port:
                return service
        raise AssertionError(f"no node of the stack listens on {port}")

    def node(self, service: str) -> redis.Redis:
        """The admin user on one Redis node (redis-1..3), from the host."""
        port = self.ports[f"REDIS_{service.rsplit('-', 1)[1]}_PORT"]
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, **self.login())

    def sentinel_node(self, n: int) -> redis.Redis:
        """The admin user on sentinel-n, from the host."""
        port = self.ports[f"SENTINEL_{n}_PORT"]
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, **self.login())

    def masters_named_by_each_sentinel(self) -> list[tuple[str, int] | None]:
        """What each of the three sentinels, asked on its own, names as master (None: no
        answer), so a disagreement shows."""
        named: list[tuple[str, int] | None] = []
        for n in (1, 2, 3):
            try:
                with self.sentinel_node(n) as sentinel:
                    host, master_port = sentinel.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
                    )
                named.append((str(host), int(master_port)))
            except (redis.RedisError, TypeError, ValueError):
                named.append(None)
        return named

    def sentinels_ready_to_fail_over(self) -> bool:
        """Whether every sentinel knows both replicas and both other sentinels, all up: only
        then can it promote a replica (it learns them from INFO every 10 s after a start)."""
        for n in (1, 2, 3):
            try:
                with self.sentinel_node(n) as sentinel:
                    peers = [
                        dict(zip(reply[::2], reply[1::2], strict=True))
                        for kind in ("REPLICAS", "SENTINELS")
                        for reply in sentinel.execute_command("SENTINEL", kind, MASTER_NAME)
                    ]
            except redis.RedisError:
                return False
            if len(peers) != 4 or any("s_down" in peer["flags"] for peer in peers):
                return False
        return True

    def replicas_in_sync(self) -> int:
        """How many replicas the master the sentinels name has online, 0 when it is down."""
        try:
            info = self.master_client().info("replication")
        except redis.RedisError:
            return 0
        replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return sum(1 for replica in replicas if replica.get("state") == "online")

    def save_logs(self, path: Path) -> None:
        """Every container's log, for reading after a failed run."""
        with_logs = subprocess.run(
            ["bash", str(HA_SCRIPT), "logs", "--no-color", "--tail=300"],
            env=self.ha_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        path.write_text(with_logs.stdout + with_logs.stderr)


def session_key(session_id: str) -> str:
    """The Redis key of a session id the services handed out: the stacks sign ids
    (`<raw>.<signature>`), and only the raw part names the key."""
    return f"sessionlib:s:{{{session_id.partition('.')[0]}}}"


def log_in(client: httpx.Client, user: str) -> str:
    """POST /login on the gateway as `user`; the new session id."""
    answer = client.post("/login", json={"username": user, "password": "demo"})
    assert answer.status_code == 200, answer.text
    return answer.headers["X-Session-Id"]


def readiness(state: dict[str, object]) -> str:
    """ "healthy" or, for a container without a healthcheck, "running"; else what it is."""
    health = state.get("Health")
    if isinstance(health, dict) and state["Status"] == "running":
        return str(health["Status"])
    return str(state["Status"])


def wait_until(condition: object, timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll `condition()` until it is truthy (exceptions count as not yet)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")
