"""Questions the local tools ask Redis nodes and sentinels, each answered in about a second.
Readiness checks return a list of problems in words: empty means ready, the rest goes to users."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deploy.local.credentials import TLSFiles
from deploy.local.errors import NotReady, TopologyError
from deploy.local.processes import ManagedProcess, liveness, log_tail
from deploy.local.spec import Node, TopologySpec

# A probe must never hang on a paused node; a second is ample on loopback.
PROBE_TIMEOUT = 1.0
# Short enough that a wait notices readiness promptly, long enough not to take the 2 cores
# the Redis processes need for themselves.
POLL_INTERVAL = 0.1

T = TypeVar("T")


@dataclass(frozen=True)
class Login:
    """Who a client is to the nodes. The plain topology: its password, if any, on the Redis
    nodes only (its sentinels have none). Secure mode (`tls` set): one ACL user over mutual
    TLS, on Redis nodes and sentinels alike."""

    password: str | None = None
    username: str | None = None
    tls: TLSFiles | None = None

    def client_kwargs(self, node: Node) -> dict[str, Any]:
        """Keywords for a redis-py client (sync or asyncio) of `node`."""
        if self.tls is None:
            return {"password": self.password if node.kind == "redis" else None}
        return {
            "username": self.username,
            "password": self.password,
            "ssl": True,
            "ssl_ca_certs": str(self.tls.ca_file),
            "ssl_certfile": str(self.tls.cert_file),
            "ssl_keyfile": str(self.tls.key_file),
            "ssl_check_hostname": True,
        }


def connect(node: Node, login: Login) -> redis.Redis:
    """A sync client for one node that fails fast instead of retrying (close it after)."""
    return redis.Redis(
        host=node.host,
        port=node.port,
        socket_timeout=PROBE_TIMEOUT,
        socket_connect_timeout=PROBE_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        **login.client_kwargs(node),
    )


def ask(node: Node, login: Login, question: Callable[[redis.Redis], T]) -> T:
    """Open a connection, ask one question, close; raises redis.RedisError on no answer."""
    with connect(node, login) as client:
        return question(client)


def command(client: redis.Redis, *args: str) -> Any:
    """The raw reply to a command: redis-py's parsing of SENTINEL replies differs by version."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def role(client: redis.Redis) -> list[Any]:
    """ROLE: ["master", offset, replicas] or ["slave", host, port, link state, offset]."""
    return cast(list[Any], command(client, "ROLE"))


def replication_info(client: redis.Redis) -> dict[str, Any]:
    """INFO replication as a dict (role, master_link_status, connected_slaves, ...)."""
    return cast(dict[str, Any], client.info("replication"))


def named_master(client: redis.Redis, master_name: str) -> str | None:
    """`host:port` a sentinel names as master, None when it does not monitor `master_name`."""
    reply = command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name)
    return f"{reply[0]}:{reply[1]}" if reply else None


def master_state(client: redis.Redis, master_name: str) -> dict[str, str]:
    """SENTINEL MASTER as a dict (ip, port, flags, num-slaves, num-other-sentinels, ...)."""
    reply = command(client, "SENTINEL", "MASTER", master_name)
    return dict(zip(reply[::2], reply[1::2], strict=True))


def ping_problems(node: Node, login: Login) -> list[str]:
    """Empty once the node answers PING (a Redis node loading its AOF does not yet)."""
    try:
        ask(node, login, lambda client: client.ping())
    except redis.RedisError as exc:
        return [f"{node.name} ({node.address}) does not answer PING yet ({exc})"]
    return []


def replication_problems(spec: TopologySpec, login: Login) -> list[str]:
    """Empty once the master answers and every replica reports master_link_status:up."""
    master, *replicas = spec.redis_nodes
    problems = ping_problems(master, login)
    for replica in replicas:
        try:
            info = ask(replica, login, replication_info)
        except redis.RedisError as exc:
            problems.append(f"{replica.name} ({replica.address}): no answer ({exc})")
            continue
        link = info.get("master_link_status", "missing")
        if link != "up":
            problems.append(f"{replica.name} ({replica.address}): master_link_status {link}")
    return problems


def sentinel_problems(spec: TopologySpec, login: Login) -> list[str]:
    """Empty once every sentinel names the first node as master, knows all the replicas and
    the other sentinels, and SENTINEL CKQUORUM succeeds."""
    master = spec.redis_nodes[0]
    want_replicas = len(spec.redis_nodes) - 1
    want_sentinels = len(spec.sentinel_nodes) - 1
    problems = []
    for sentinel in spec.sentinel_nodes:
        where = f"{sentinel.name} ({sentinel.address})"
        try:
            named = ask(sentinel, login, lambda c: named_master(c, spec.master_name))
            state = ask(sentinel, login, lambda c: master_state(c, spec.master_name))
            if named != master.address:
                problems.append(f"{where}: names master {named}, want {master.address}")
            elif int(state["num-slaves"]) < want_replicas:
                problems.append(f"{where}: knows {state['num-slaves']} of {want_replicas} replicas")
            elif int(state["num-other-sentinels"]) < want_sentinels:
                problems.append(
                    f"{where}: knows {state['num-other-sentinels']} of {want_sentinels} "
                    "other sentinels"
                )
            else:
                ask(sentinel, login, lambda c: command(c, "SENTINEL", "CKQUORUM", spec.master_name))
        except redis.RedisError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def describe(node: Node, spec: TopologySpec, login: Login) -> tuple[str, str]:
    """The role a node reports and a one-line detail, for `status`."""
    if node.kind == "sentinel":
        named = ask(node, login, lambda c: named_master(c, spec.master_name))
        state = ask(node, login, lambda c: master_state(c, spec.master_name))
        # Flags other than "master" say why this view may be changing (s_down, failover, ...).
        flags = [flag for flag in state["flags"].split(",") if flag != "master"]
        return "sentinel", (
            f"master {named}, {state['num-slaves']} replicas, "
            f"{state['num-other-sentinels']} other sentinels"
            + (f" ({','.join(flags)})" if flags else "")
        )
    reply = ask(node, login, role)
    if reply[0] == "master":
        return "master", f"{len(reply[2])} replica(s) connected"
    return "replica", f"of {reply[1]}:{reply[2]}, link {reply[3]}"


def wait_until(
    deadline: float,
    failure: str,
    problems: Callable[[], list[str]],
    watch: Sequence[ManagedProcess] = (),
) -> None:
    """Poll `problems` until it lists none, else raise NotReady(`failure` + the last problems).

    Fails at once, with the end of its log, when a `watch`ed process dies meanwhile.
    """
    while True:
        for process in watch:
            if liveness(process) == "dead":
                raise NotReady(
                    f"{process.name} ({process.address}) exited unexpectedly; "
                    f"the end of {process.log}:\n{log_tail(process)}"
                )
        try:
            found = problems()
        except (redis.RedisError, TopologyError) as exc:
            found = [str(exc)]
        if not found:
            return
        if time.monotonic() >= deadline:
            listed = "\n".join(f"  - {problem}" for problem in found)
            raise NotReady(f"{failure}:\n{listed}")
        time.sleep(POLL_INTERVAL)
