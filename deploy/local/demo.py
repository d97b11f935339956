"""`make demo`: the kit end to end on the local topology, narrated step by step.

Logs in at the gateway, fills a cart through it, reads it from the cart service with the
propagated id, kills the Redis master under load (in Cluster mode the master of the session's
slot) and shows that nothing acknowledged is lost and the old master rejoins as a replica.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from deploy.local.cluster import ClusterSpec, LocalCluster, slot_of
from deploy.local.errors import TopologyError
from deploy.local.processes import liveness
from deploy.local.serve import read_env_file
from deploy.local.spec import TopologySpec
from deploy.local.stack import ServicePorts, running_services, service_url, start_services
from deploy.local.topology import CLI_COMMAND, DEFAULT_RUN_DIR, LocalTopology
from sessionlib.config import env_variable

USER = "alice"
LOAD_WRITERS = 2
REQUEST_TIMEOUT = 20.0


class DemoFailed(Exception):
    """A step did not show what it should; the message says what was seen instead."""


@dataclass
class Request:
    kind: str  # "write" (through the gateway) or "read" (straight from the cart)
    started: float
    finished: float
    status: int | None  # None: no HTTP answer at all
    sku: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 400


@dataclass
class Load:
    """Requests made while the master is killed: each one recorded, none assumed."""

    requests: list[Request] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def acknowledged_skus(self) -> list[str]:
        return [r.sku for r in self.requests if r.kind == "write" and r.ok and r.sku]

    def outage_after(self, fault: float) -> float | None:
        """Seconds from the fault to the end of the first write started after it that
        succeeded: what a client waited at worst to see its writes land again."""
        after = [r for r in self.requests if r.kind == "write" and r.started >= fault and r.ok]
        return min(r.finished for r in after) - fault if after else None


class Narrator:
    """Prints each step with a spinner while it runs, and keeps the summary rows."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: list[tuple[str, str, str]] = []
        self.number = 0

    @contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        self.number += 1
        outcome: list[str] = []
        started = time.monotonic()
        with self.console.status(f"[bold]{self.number}. {title}…"):
            try:
                yield outcome
            except (DemoFailed, TopologyError, httpx.HTTPError) as exc:
                self.console.print(f"[red]✘ {self.number}. {title}: {exc}")
                self.rows.append((title, "FAILED", str(exc)))
                raise
        seconds = time.monotonic() - started
        detail = "; ".join(outcome)
        self.console.print(f"[green]✔[/] {self.number}. {title} [dim]({seconds:.1f}s)[/]")
        if detail:
            self.console.print(f"    {detail}")
        self.rows.append((title, "ok", detail))


def _expect(response: httpx.Response, status: int, what: str) -> httpx.Response:
    if response.status_code != status:
        raise DemoFailed(f"{what}: expected {status}, got {response.status_code} {response.text}")
    return response


async def _add(client: httpx.AsyncClient, gateway: str, session_id: str, sku: str) -> int:
    answer = await client.post(
        f"{gateway}/cart/items",
        json={"sku": sku, "qty": 1},
        headers={"X-Session-Id": session_id},
    )
    return answer.status_code


async def _writer(
    load: Load, client: httpx.AsyncClient, gateway: str, session_id: str, writer: int
) -> None:
    n = 0
    while not load.stop.is_set():
        n += 1
        sku = f"load-{writer}-{n}"
        started = time.monotonic()
        try:
            status: int | None = await _add(client, gateway, session_id, sku)
        except httpx.HTTPError:
            status = None
        load.requests.append(Request("write", started, time.monotonic(), status, sku))
        await asyncio.sleep(0.05)


async def _reader(load: Load, client: httpx.AsyncClient, cart: str, session_id: str) -> None:
    while not load.stop.is_set():
        started = time.monotonic()
        try:
            answer = await client.get(f"{cart}/cart", headers={"X-Session-Id": session_id})
            status: int | None = answer.status_code
        except httpx.HTTPError:
            status = None
        load.requests.append(Request("read", started, time.monotonic(), status))
        await asyncio.sleep(0.1)


