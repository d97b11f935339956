"""The secure local topology (DESIGN §3b) against real processes: TLS only and mutual on every
port and link, ACL users with the least rights that let sessionlib, replication, Sentinel and
the tools do their work, and secrets that stay private.

"No denial" is read from each node's ACL LOG: a command refused to any user lands there, so
an empty log after an operation proves the users had every right it needed."""

from __future__ import annotations

import asyncio
import hashlib
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deploy.local import probes
from deploy.local.spec import Node
from deploy.local.topology import LocalTopology
from sessionlib.config import load_settings
from sessionlib.store import SessionStore
from tests.support import acl
from tests.support.observers import RecordingObserver

pytestmark = pytest.mark.integration

# Sentinel turns a returning old master into a replica within ~20 s.
REJOIN_TIMEOUT = 40.0
# appendfsync everysec: what a write needs to be on disk before a SIGKILL.
AOF_FSYNC_SECONDS = 1.5
# How Redis words an ACL refusal, at the top level and from inside a script; DEBUG is refused
# before any ACL is consulted (enable-debug-command no), to every user.
REFUSED = r"NOPERM|no permissions|can.t run this command|DEBUG command not allowed"


def all_nodes(topology: LocalTopology) -> list[Node]:
    return [*topology.redis_nodes, *topology.sentinel_nodes]


def as_user(topology: LocalTopology, node: Node, user: str) -> redis.Redis:
    """A client of `node` logged in as `user` over mutual TLS."""
    return probes.connect(node, topology.login(user))


def stranger(node: Node, **kwargs: Any) -> redis.Redis:
    """A client of `node` set up other than the topology's clients, trying once."""
    return redis.Redis(
        host=node.host, port=node.port, socket_timeout=1.0, retry=Retry(NoBackoff(), 0), **kwargs
    )


def reset_acl_logs(topology: LocalTopology) -> None:
    acl.reset_acl_logs(topology, all_nodes(topology))


def acl_denials(topology: LocalTopology) -> dict[str, list[str]]:
    """`user: command or key` of every refusal each running node logged, by node name."""
    return acl.acl_denials(topology, all_nodes(topology))


def secure_store(topology: LocalTopology, observer=None, **session: Any) -> SessionStore:
    """A store configured as the services are: `topology.redis_settings()`, user sessionlib."""
    redis_settings = {**topology.redis_settings(), "retry": {"deadline_seconds": 15.0}}
    settings = load_settings("dev", redis=redis_settings, session=session)
    return SessionStore.from_settings(settings, observer=observer)


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --- TLS only, mutual, and nobody without a user ---------------------------------------------


def test_every_port_refuses_a_plaintext_client(shared_secure_topology: LocalTopology) -> None:
    for node in all_nodes(shared_secure_topology):
        plain = stranger(node)
        with plain, pytest.raises(redis.ConnectionError):
            plain.ping()


def test_every_port_refuses_a_tls_client_without_a_certificate(
    shared_secure_topology: LocalTopology,
) -> None:
    credentials = shared_secure_topology.credentials
    assert credentials is not None
    for node in all_nodes(shared_secure_topology):
        anonymous = stranger(
            node,
            ssl=True,
            ssl_ca_certs=str(credentials.ca_file),
            username="admin",
            password=credentials.password("admin"),
        )
        with anonymous, pytest.raises(redis.ConnectionError):
            anonymous.ping()


def test_a_client_with_a_certificate_but_no_user_can_run_nothing(
    shared_secure_topology: LocalTopology,
) -> None:
    credentials = shared_secure_topology.credentials
    assert credentials is not None
    tls = probes.Login(tls=credentials.client_tls).client_kwargs(Node("-", "redis", "-", 0))
    for node in all_nodes(shared_secure_topology):
        with stranger(node, **tls) as nobody:
            with pytest.raises(redis.AuthenticationError):
                nobody.ping()
            with pytest.raises(redis.AuthenticationError):
                nobody.execute_command("AUTH", "default", "")


def test_redis_nodes_listen_on_their_port_with_tls_only(
    shared_secure_topology: LocalTopology,
) -> None:
    for node in shared_secure_topology.redis_nodes:
        with shared_secure_topology.client(node) as admin:
            ports = admin.config_get("port", "tls-port", "tls-replication", "tls-auth-clients")
        assert ports == {
            "port": "0",
            "tls-port": str(node.port),
            "tls-replication": "yes",
            "tls-auth-clients": "yes",
        }


def test_replicas_and_sentinels_link_over_tls_as_their_own_users(
    shared_secure_topology: LocalTopology,
) -> None:
    master = shared_secure_topology.node(shared_secure_topology.master_address())
    with shared_secure_topology.client(master) as admin:
        clients = admin.client_list()
    users = [c["user"] for c in clients]
    assert users.count("replica") == 2
    assert users.count("sentinel") >= 3
    for sentinel in shared_secure_topology.sentinel_nodes:
        with shared_secure_topology.client(sentinel) as admin:
            peers = [c["user"] for c in admin.client_list()]
            quorum = admin.execute_command(
                "SENTINEL", "CKQUORUM", shared_secure_topology.master_name
            )
        assert peers.count("sentinel") >= 2
        assert quorum.startswith("OK 3 usable Sentinels")


