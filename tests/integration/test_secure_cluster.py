"""The secure local Redis Cluster (DESIGN §3a + §3b) against six real redis-server processes:
TLS only and mutual on every port, on the cluster bus and on replication links, the ACL users
of deploy/redis/users.acl, and sessionlib's Cluster mode working through them as it does in
Sentinel mode, a failover included; every mistake in its credentials is a refusal at once.

"No denial" is read from each node's ACL LOG, as in test_secure_topology.py."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.crc import key_slot

from deploy.local.certificates import Authority
from deploy.local.cluster import ClusterSpec, LocalCluster
from deploy.local.processes import find_free_ports
from deploy.local.spec import Node
from deploy.local.stack import settings_environment
from sessionlib.config import load_settings
from sessionlib.errors import SessionStoreRefused
from sessionlib.store import SessionStore
from tests.integration.test_doctor import doctor
from tests.integration.test_local_topology import live_processes_on
from tests.integration.test_secure_topology import REFUSED, stranger
from tests.support import acl
from tests.support.observers import RecordingObserver
from tests.support.topology_cli import cluster_stack_port_flags, run_topology_cli

pytestmark = pytest.mark.integration

# cluster-node-timeout 1000: a failover takes about 3 s, a rejoin as long; room for a loaded
# machine.
FAILOVER_TIMEOUT = 30.0
SOME_ID = "A" * 43

FreePorts = Callable[[int], list[int]]


def secure_spec(ports: list[int]) -> ClusterSpec:
    """Six node ports and six bus ports of the test's own, clear of `make up-local`'s."""
    return ClusterSpec(ports=tuple(ports[:6]), bus_ports=tuple(ports[6:12]), secure=True)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One secure cluster for the module: read and write through it, never break it."""
    run_dir = tmp_path_factory.mktemp("secure-cluster")
    with LocalCluster(run_dir, secure_spec(find_free_ports(12))) as cluster:
        yield cluster


@pytest.fixture
def secure_cluster(tmp_path: Path, free_ports: FreePorts) -> Iterator[LocalCluster]:
    """A fresh secure cluster for one test to break."""
    with LocalCluster(tmp_path / "secure-cluster", secure_spec(free_ports(12))) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("other-ca"), name="another CA")


def secure_store(
    cluster: LocalCluster,
    observer: RecordingObserver | None = None,
    *,
    deadline_seconds: float = 15.0,
    session: dict[str, Any] | None = None,
    **redis_settings: Any,
) -> SessionStore:
    """A store configured as the services are (`cluster.redis_settings()`: the `sessionlib`
    user over mutual TLS), with `redis_settings` on top (`tls` merged key by key) and
    `session` settings."""
    settings = cluster.redis_settings() | {"retry": {"deadline_seconds": deadline_seconds}}
    tls = settings["tls"] | redis_settings.pop("tls", {})
    settings |= redis_settings | {"tls": tls}
    resolved = load_settings("dev", redis=settings, session=session or {})
    return SessionStore.from_settings(resolved, observer=observer)


def denials(cluster: LocalCluster) -> dict[str, list[str]]:
    return acl.acl_denials(cluster, cluster.nodes)


def app_user_on_every_node(cluster: LocalCluster, name: str, *rules: str) -> str:
    """A user `name` with `rules` on every node (ACL SETUSER is not shared by a cluster);
    returns its password."""
    password = secrets.token_urlsafe(16)
    for node in cluster.nodes:
        with cluster.client(node) as admin:
            admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)
    return password


async def refusal(store: SessionStore, observer: RecordingObserver) -> str:
    """The refusal a load meets; a refusal is the same on every attempt, so never retried."""
    try:
        with pytest.raises(SessionStoreRefused) as refused:
            await store.load(SOME_ID)
    finally:
        await store.close()
    assert sum(observer.retries.values()) == 0, f"retried: {dict(observer.retries)}"
    return str(refused.value)


