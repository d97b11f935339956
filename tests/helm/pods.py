"""A StatefulSet of Redis pods on loopback: each pod runs the chart's redis-start.sh and
sentinel-start.sh with the environment the rendered pod spec gives them, its own ports and
directories, and a stable DNS name (redis-<i>.pods.test) that resolves to its current IP
(127.0.0.x) through a hosts file the pods' processes see as /etc/hosts (a private mount
namespace each). Tests stop, kill, wipe, recreate and move pods to new IPs as Kubernetes would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.helm.chart import SCRIPTS_DIR, Rendered, container
from tests.helm.conftest import StartCommand
from tests.helm.pod import LocalAddresses, client, pod_env, wait_until

CONTAINERS = ("redis", "sentinel")

# Fast enough for tests on loopback, and the janitor's clock in seconds rather than minutes.
TEST_TIMINGS = {
    "DOWN_AFTER_MS": "2000",
    "FAILOVER_TIMEOUT_MS": "5000",
    "COLD_START_WAIT_SECONDS": "5",
    "STALE_SENTINEL_SECONDS": "3",
    "RESET_STAGGER_SECONDS": "4",
    "JANITOR_INTERVAL_SECONDS": "1",
    "MOVED_AFTER_SECONDS": "3",
}


# Runs a pod script with the pod set's hosts file as /etc/hosts: $0 is the file, $1 the script.
_WITH_HOSTS = 'mount --bind "$0" /etc/hosts && exec sh "$1"'


@dataclass
class Pod:
    index: int
    redis_port: int
    sentinel_port: int
    directory: Path
    ip: str
    # Whether its name resolves: the headless Service publishes a pod only while it exists.
    published: bool = True
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The stable DNS name, as under the chart's headless Service."""
        return f"redis-{self.index}.pods.test"

    @property
    def redis(self) -> str:
        """Where a test reaches this pod's Redis now (the pods themselves use its name)."""
        return f"{self.ip}:{self.redis_port}"

    @property
    def sentinel(self) -> str:
        return f"{self.ip}:{self.sentinel_port}"

    def log(self, container: str) -> Path:
        return self.directory / f"{container}.log"