def _metric_totals(text: str, names: Sequence[str]) -> dict[str, float]:
    totals = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


class DemoStack(ABC):
    """What the demo needs from the Redis side: the Sentinel topology or the Redis Cluster,
    started with the services on top, and which master holds the session and how it fails
    over. The story in `run_demo` is the same for both."""

    servers: LocalTopology | LocalCluster
    title: str  # "the local HA stack"
    node_summary: str  # "3 Redis nodes, 3 sentinels"
    # (metric, what it counts) read from both services at the end.
    metrics: tuple[tuple[str, str], ...]

    @property
    @abstractmethod
    def writes_wait_for_rejoin(self) -> bool:
        """Whether the promoted master refuses writes until the old one rejoins as its
        replica, so the demo brings that one back before it expects writes to land."""

    @abstractmethod
    def other_mode(self) -> LocalTopology | LocalCluster:
        """The other mode in the same run directory: both use the service ports and `down`."""

    @abstractmethod
    def describe(self) -> str:
        """One line on the running Redis side."""

    @abstractmethod
    def master_of_session(self, session_id: str) -> tuple[str, str]:
        """`host:port` of the master holding the session, and the title of the step that
        kills it."""

    @abstractmethod
    def fail_over(self, old: str) -> tuple[str, str]:
        """SIGKILL `old` and wait until its replica is promoted: the new master's `host:port`
        and who promoted it."""

    @abstractmethod
    def rejoin(self, old: str) -> str:
        """Restart `old` and wait until it replicates the master of its data; returns that."""

    @abstractmethod
    def explore(self) -> str:
        """Lines for the "Explore" section on how to look at this mode."""

    @abstractmethod
    def redis_cli_target(self) -> str:
        """redis-cli's options that reach this mode's first node."""

    def ensure(self, ports: ServicePorts) -> str:
        """Reuse a running stack in the run directory, or start one; returns what happened."""
        servers = self.servers
        other = self.other_mode()
        if other.is_running():
            raise TopologyError(
                f"{other.running_name} already runs from {servers.run_dir}; stop it first "
                "(make down-local) to run this demo"
            )
        nodes_alive = servers.processes and all(
            liveness(p) == "alive" for p in servers.processes if p.kind in ("redis", "sentinel")
        )
        running_secure = type(servers)(servers.run_dir).spec.secure
        if nodes_alive and running_secure != servers.spec.secure:
            raise TopologyError(
                f"a {'secure' if running_secure else 'plain'} stack already runs in "
                f"{servers.run_dir}; stop it first (make down-local) to run the demo "
                f"{'with' if servers.spec.secure else 'without'} SECURE=1"
            )
        if not nodes_alive:
            servers.up()
            start_services(servers, ports)
            return f"started {self.node_summary}, cart and gateway"
        if not running_services(servers):
            start_services(servers, ports)
            return f"reused the running {self.node_summary}, started cart and gateway"
        return "reused the running stack"

    def durability(self) -> str:
        """The services' durability setting, as they were started with it."""
        env = read_env_file(self.servers.run_dir / "services.env")
        replicas = int(env.get(env_variable("session.durability.replicas"), "0"))
        if not replicas:
            return "durability: no WAIT after a write"
        shortfall = env.get(env_variable("session.durability.on_shortfall"), "")
        return f"durability: each write WAITs for {replicas} replica(s), on shortfall {shortfall}"