# --- least privilege -------------------------------------------------------------------------

APP_REFUSED_ON_REDIS = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "masterauth"),
    ("CONFIG", "SET", "appendonly", "no"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("REPLICAOF", "NO", "ONE"),
    ("ACL", "LIST"),
    ("CLIENT", "LIST"),
    ("SCRIPT", "FLUSH"),
    ("INFO",),
    ("SET", "sessionlib:s:{x}", "1"),
    ("HSET", "elsewhere:s:{x}", "a", "1"),
    ("HGETALL", "elsewhere:s:{x}"),
    ("EVAL", "return redis.call('HGETALL', KEYS[1])", "1", "elsewhere:key"),
    ("EVAL", "return redis.call('FLUSHALL')", "0"),
    ("PUBLISH", "__sentinel__:hello", "x"),
]


@pytest.mark.parametrize("command", APP_REFUSED_ON_REDIS, ids=" ".join)
def test_the_app_user_is_refused_anything_beyond_its_commands_and_keys(
    shared_secure_topology: LocalTopology, command: tuple[str, ...]
) -> None:
    master = shared_secure_topology.node(shared_secure_topology.master_address())
    with as_user(shared_secure_topology, master, "sessionlib") as app:
        with pytest.raises(redis.ResponseError, match=REFUSED):
            app.execute_command(*command)
        assert app.ping()  # refused, not disconnected: the node is fine


APP_REFUSED_ON_SENTINELS = [
    ("SENTINEL", "FAILOVER", "mymaster"),
    ("SENTINEL", "SET", "mymaster", "quorum", "1"),
    ("SENTINEL", "REMOVE", "mymaster"),
    ("SENTINEL", "RESET", "*"),
    ("SENTINEL", "CONFIG", "GET", "*"),
    ("SENTINEL", "DEBUG"),
    ("SENTINEL", "IS-MASTER-DOWN-BY-ADDR", "127.0.0.1", "1", "0", "*"),
    ("ACL", "LIST"),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("SHUTDOWN",),
    ("SUBSCRIBE", "__sentinel__:hello"),
]


@pytest.mark.parametrize("command", APP_REFUSED_ON_SENTINELS, ids=" ".join)
def test_the_app_user_may_only_ask_sentinels_where_the_master_is(
    shared_secure_topology: LocalTopology, command: tuple[str, ...]
) -> None:
    sentinel = shared_secure_topology.sentinel_nodes[0]
    with as_user(shared_secure_topology, sentinel, "sessionlib") as app:
        with pytest.raises(redis.ResponseError, match=REFUSED):
            app.execute_command(*command)
        named = probes.named_master(app, shared_secure_topology.master_name)
    assert named == shared_secure_topology.master_address()


@pytest.mark.parametrize("user", ["replica", "sentinel", "exporter"])
def test_the_infrastructure_users_can_read_no_session(
    shared_secure_topology: LocalTopology, user: str
) -> None:
    master = shared_secure_topology.node(shared_secure_topology.master_address())
    with as_user(shared_secure_topology, master, user) as client:
        for command in [("HGETALL", "sessionlib:s:{x}"), ("KEYS", "*"), ("CONFIG", "GET", "*")]:
            with pytest.raises(redis.ResponseError, match=REFUSED):
                client.execute_command(*command)


async def test_every_store_operation_works_with_the_app_users_rights_alone(
    shared_secure_topology: LocalTopology,
) -> None:
    reset_acl_logs(shared_secure_topology)
    store = secure_store(shared_secure_topology, durability={"replicas": 2})
    try:
        await store.load_scripts()
        await store.ping()
        sid = await store.create({"cart": ["a"]})
        loaded = await store.load(sid)
        assert loaded is not None
        await store.save(loaded, {"cart": ["a", "b"]})
        with shared_secure_topology.client(shared_secure_topology.master_address()) as admin:
            admin.script_flush()  # as after a failover: the next calls fall back to EVAL
        logged_in = await store.regenerate(await store.load(sid), {"cart": ["a", "b"]}, user="ann")
        assert logged_in is not None
        other = await store.create({"device": "phone"}, user="ann")
        assert sorted(await store.sessions_of("ann")) == sorted([logged_in.id, other])
        assert await store.revoke_user("ann", keep=logged_in.id) == 1
        reloaded = await store.load(logged_in.id)
        assert reloaded is not None and reloaded.attributes == {"cart": ["a", "b"]}
        await store.delete(logged_in.id, user="ann")
        assert await store.load(logged_in.id) is None
        assert await store.sessions_of("ann") == []
    finally:
        await store.close()
    assert acl_denials(shared_secure_topology) == {}