# --- TLS only, everywhere ----------------------------------------------------------------------


def test_every_node_speaks_tls_only_and_gossips_and_replicates_over_tls(
    shared_cluster: LocalCluster,
) -> None:
    settings = []
    for node in shared_cluster.nodes:
        with shared_cluster.client(node) as admin:
            settings.append(
                admin.config_get("port", "tls-port", "tls-cluster", "tls-replication")
                | admin.config_get("tls-auth-clients")
            )
        with stranger(node) as plain, pytest.raises(redis.ConnectionError):
            plain.ping()

    assert settings == [
        {
            "port": "0",
            "tls-port": str(node.port),
            "tls-cluster": "yes",
            "tls-replication": "yes",
            "tls-auth-clients": "yes",
        }
        for node in shared_cluster.nodes
    ]
    assert "[OK] All 16384 slots covered." in shared_cluster.check()


def test_each_replica_links_to_its_master_as_the_replica_user(
    shared_cluster: LocalCluster,
) -> None:
    masters = shared_cluster.nodes[: shared_cluster.spec.master_count]
    replica_links = []
    for master in masters:
        with shared_cluster.client(master) as admin:
            users = [c["user"] for c in admin.client_list()]
            role = admin.execute_command("ROLE")
        replica_links.append((users.count("replica"), len(role[2])))

    assert replica_links == [(1, 1)] * len(masters)


def test_secrets_are_private_and_no_password_is_on_a_command_line_or_in_an_acl_file(
    shared_cluster: LocalCluster,
) -> None:
    credentials = shared_cluster.credentials
    assert credentials is not None
    run_dir = shared_cluster.run_dir
    private_files = [
        run_dir / "users.json",
        *(run_dir / "tls").glob("*.key"),
        *(
            run_dir / node.name / name
            for node in shared_cluster.nodes
            for name in ("users.acl", "redis.conf")
        ),
    ]
    private_dirs = [run_dir, run_dir / "tls", *(run_dir / n.name for n in shared_cluster.nodes)]
    command_lines = [
        Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace")
        for p in shared_cluster.processes
    ]
    acl_files = [(run_dir / n.name / "users.acl").read_text() for n in shared_cluster.nodes]

    assert len(private_files) == 4 + 2 * 6  # users.json, 3 keys, each node's ACL and config
    assert {stat.S_IMODE(p.stat().st_mode) for p in private_files} == {0o600}
    assert {stat.S_IMODE(d.stat().st_mode) for d in private_dirs} == {0o700}
    assert len(command_lines) == 6
    passwords = list(credentials.passwords.values())
    assert not [pw for pw in passwords for text in command_lines + acl_files if pw in text]
    for password in passwords:
        assert all(hashlib.sha256(password.encode()).hexdigest() in t for t in acl_files)


# --- least privilege ---------------------------------------------------------------------------

APP_REFUSED_IN_CLUSTER = [
    ("CLUSTER", "FAILOVER"),
    ("CLUSTER", "RESET"),
    ("CLUSTER", "COUNTKEYSINSLOT", "0"),
    ("CLUSTER", "SETSLOT", "0", "STABLE"),
    ("CLUSTER", "ADDSLOTS", "0"),
    ("CLUSTER", "MEET", "127.0.0.1", "1"),
    ("CLUSTER", "GETKEYSINSLOT", "0", "10"),
    ("MIGRATE", "127.0.0.1", "1", "sessionlib:s:{x}", "0", "1000"),
    ("READWRITE",),
    ("FLUSHALL",),
    ("KEYS", "*"),
    ("CONFIG", "GET", "masterauth"),
    ("SCRIPT", "FLUSH"),
    ("HGETALL", "elsewhere:s:{x}"),
]