class SentinelDemo(DemoStack):
    """1 master, 2 replicas, 3 sentinels (DESIGN §3)."""

    title = "the local HA stack"
    node_summary = "3 Redis nodes, 3 sentinels"
    metrics = (
        ("sessionlib_failovers_total", "failovers"),
        ("sessionlib_store_retries_total", "retries"),
        ("sessionlib_durability_shortfall_total", "shortfalls"),
    )

    def __init__(self, topology: LocalTopology) -> None:
        self.servers = self.topology = topology

    @property
    def writes_wait_for_rejoin(self) -> bool:
        return False  # the promoted master keeps the other replica

    def other_mode(self) -> LocalCluster:
        return LocalCluster(self.topology.run_dir)

    def describe(self) -> str:
        return f"master {self.topology.master_address()}, sentinels agree (quorum 2)"

    def master_of_session(self, session_id: str) -> tuple[str, str]:
        master = self.topology.master_address()
        return master, f"Kill the Redis master {master} (SIGKILL) under load"

    def fail_over(self, old: str) -> tuple[str, str]:
        self.topology.kill(old)
        return self.topology.wait_for_failover(old), "Sentinel"

    def rejoin(self, old: str) -> str:
        self.topology.restart(old)
        self.topology.wait_for_replica(old, 60.0)
        return self.topology.master_address()

    def explore(self) -> str:
        return (
            f"  .venv/bin/{CLI_COMMAND} status   # who is master now\n"
            "  Prometheus (when installed): http://127.0.0.1:9090\n"
        )

    def redis_cli_target(self) -> str:
        return f"-p {self.topology.redis_nodes[0].port}"


class ClusterDemo(DemoStack):
    """3 masters with a replica each (DESIGN §3a)."""

    title = "the local HA stack (Redis Cluster)"
    node_summary = "6 Redis nodes (3 masters, 3 replicas)"
    metrics = (
        ("sessionlib_cluster_topology_refreshes_total", "slot map reloads"),
        ("sessionlib_store_retries_total", "retries"),
        ("sessionlib_durability_shortfall_total", "shortfalls"),
    )

    def __init__(self, cluster: LocalCluster) -> None:
        self.servers = self.cluster = cluster

    @property
    def writes_wait_for_rejoin(self) -> bool:
        # min-replicas-to-write: a promoted master with no replica left refuses writes.
        spec = self.cluster.spec
        return spec.min_replicas_to_write >= spec.replicas_per_master

    def other_mode(self) -> LocalTopology:
        return LocalTopology(self.cluster.run_dir)

    def describe(self) -> str:
        return self.cluster.summary()

    def master_of_session(self, session_id: str) -> tuple[str, str]:
        slot = session_slot(session_id)
        master = self.cluster.master_of(slot).address
        title = f"Kill {master}, the master of the session's slot {slot} (SIGKILL) under load"
        return master, title

    def fail_over(self, old: str) -> tuple[str, str]:
        self.cluster.kill(old)
        return self.cluster.wait_for_failover(old).address, "the cluster"

    def rejoin(self, old: str) -> str:
        self.cluster.restart(old)
        return self.cluster.wait_for_replica(old, 60.0).address

    def explore(self) -> str:
        return (
            f"  .venv/bin/{CLI_COMMAND} status   # each node's role and slots\n"
            f"  .venv/bin/{CLI_COMMAND} master 'sessionlib:s:{{<id>}}'   # who serves a session\n"
        )

    def redis_cli_target(self) -> str:
        return f"-c -p {self.cluster.nodes[0].port}"


def session_slot(session_id: str) -> int:
    """The Cluster slot of a session's key `{prefix}:s:{<raw id>}` (DESIGN §2): its hash tag
    is the raw id, the client's id without a signature."""
    return slot_of("{" + session_id.partition(".")[0] + "}")