class PodSet:
    """`count` Redis pods, none started; `start` brings a pod's containers up.

    Each container runs the script its rendered `command` names, from `scripts_dir`; a pod's
    second port is its Sentinel's, or in cluster mode its cluster bus port. `passwords`
    ({ACL user: password}) are the pods' ACL users; none means no auth. With `own_source`,
    Redis's outgoing connections leave from the pod's IP, as from a pod's one interface (on
    loopback they would leave from 127.0.0.1, and Redis Cluster learns a peer's IP from them).
    """

    def __init__(
        self,
        rendered: Rendered,
        start_command: StartCommand,
        ports: list[int],
        root: Path,
        count: int = 3,
        *,
        containers: tuple[str, ...] = CONTAINERS,
        scripts_dir: Path = SCRIPTS_DIR,
        passwords: dict[str, str] | None = None,
        own_source: bool = False,
        **overrides: str,
    ) -> None:
        self._rendered = rendered
        self._start_command = start_command
        self._root = root
        self.pods: list[Pod] = []
        self.containers = containers
        self.scripts_dir = scripts_dir
        self._passwords = passwords
        self._own_source = own_source
        self._overrides = TEST_TIMINGS | overrides
        self._hosts = root / "hosts"
        self.add_pods(rendered, ports, count)

    def add_pods(self, rendered: Rendered, ports: list[int], count: int) -> None:
        """A scale-out: `count` more pods (not started) with `ports`, and `rendered` (the chart
        with the new count) for every pod started from now on; running pods keep their env."""
        self._rendered = rendered
        first = len(self.pods)
        self.pods += [
            Pod(i, ports[2 * k], ports[2 * k + 1], self._root / f"pod-{i}", f"127.0.0.{10 + i}")
            for k, i in enumerate(range(first, first + count))
        ]
        self._write_hosts()

    def _write_hosts(self) -> None:
        # In place: the pods' bind mounts hold this very file (inode), not its path.
        names = (f"{p.ip} {p.name}" for p in self.pods if p.published)
        lines = ["127.0.0.1 localhost", *names]
        with self._hosts.open("w") as hosts:
            hosts.write("\n".join(lines) + "\n")

    def env(self, pod: Pod, container: str) -> dict[str, str]:
        local = LocalAddresses(
            sentinels=[f"{p.name}:{p.sentinel_port}" for p in self.pods],
            redis_nodes=[f"{p.name}:{p.redis_port}" for p in self.pods],
            redis_port=pod.redis_port,
            sentinel_port=pod.sentinel_port,
        )
        env = pod_env(
            self._rendered,
            container,
            local,
            pod.directory / container,
            pod_index=pod.index,
            passwords=self._passwords,
            **(self._overrides | {"ANNOUNCE_HOST": pod.name, "LOCAL_HOST": pod.ip, "BIND": pod.ip}),
        )
        if self._own_source and container == "redis":
            with Path(env["EXTRA_CONFIG_FILE"]).open("a") as extra:
                extra.write(f"\nbind-source-addr {pod.ip}\n")
        return env

    def start(self, *indexes: int, containers: tuple[str, ...] | None = None) -> None:
        for index in indexes:
            pod = self.pods[index]
            for name in containers or self.containers:
                command = container(self._rendered.redis, name)["command"]
                script = self.scripts_dir / Path(command[-1]).name
                argv = [
                    "unshare",
                    "--mount",
                    "sh",
                    "-c",
                    _WITH_HOSTS,
                    str(self._hosts),
                    str(script),
                ]
                pod.processes[name] = self._start_command(argv, self.env(pod, name), pod.log(name))

    def publish(self, index: int, published: bool = True) -> None:
        """Whether the pod's name resolves (a deleted pod's DNS record is gone)."""
        self.pods[index].published = published
        self._write_hosts()

    def move(self, index: int, ip: str) -> None:
        """The pod is recreated elsewhere: same name, new IP (stop it first)."""
        self.pods[index].ip = ip
        self._write_hosts()

    def stop(
        self, *indexes: int, containers: tuple[str, ...] | None = None, kill: bool = False
    ) -> None:
        """SIGTERM (a pod deleted: Redis writes its AOF and exits) or SIGKILL (a node lost)."""
        for index in indexes:
            pod = self.pods[index]
            for name in containers or self.containers:
                process = pod.processes.pop(name, None)
                if process is None or process.poll() is not None:
                    continue
                os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
                process.wait(timeout=15)

    def lose_volume(self, index: int) -> None:
        shutil.rmtree(self.pods[index].directory / "redis" / "data", ignore_errors=True)

    def lose_sentinel_dir(self, index: int) -> None:
        """What a recreated pod starts with: a new, empty /sentinel emptyDir."""
        shutil.rmtree(self.pods[index].directory / "sentinel" / "config", ignore_errors=True)

    def running(self, index: int, container: str) -> bool:
        process = self.pods[index].processes.get(container)
        return process is not None and process.poll() is None

    # --- what the pods say -------------------------------------------------------------------

    def sentinel_names(self, index: int) -> str:
        """The Redis node a sentinel names master, as a test reaches it (IP:port)."""
        with client(self.pods[index].sentinel) as sentinel:
            reply = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        if not reply:
            return ""
        pod = next(p for p in self.pods if p.name == reply[0] and p.redis_port == int(reply[1]))
        return pod.redis

    def known_sentinels(self, index: int) -> list[dict[str, str]]:
        with client(self.pods[index].sentinel) as sentinel:
            replies = sentinel.execute_command("SENTINEL", "SENTINELS", "mymaster")
        return [_as_dict(reply) for reply in replies]

    def known_replicas(self, index: int) -> int:
        with client(self.pods[index].sentinel) as sentinel:
            return len(sentinel.execute_command("SENTINEL", "REPLICAS", "mymaster"))

    def sees_everyone_up(self, index: int, others: int) -> bool:
        """Whether a sentinel knows exactly `others` peers and `others` replicas, all up."""
        with client(self.pods[index].sentinel) as sentinel:
            peers = [
                _as_dict(reply)
                for kind in ("SENTINELS", "REPLICAS")
                for reply in sentinel.execute_command("SENTINEL", kind, "mymaster")
            ]
        return len(peers) == 2 * others and not any("s_down" in p["flags"] for p in peers)

    def ckquorum(self, index: int) -> str:
        with client(self.pods[index].sentinel) as sentinel:
            return str(sentinel.execute_command("SENTINEL", "CKQUORUM", "mymaster"))

    def role(self, index: int) -> str:
        with client(self.pods[index].redis) as node:
            return str(node.execute_command("ROLE")[0])

    def agreed_master(self, *indexes: int) -> str:
        """The master every sentinel of `indexes` names, if they agree and it runs as master."""
        named = Counter(self.sentinel_names(i) for i in indexes)
        if len(named) != 1:
            return ""
        (master,) = named
        with client(master) as node:
            return master if node.execute_command("ROLE")[0] == "master" else ""

    def wait_for_agreed_master(self, *indexes: int, timeout: float = 60) -> str:
        wait_until(
            f"the sentinels of pods {indexes} agree on a running master",
            lambda: bool(self.agreed_master(*indexes)),
            timeout=timeout,
        )
        return self.agreed_master(*indexes)

    def index_of(self, redis_address: str) -> int:
        """The pod whose Redis a test reaches at `redis_address`."""
        return next(p.index for p in self.pods if p.redis == redis_address)


def _as_dict(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