@pytest.mark.parametrize("command", APP_REFUSED_IN_CLUSTER, ids=" ".join)
def test_the_app_user_may_read_the_slot_map_but_not_run_the_cluster(
    shared_cluster: LocalCluster, command: tuple[str, ...]
) -> None:
    with redis.Redis(**_node_kwargs(shared_cluster, "sessionlib")) as app:
        with pytest.raises(redis.ResponseError, match=REFUSED):
            app.execute_command(*command)
        slots = app.execute_command("CLUSTER", "SLOTS")

    assert sum(last - first + 1 for first, last, *_ in slots) == 16384


def test_the_app_user_may_read_a_slots_replica_after_readonly(shared_cluster: LocalCluster) -> None:
    master, replica = (
        shared_cluster.nodes[0],
        shared_cluster.nodes[shared_cluster.spec.master_count],
    )
    first, last = shared_cluster.spec.slot_ranges()[0]
    key = next(
        key
        for key in (f"sessionlib:s:{{replica-read-{i}}}" for i in range(1000))
        if first <= key_slot(key.encode()) <= last
    )
    with shared_cluster.client(master) as admin:
        admin.hset(key, "_ver", "1")
        admin.execute_command("WAIT", "1", "5000")

    with redis.Redis(**_node_kwargs(shared_cluster, "sessionlib", replica)) as app:
        # MovedError ("<slot> <node>") on redis-py 6+, a plain ResponseError ("MOVED <slot>
        # <node>") from 5.2's standalone client: either way the replica redirects.
        with pytest.raises(redis.exceptions.ResponseError, match=r"^(MOVED )?\d+ 127\.0\.0\.1:"):
            app.hgetall(key)
        app.execute_command("READONLY")
        held = app.hgetall(key)
        app.execute_command("ASKING")  # allowed; it only marks the next command

    assert held == {b"_ver": b"1"}


def _node_kwargs(cluster: LocalCluster, user: str, node: Node | None = None) -> dict[str, Any]:
    node = node or cluster.nodes[0]
    login = cluster.login(user).client_kwargs(node)
    return {"host": node.host, "port": node.port, "socket_timeout": 5.0, **login}


async def test_every_store_operation_works_over_tls_with_the_app_users_rights_alone(
    shared_cluster: LocalCluster,
) -> None:
    acl.reset_acl_logs(shared_cluster, shared_cluster.nodes)
    store = secure_store(shared_cluster)
    try:
        await store.ping()
        sid = await store.create({"cart": ["a"]})
        loaded = await store.load(sid)
        assert loaded is not None
        await store.save(loaded, {"cart": ["a", "b"]})
        for master in shared_cluster.nodes[: shared_cluster.spec.master_count]:
            with shared_cluster.client(master) as admin:
                admin.script_flush()  # as after a restart: the next calls fall back to EVAL
        again = await store.load(sid)
        assert again is not None
        logged_in = await store.regenerate(again, {"cart": ["a", "b"]}, user="ann")
        assert logged_in is not None
        others = [await store.create({"device": n}, user="ann") for n in range(6)]
        found = await store.sessions_of("ann")
        revoked = await store.revoke_user("ann", keep=logged_in.id)
        reloaded = await store.load(logged_in.id)
        await store.delete(logged_in.id, user="ann")
        gone = await store.load(logged_in.id)
        left = await store.sessions_of("ann")
    finally:
        await store.close()

    assert sorted(found) == sorted([logged_in.id, *others])
    assert revoked == 6
    assert reloaded is not None and reloaded.attributes == {"cart": ["a", "b"]}
    assert reloaded.user == "ann"
    assert gone is None and left == []
    assert denials(shared_cluster) == {}


def test_sessionlib_doctor_passes_every_check_as_the_app_user_over_tls(
    shared_cluster: LocalCluster,
) -> None:
    credentials = shared_cluster.credentials
    assert credentials is not None

    status, lines = doctor(**settings_environment("redis", shared_cluster.redis_settings()))

    assert status == 0, "\n".join(lines)
    assert sum("over TLS as user 'sessionlib'" in line for line in lines) == 6
    assert [line for line in lines if line.lstrip().startswith(("WARN", "FAIL"))] == []
    assert not [line for line in lines if credentials.password("sessionlib") in line]


