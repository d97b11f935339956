"""`make demo`: the kit end to end on the local topology, narrated step by step.

Logs in at the gateway, fills a cart through it, reads it from the cart service with the
propagated id, kills the Redis master under load and shows that nothing acknowledged is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from deploy.local.errors import TopologyError
from deploy.local.processes import liveness
from deploy.local.spec import TopologySpec
from deploy.local.stack import ServicePorts, running_services, service_url, start_services
from deploy.local.topology import CLI_COMMAND, DEFAULT_RUN_DIR, LocalTopology

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


def _ensure_stack(topology: LocalTopology, ports: ServicePorts) -> str:
    """Reuse a running stack in the run directory, or start one; returns what happened."""
    nodes_alive = topology.processes and all(
        liveness(p) == "alive" for p in topology.processes if p.kind in ("redis", "sentinel")
    )
    running_secure = LocalTopology(topology.run_dir).spec.secure
    if nodes_alive and running_secure != topology.spec.secure:
        raise TopologyError(
            f"a {'secure' if running_secure else 'plain'} topology already runs in "
            f"{topology.run_dir}; stop it first (make down-local) to run the demo "
            f"{'with' if topology.spec.secure else 'without'} SECURE=1"
        )
    if not nodes_alive:
        topology.up()
        start_services(topology, ports)
        return "started 3 Redis nodes, 3 sentinels, cart and gateway"
    if not running_services(topology):
        start_services(topology, ports)
        return "reused the running topology, started cart and gateway"
    return "reused the running stack"


async def run_demo(topology: LocalTopology, ports: ServicePorts, console: Console) -> Narrator:
    narrator = Narrator(console)
    gateway, cart = service_url(ports, "gateway"), service_url(ports, "cart")
    secure = topology.spec.secure
    with narrator.step("Start the local HA stack" + (" (TLS + ACL)" if secure else "")) as out:
        out.append(await asyncio.to_thread(_ensure_stack, topology, ports))
        out.append(f"master {topology.master_address()}, sentinels agree (quorum 2)")
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
            old_master = topology.master_address()
            with narrator.step(f"Kill the Redis master {old_master} (SIGKILL) under load") as out:
                fault = time.monotonic()
                await asyncio.to_thread(topology.kill, "master")
                new_master = await asyncio.to_thread(topology.wait_for_failover, old_master)
                promoted = time.monotonic() - fault
                out.append(f"Sentinel promoted {new_master} in {promoted:.1f}s")
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

        with narrator.step(f"Restart {old_master}: it rejoins as a replica") as out:
            await asyncio.to_thread(topology.restart, old_master)
            await asyncio.to_thread(topology.wait_for_replica, old_master, 60.0)
            out.append(f"{old_master} replicates from {topology.master_address()}")

        with narrator.step("Read the key metrics from both services") as out:
            names = (
                "sessionlib_failovers_total",
                "sessionlib_store_retries_total",
                "sessionlib_durability_shortfall_total",
            )
            for service, url in (("gateway", gateway), ("cart", cart)):
                text = _expect(await client.get(f"{url}/metrics"), 200, "GET /metrics").text
                totals = _metric_totals(text, names)
                out.append(
                    f"{service}: failovers {totals[names[0]]:.0f}, "
                    f"retries {totals[names[1]]:.0f}, shortfalls {totals[names[2]]:.0f}"
                )
            longest = max(r.finished - r.started for r in load.requests)
            out.append(f"longest request during the failover: {longest:.1f}s")
    return narrator


def _summary(narrator: Narrator) -> Table:
    table = Table(title="Demo summary")
    table.add_column("step")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for title, result, detail in narrator.rows:
        table.add_row(title, result, detail)
    return table


def _explore(console: Console, ports: ServicePorts, topology: LocalTopology) -> None:
    gateway, cart = service_url(ports, "gateway"), service_url(ports, "cart")
    stop = (
        "make down-local"
        if topology.run_dir == DEFAULT_RUN_DIR.absolute()
        else f"{CLI_COMMAND} down --run-dir {topology.run_dir}"
    )
    console.print(
        "\n[bold]Explore[/]\n"
        f"  curl -si -X POST {gateway}/login -H 'content-type: application/json' "
        f'-d \'{{"username":"bob","password":"demo"}}\'\n'
        f"  curl -s {cart}/cart -H 'X-Session-Id: <id from the login>'\n"
        f"  curl -s {gateway}/metrics | grep ^sessionlib_\n"
        f"  .venv/bin/{CLI_COMMAND} status   # who is master now\n"
        "  Prometheus (when installed): http://127.0.0.1:9090\n"
        + _secure_access(topology)
        + f"[bold]Stop everything:[/] {stop}",
        soft_wrap=True,
    )


def _secure_access(topology: LocalTopology) -> str:
    """How to reach a secure topology with redis-cli; nothing for a plain one."""
    credentials = topology.credentials
    if credentials is None:
        return ""
    tls = credentials.client_tls
    return (
        f"  redis-cli --tls --cacert {tls.ca_file} --cert {tls.cert_file} "
        f"--key {tls.key_file} --user sessionlib --askpass -p {topology.redis_nodes[0].port}\n"
        f"    (passwords of the ACL users in {topology.run_dir / 'users.json'})\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.demo", description=__doc__)
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ.get("SESSIONLIB_LOCAL_RUN_DIR", DEFAULT_RUN_DIR)),
    )
    parser.add_argument("--redis-ports", default="6380,6381,6382")
    parser.add_argument("--sentinel-ports", default="26380,26381,26382")
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument("--cart-port", type=int, default=8081)
    parser.add_argument(
        "--secure",
        action="store_true",
        help="TLS only (mutual) and ACL users instead of plain text (DESIGN.md §3b)",
    )
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=max(100, Console().width))
    spec = TopologySpec(
        redis_ports=tuple(int(p) for p in args.redis_ports.split(",")),
        sentinel_ports=tuple(int(p) for p in args.sentinel_ports.split(",")),
        secure=args.secure,
    )
    topology = LocalTopology(args.run_dir, spec)
    ports = ServicePorts(args.gateway_port, args.cart_port)
    console.rule("[bold]sessionlib: highly available sessions, demo")
    try:
        narrator = asyncio.run(run_demo(topology, ports, console))
    except (DemoFailed, TopologyError, httpx.HTTPError):
        console.print(
            f"[red]The demo failed.[/] Logs: {topology.run_dir / 'logs'}; "
            "stop with `make down-local`."
        )
        return 1
    console.print(_summary(narrator))
    _explore(console, ports, topology)
    return 0


if __name__ == "__main__":
    sys.exit(main())