async def run_demo(stack: DemoStack, ports: ServicePorts, console: Console) -> Narrator:
    narrator = Narrator(console)
    gateway, cart = service_url(ports, "gateway"), service_url(ports, "cart")
    secure = stack.servers.spec.secure
    with narrator.step(f"Start {stack.title}" + (" (TLS + ACL)" if secure else "")) as out:
        out.append(await asyncio.to_thread(stack.ensure, ports))
        out.append(await asyncio.to_thread(stack.describe))
        out.append(stack.durability())
        if secure:
            out.append(
                "TLS only (mutual) on every port and link; services log in as ACL user "
                "sessionlib; the default user is off"
            )

    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        with narrator.step(f"Log in as {USER} at the gateway") as out:
            answer = _expect(
                await client.post(f"{gateway}/login", json={"username": USER, "password": "demo"}),
                200,
                "POST /login",
            )
            session_id = answer.headers["x-session-id"]
            out.append(f"session id {session_id[:6]}… (cookie and X-Session-Id header)")

        with narrator.step("Add 3 items through the gateway (stored by the cart)") as out:
            for sku in ("book", "lamp", "mug"):
                status = await _add(client, gateway, session_id, sku)
                if status != 201:
                    raise DemoFailed(f"POST /cart/items {sku}: {status}")
            out.append("gateway -> cart with the session id propagated, 3 answers 201")

        with narrator.step("Read the cart straight from the cart service") as out:
            answer = _expect(
                await client.get(f"{cart}/cart", headers={"X-Session-Id": session_id}),
                200,
                "GET cart /cart",
            )
            skus = sorted(item["sku"] for item in answer.json()["items"])
            if skus != ["book", "lamp", "mug"]:
                raise DemoFailed(f"cart holds {skus}")
            out.append(f"same session on port {ports.cart}: {', '.join(skus)}")

        load = Load()
        workers = [
            asyncio.create_task(_writer(load, client, gateway, session_id, w))
            for w in range(LOAD_WRITERS)
        ] + [asyncio.create_task(_reader(load, client, cart, session_id))]
        try:
            await asyncio.sleep(1.5)
            old_master, kill_title = await asyncio.to_thread(stack.master_of_session, session_id)
            with narrator.step(kill_title) as out:
                fault = time.monotonic()
                new_master, promoter = await asyncio.to_thread(stack.fail_over, old_master)
                promoted = time.monotonic() - fault
                out.append(f"{promoter} promoted {new_master} in {promoted:.1f}s")
                if stack.writes_wait_for_rejoin:
                    out.append(
                        f"{new_master} has no replica left, so it refuses writes "
                        "(min-replicas-to-write) until the old master is back"
                    )
            if stack.writes_wait_for_rejoin:
                await _rejoin(narrator, stack, old_master)
            with narrator.step("Keep serving on the new master") as out:
                await asyncio.sleep(3.0)
                outage = load.outage_after(fault)
                if outage is None:
                    raise DemoFailed("no write succeeded after the failover")
                out.append(f"writes landed again {outage:.1f}s after the kill")
        finally:
            load.stop.set()
            await asyncio.gather(*workers)

        failed = Counter(str(r.status) for r in load.requests if not r.ok)
        with narrator.step("Check that no acknowledged cart item was lost") as out:
            answer = _expect(
                await client.get(f"{gateway}/cart", headers={"X-Session-Id": session_id}),
                200,
                "GET gateway /cart",
            )
            held = {item["sku"] for item in answer.json()["items"]}
            acknowledged = load.acknowledged_skus()
            lost = [sku for sku in acknowledged if sku not in held]
            if lost:
                raise DemoFailed(f"{len(lost)} acknowledged items missing: {lost[:5]}")
            attempted = sum(1 for r in load.requests if r.kind == "write")
            out.append(
                f"{len(acknowledged)} of {attempted} adds acknowledged, 0 lost; "
                f"failed requests: {dict(failed) or 'none'}"
            )

        if not stack.writes_wait_for_rejoin:
            await _rejoin(narrator, stack, old_master)

        with narrator.step("Read the key metrics from both services") as out:
            names = [name for name, _ in stack.metrics]
            for service, url in (("gateway", gateway), ("cart", cart)):
                text = _expect(await client.get(f"{url}/metrics"), 200, "GET /metrics").text
                totals = _metric_totals(text, names)
                counts = (f"{what} {totals[name]:.0f}" for name, what in stack.metrics)
                out.append(f"{service}: {', '.join(counts)}")
            longest = max(r.finished - r.started for r in load.requests)
            out.append(f"longest request during the failover: {longest:.1f}s")
    return narrator


async def _rejoin(narrator: Narrator, stack: DemoStack, old_master: str) -> None:
    with narrator.step(f"Restart {old_master}: it rejoins as a replica") as out:
        master = await asyncio.to_thread(stack.rejoin, old_master)
        out.append(f"{old_master} replicates from {master}")