# --- secrets ---------------------------------------------------------------------------------


def test_keys_passwords_and_configs_are_readable_by_their_owner_only(
    shared_secure_topology: LocalTopology,
) -> None:
    run_dir = shared_secure_topology.run_dir
    private_files = [run_dir / "users.json", *(run_dir / "tls").glob("*.key")]
    node_dirs = [run_dir / node.name for node in all_nodes(shared_secure_topology)]
    private_dirs = [run_dir, run_dir / "tls", *node_dirs]

    assert len(private_files) == 4  # users.json, ca.key, server.key, client.key
    assert {stat.S_IMODE(p.stat().st_mode) for p in private_files} == {0o600}
    assert {stat.S_IMODE(d.stat().st_mode) for d in private_dirs} == {0o700}


def test_no_password_is_on_a_command_line_or_in_an_acl_file(
    shared_secure_topology: LocalTopology,
) -> None:
    credentials = shared_secure_topology.credentials
    assert credentials is not None
    passwords = list(credentials.passwords.values())
    command_lines = [
        Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace")
        for p in shared_secure_topology.processes
    ]
    acl_files = [
        (shared_secure_topology.run_dir / n.name / "users.acl").read_text()
        for n in all_nodes(shared_secure_topology)
    ]

    assert len(command_lines) == 6
    assert not [pw for pw in passwords for line in command_lines if pw in line]
    assert not [pw for pw in passwords for text in acl_files if pw in text]
    for user, password in credentials.passwords.items():
        if user != "replica":  # sentinels have no replica user
            assert all(hashlib.sha256(password.encode()).hexdigest() in t for t in acl_files)


# --- failover --------------------------------------------------------------------------------


async def test_through_a_killed_master_reads_go_to_replicas_and_writes_resume_without_denials(
    secure_topology: LocalTopology,
) -> None:
    observer = RecordingObserver()
    store = secure_store(
        secure_topology,
        observer,
        durability={"replicas": 1, "on_shortfall": "fail"},
        stale_reads_during_failover=True,
        stale_read_after_seconds=0.3,
    )
    try:
        sid = await store.create({"n": 0})
        await store.save(await store.load(sid), {"n": 1})
        await eventually(lambda: bool(observer.masters))
        old_master = secure_topology.master_address()

        secure_topology.kill("master")
        during = await store.load(sid)  # down-after is 2 s: inside the failover window
        new_master = secure_topology.wait_for_failover(old_master)
        await store.save(await store.load(sid), {"n": 2})
        await eventually(lambda: (new_master, True) in observer.masters)
        after = await store.load(sid)
    finally:
        await store.close()

    assert during is not None and during.stale and during.attributes == {"n": 1}
    assert observer.operations[("load_stale", "success")] == 1
    assert after is not None and not after.stale and after.attributes == {"n": 2}
    assert acl_denials(secure_topology) == {}


def test_a_restarted_old_master_rejoins_as_replica_through_sentinels_tls_links(
    secure_topology: LocalTopology,
) -> None:
    old = secure_topology.master_address()

    old_node = secure_topology.kill("master")
    new = secure_topology.wait_for_failover(old)
    secure_topology.restart(old_node)
    secure_topology.wait_for_replica(old_node, timeout=REJOIN_TIMEOUT)

    with secure_topology.client(old_node) as admin:
        role = admin.execute_command("ROLE")
    # On a loaded machine Sentinel may fail over once more meanwhile: the old master must
    # follow whichever node is master now.
    assert (role[0], role[3]) == ("slave", "connected")
    assert f"{role[1]}:{role[2]}" in {new, secure_topology.master_address()}
    assert acl_denials(secure_topology) == {}


async def test_sessions_written_by_scripts_survive_a_restart_of_every_node_from_its_aof(
    secure_topology: LocalTopology,
) -> None:
    # Redis 7.0 replays the AOF as the default user and re-checks its rights at each EXEC:
    # with a default user of no rights, every scripted write would vanish here.
    store = secure_store(secure_topology, durability={"replicas": 2})
    try:
        sids = [await store.create({"cart": [i]}, user="ann") for i in range(5)]
    finally:
        await store.close()
    await asyncio.sleep(AOF_FSYNC_SECONDS)
    master = secure_topology.node(secure_topology.master_address())

    for node in secure_topology.redis_nodes:
        secure_topology.kill(node)
    for node in sorted(secure_topology.redis_nodes, key=lambda n: n != master):
        secure_topology.restart(node)
    secure_topology.wait_for_health()

    store = secure_store(secure_topology)
    try:
        found = [await store.load(sid) for sid in sids]
        indexed = await store.sessions_of("ann")
    finally:
        await store.close()
    assert [s.attributes if s else None for s in found] == [{"cart": [i]} for i in range(5)]
    assert sorted(indexed) == sorted(sids)