# --- refusals: at once, never retried as an outage ---------------------------------------------


async def test_a_wrong_password_is_refused_at_once_naming_the_user(
    shared_cluster: LocalCluster,
) -> None:
    observer = RecordingObserver()
    store = secure_store(shared_cluster, observer, password="not-" + secrets.token_urlsafe(8))

    message = await refusal(store, observer)

    assert "'sessionlib'" in message and "SESSIONLIB_REDIS__PASSWORD" in message


async def test_a_client_without_a_certificate_is_refused_at_once(
    shared_cluster: LocalCluster,
) -> None:
    observer = RecordingObserver()
    store = secure_store(shared_cluster, observer, tls={"cert_file": None, "key_file": None})

    assert "SESSIONLIB_REDIS__TLS__" in await refusal(store, observer)


async def test_a_client_certificate_of_another_ca_is_refused_at_once(
    shared_cluster: LocalCluster, other_ca: Authority, tmp_path: Path
) -> None:
    foreign = other_ca.issue(tmp_path, "client", client=True)
    observer = RecordingObserver()
    store = secure_store(
        shared_cluster,
        observer,
        tls={"cert_file": str(foreign.cert_file), "key_file": str(foreign.key_file)},
    )

    assert "SESSIONLIB_REDIS__TLS__" in await refusal(store, observer)


async def test_trusting_another_ca_refuses_the_nodes_certificates_at_once(
    shared_cluster: LocalCluster, other_ca: Authority
) -> None:
    observer = RecordingObserver()
    store = secure_store(shared_cluster, observer, tls={"ca_file": str(other_ca.ca_file)})

    assert "certificate" in await refusal(store, observer)


async def test_a_plaintext_client_is_told_to_turn_tls_on(shared_cluster: LocalCluster) -> None:
    observer = RecordingObserver()
    store = secure_store(shared_cluster, observer, tls={"enabled": False})

    message = await refusal(store, observer)

    assert "speaks TLS" in message and "SESSIONLIB_REDIS__TLS__ENABLED" in message


async def test_a_user_without_a_command_the_store_sends_is_refused_at_once_naming_it(
    shared_cluster: LocalCluster,
) -> None:
    rules = ["~sessionlib:*", "+@all", "-evalsha", "-eval"]
    password = app_user_on_every_node(shared_cluster, "no-scripts", *rules)
    observer = RecordingObserver()
    store = secure_store(shared_cluster, observer, username="no-scripts", password=password)

    message = await refusal(store, observer)

    assert "'no-scripts'" in message and "evalsha" in message


async def test_a_user_who_may_not_read_the_slot_map_is_refused_at_once_naming_it(
    shared_cluster: LocalCluster,
) -> None:
    rules = ["~sessionlib:*", "+@all", "-cluster|slots"]
    password = app_user_on_every_node(shared_cluster, "no-slot-map", *rules)
    observer = RecordingObserver()
    store = secure_store(shared_cluster, observer, username="no-slot-map", password=password)

    message = await refusal(store, observer)

    assert "'no-slot-map'" in message and "cluster|slots" in message


async def test_a_stale_read_reaches_the_slots_replica_over_tls_on_a_fresh_cluster(
    secure_cluster: LocalCluster,
) -> None:
    """Before gossip names any replica in CLUSTER SLOTS, the replicas are found through
    CLUSTER SHARDS, on their TLS ports, with the app user's rights."""
    store = secure_store(secure_cluster, session={"stale_reads_during_failover": True})
    try:
        assert await store.load(SOME_ID) is None  # the slot map is loaded
        assert store.replicas is not None
        copies = await store.replicas.read_hash(store.session_key(SOME_ID))
    finally:
        await store.close()

    assert copies == [{}], "the slot's one replica answered over TLS"
    assert denials(secure_cluster) == {}