def _summary(narrator: Narrator) -> Table:
    table = Table(title="Demo summary")
    table.add_column("step")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for title, result, detail in narrator.rows:
        table.add_row(title, result, detail)
    return table


def _explore(console: Console, ports: ServicePorts, stack: DemoStack) -> None:
    gateway, cart = service_url(ports, "gateway"), service_url(ports, "cart")
    run_dir = stack.servers.run_dir
    stop = (
        "make down-local"
        if run_dir == DEFAULT_RUN_DIR.absolute()
        else f"{CLI_COMMAND} down --run-dir {run_dir}"
    )
    console.print(
        "\n[bold]Explore[/]\n"
        f"  curl -si -X POST {gateway}/login -H 'content-type: application/json' "
        f'-d \'{{"username":"bob","password":"demo"}}\'\n'
        f"  curl -s {cart}/cart -H 'X-Session-Id: <id from the login>'\n"
        f"  curl -s {gateway}/metrics | grep ^sessionlib_\n"
        + stack.explore()
        + _secure_access(stack)
        + f"[bold]Stop everything:[/] {stop}",
        soft_wrap=True,
    )


def _secure_access(stack: DemoStack) -> str:
    """How to reach a secure stack with redis-cli; nothing for a plain one."""
    credentials = stack.servers.credentials
    if credentials is None:
        return ""
    tls = credentials.client_tls
    return (
        f"  redis-cli --tls --cacert {tls.ca_file} --cert {tls.cert_file} "
        f"--key {tls.key_file} --user sessionlib --askpass {stack.redis_cli_target()}\n"
        f"    (passwords of the ACL users in {stack.servers.run_dir / 'users.json'})\n"
    )


def _ports(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.demo", description=__doc__)
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ.get("SESSIONLIB_LOCAL_RUN_DIR", DEFAULT_RUN_DIR)),
    )
    parser.add_argument(
        "--mode",
        choices=["sentinel", "cluster"],
        default=os.environ.get("SESSIONLIB_LOCAL_MODE") or "sentinel",
        help="Sentinel topology or Redis Cluster (DESIGN.md §3a) (default: %(default)s)",
    )
    parser.add_argument("--redis-ports", default="6380,6381,6382")
    parser.add_argument("--sentinel-ports", default="26380,26381,26382")
    parser.add_argument("--cluster-ports", default="7001,7002,7003,7004,7005,7006")
    parser.add_argument(
        "--cluster-bus-ports", default="", help="default: each cluster port + 10000"
    )
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument("--cart-port", type=int, default=8081)
    parser.add_argument(
        "--secure",
        action="store_true",
        help="TLS only (mutual) and ACL users instead of plain text (DESIGN.md §3b)",
    )
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=max(100, Console().width))
    try:
        stack = _stack(args)
    except TopologyError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    ports = ServicePorts(args.gateway_port, args.cart_port)
    in_cluster = " (Redis Cluster)" if isinstance(stack, ClusterDemo) else ""
    console.rule(f"[bold]sessionlib: highly available sessions, demo{in_cluster}")
    try:
        narrator = asyncio.run(run_demo(stack, ports, console))
    except (DemoFailed, TopologyError, httpx.HTTPError):
        console.print(
            f"[red]The demo failed.[/] Logs: {stack.servers.run_dir / 'logs'}; "
            "stop with `make down-local`."
        )
        return 1
    console.print(_summary(narrator))
    _explore(console, ports, stack)
    return 0


def _stack(args: argparse.Namespace) -> DemoStack:
    if args.mode == "cluster":
        spec = ClusterSpec(
            ports=_ports(args.cluster_ports),
            bus_ports=_ports(args.cluster_bus_ports),
            secure=args.secure,
        )
        return ClusterDemo(LocalCluster(args.run_dir, spec))
    topology_spec = TopologySpec(
        redis_ports=_ports(args.redis_ports),
        sentinel_ports=_ports(args.sentinel_ports),
        secure=args.secure,
    )
    return SentinelDemo(LocalTopology(args.run_dir, topology_spec))


if __name__ == "__main__":
    sys.exit(main())