# --- failover ----------------------------------------------------------------------------------


async def test_killing_the_master_of_a_sessions_slot_keeps_the_session_and_needs_no_new_right(
    secure_cluster: LocalCluster,
) -> None:
    store = secure_store(secure_cluster, deadline_seconds=FAILOVER_TIMEOUT)
    try:
        sid = await store.create({"cart": ["sku-1"]}, user="ann")
        key = store.session_key(sid)
        old = secure_cluster.master_of(key)
        with secure_cluster.client(old) as admin:
            assert admin.execute_command("WAIT", "1", "5000") == 1  # its replica has it

        secure_cluster.kill(old)
        during = await store.load(sid)  # retried until the replica is promoted
        new = await asyncio.to_thread(secure_cluster.wait_for_failover, old, FAILOVER_TIMEOUT)
        # min-replicas-to-write 1: the new master takes writes once the old one follows it.
        await asyncio.to_thread(secure_cluster.restart, old)
        await asyncio.to_thread(secure_cluster.wait_for_replica, old, FAILOVER_TIMEOUT)
        assert during is not None
        saved = await store.save(during, {"cart": ["sku-1", "sku-2"]})
        after = await store.load(sid)
        indexed = await store.sessions_of("ann")
    finally:
        await store.close()

    assert during.attributes == {"cart": ["sku-1"]}
    assert saved.written
    assert after is not None and after.attributes == {"cart": ["sku-1", "sku-2"]}
    assert indexed == [sid]
    assert secure_cluster.master_of(key) == new != old
    assert denials(secure_cluster) == {}


# --- the command line: make up-local SECURE=1 MODE=cluster -------------------------------------


def test_cli_up_secure_in_cluster_mode_serves_a_login_over_tls_and_says_how_to_connect(
    tmp_path: Path, free_ports: FreePorts
) -> None:
    ports = free_ports(16)
    run_dir = tmp_path / "cli-secure-cluster"
    gateway = ports[12]
    try:
        up = run_topology_cli(
            "up", *cluster_stack_port_flags(ports), "--secure", "--run-dir", str(run_dir)
        )
        assert up.returncode == 0, up.stderr
        login = httpx.post(
            f"http://127.0.0.1:{gateway}/login",
            json={"username": "ann", "password": "demo"},
            timeout=15.0,
        )
        cart = httpx.post(
            f"http://127.0.0.1:{gateway}/cart/items",
            json={"sku": "sku-1", "qty": 2},
            headers={"X-Session-Id": login.headers.get("X-Session-Id", "")},
            timeout=15.0,
        )
        environment = (run_dir / "services.env").read_text()
        environment_mode = stat.S_IMODE((run_dir / "services.env").stat().st_mode)
        cluster = LocalCluster(run_dir)
        # What redis_exporter (when installed) reads of each node as the `exporter` user.
        scrapes = [
            httpx.get(
                f"http://{process.address}/scrape",
                params={"target": f"rediss://{node.address}"},
                timeout=15.0,
            ).text
            for process in cluster.processes
            if process.name == "redis_exporter"
            for node in cluster.nodes
        ]
        denied = denials(cluster)
        down = run_topology_cli("down", "--run-dir", str(run_dir))
    finally:
        LocalCluster(run_dir).down()

    assert "cluster_state:ok, 16384/16384 slots ok" in up.stdout
    assert f"--user sessionlib --askpass -c -p {ports[0]}" in up.stdout
    assert login.status_code == 200, login.text
    assert cart.status_code == 201, cart.text
    assert "SESSIONLIB_REDIS__USERNAME=sessionlib" in environment
    assert environment_mode == 0o600
    assert all("redis_cluster_state 1" in scrape for scrape in scrapes)
    assert denied == {}
    assert down.returncode == 0
    assert live_processes_on(ports) == []
