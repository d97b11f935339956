"""The shell scripts the chart runs in its Redis pods, executed here against real Redis and
Sentinel processes (the local topology) with the environment the rendered pod spec gives them."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from deploy.local.configs import render_redis_conf
from deploy.local.topology import LocalTopology
from tests.helm.chart import (
    CHART_DIR,
    CLUSTER_SCRIPTS_DIR,
    ROOT,
    SCRIPTS_DIR,
    Rendered,
    container,
    render,
)
from tests.helm.conftest import StartScript
from tests.helm.pod import (
    ACL_USERS,
    LocalAddresses,
    client,
    pod_env,
    role,
    run_script,
    wait_until,
)

pytestmark = pytest.mark.integration

FreePorts = Callable[[int], list[int]]


def addresses(topology: LocalTopology, redis_port: int, sentinel_port: int | None = None):
    return LocalAddresses(
        sentinels=[node.address for node in topology.sentinel_nodes],
        redis_nodes=[node.address for node in topology.redis_nodes],
        redis_port=redis_port,
        sentinel_port=sentinel_port,
    )


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def is_linked_replica_of(address: str, master: str, password: str | None = None) -> bool:
    reply = role(address, password)
    return reply[0] == "slave" and f"{reply[1]}:{reply[2]}" == master and reply[3] == "connected"


# --- the scripts as files ---------------------------------------------------------------------


@pytest.mark.parametrize("folder", [SCRIPTS_DIR, CLUSTER_SCRIPTS_DIR], ids=lambda p: p.name)
def test_scripts_are_posix_sh_without_shellcheck_findings(folder: Path) -> None:
    shellcheck = shutil.which("shellcheck") or str(ROOT / ".venv" / "bin" / "shellcheck")
    # Run in the scripts' own folder: their `shellcheck source=` paths are relative to it.
    extra = [str(ROOT / "helm" / "sync-shared-files.sh")] if folder == SCRIPTS_DIR else []
    result = subprocess.run(
        [
            shellcheck,
            "--shell=sh",
            "--external-sources",
            *sorted(p.name for p in folder.glob("*.sh")),
            *extra,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_a_script_requires_is_set_by_the_pod_spec(rendered: Rendered) -> None:
    set_by_chart = {
        entry["name"]
        for name in ("redis", "sentinel")
        for entry in container(rendered.redis, name)["env"]
    }
    required = {
        match
        for script in SCRIPTS_DIR.glob("*.sh")
        for match in re.findall(r"\$\{([A-Z_]+):\?", script.read_text())
    }
    assert required
    assert required <= set_by_chart, f"not set by the chart: {sorted(required - set_by_chart)}"


def test_the_pod_renderer_fills_the_shared_template_like_the_local_topology(
    tmp_path: Path,
) -> None:
    values = {
        "BIND": "127.0.0.1",
        "PORT": "6390",
        "PROTECTED_MODE": "yes",
        "ANNOUNCE_IP": "127.0.0.1",
        "ANNOUNCE_PORT": "6390",
        "DIR": f'"{tmp_path}"',
        "MIN_REPLICAS_TO_WRITE": "1",
        "MIN_REPLICAS_MAX_LAG": "10",
        "REPLICATION_DIRECTIVES": "replicaof 127.0.0.1 6391",
        "AUTH_DIRECTIVES": 'requirepass "pw"\nmasterauth "pw"',
    }
    result = run_script(
        "render-config.sh",
        {"PATH": "/usr/bin:/bin", **values},
        str(CHART_DIR / "files/redis/redis.conf"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == render_redis_conf(
        host="127.0.0.1",
        port=6390,
        directory=tmp_path,
        password="pw",
        replica_of=("127.0.0.1", 6391),
        min_replicas_to_write=1,
        min_replicas_max_lag=10,
    ).rstrip("\n")


def test_the_pod_renderer_refuses_a_placeholder_without_a_value() -> None:
    result = run_script(
        "render-config.sh", {"PATH": "/usr/bin:/bin"}, str(CHART_DIR / "files/redis/sentinel.conf")
    )
    assert result.returncode != 0
    assert "placeholder BIND has no value" in result.stderr


def test_a_password_that_sentinel_could_not_write_back_is_refused_by_name(
    rendered: Rendered, tmp_path: Path
) -> None:
    local = LocalAddresses(["127.0.0.1:1"], ["127.0.0.1:2"], redis_port=3)
    passwords = {user: "fine" for user in ACL_USERS} | {"replica": "has space"}
    env = pod_env(rendered, "redis", local, tmp_path, passwords=passwords)
    result = run_script("redis-start.sh", env)
    assert result.returncode != 0
    assert "REPLICA_PASSWORD must not contain white space" in result.stderr


def test_a_pod_with_some_acl_passwords_missing_refuses_to_start_by_name(
    rendered: Rendered, tmp_path: Path
) -> None:
    local = LocalAddresses(["127.0.0.1:1"], ["127.0.0.1:2"], redis_port=3)
    env = pod_env(rendered, "sentinel", local, tmp_path, passwords={"admin": "only-admin"})
    result = run_script("sentinel-start.sh", env)
    assert result.returncode != 0
    assert "SESSIONLIB_PASSWORD is empty while ADMIN_PASSWORD is set" in result.stderr


# --- finding the master -----------------------------------------------------------------------


def test_find_master_names_the_master_the_sentinels_agree_on(
    rendered: Rendered, shared_topology: LocalTopology, tmp_path: Path
) -> None:
    local = addresses(shared_topology, redis_port=1)
    result = run_script("find-master.sh", pod_env(rendered, "redis", local, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == shared_topology.master_address()


def test_find_master_names_the_node_running_as_master_when_no_sentinel_answers(
    rendered: Rendered, shared_topology: LocalTopology, free_ports: FreePorts, tmp_path: Path
) -> None:
    nobody = [f"127.0.0.1:{port}" for port in free_ports(3)]
    nodes = [node.address for node in shared_topology.redis_nodes]
    local = LocalAddresses(nobody, nodes, redis_port=1)
    result = run_script("find-master.sh", pod_env(rendered, "redis", local, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == shared_topology.master_address()
    assert "no sentinel answered" in result.stderr


def test_find_master_says_so_when_there_is_no_master_at_all(
    rendered: Rendered, free_ports: FreePorts, tmp_path: Path
) -> None:
    *sentinels, node = (f"127.0.0.1:{port}" for port in free_ports(4))
    local = LocalAddresses(sentinels, [node], redis_port=1)
    result = run_script("find-master.sh", pod_env(rendered, "redis", local, tmp_path))
    assert result.returncode == 1
    assert "no sentinel answers and no Redis node runs as master" in result.stderr


# --- starting Redis and Sentinel --------------------------------------------------------------


def test_a_starting_redis_pod_joins_the_current_master_as_its_replica(
    rendered: Rendered,
    local_topology: LocalTopology,
    start_script: StartScript,
    free_ports: FreePorts,
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    env = pod_env(rendered, "redis", addresses(local_topology, port), tmp_path / "pod")
    start_script("redis-start.sh", env, tmp_path / "redis.log")
    master = local_topology.master_address()

    wait_until(
        "the new node is a linked replica of the master",
        lambda: is_linked_replica_of(f"127.0.0.1:{port}", master),
    )
    config = (tmp_path / "pod" / "config" / "redis.conf").read_text()
    assert "${" not in config
    with client(f"127.0.0.1:{port}") as node:
        assert node.config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}
        # The chart's addition after the shared template (redis.maxmemory) is in force.
        assert node.config_get("maxmemory") == {"maxmemory": str(256 * 1024 * 1024)}


def test_a_starting_sentinel_monitors_the_master_and_finds_the_other_sentinels(
    rendered: Rendered,
    local_topology: LocalTopology,
    start_script: StartScript,
    free_ports: FreePorts,
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    master = local_topology.master_address()
    local = addresses(local_topology, port_of(master), sentinel_port=port)
    env = pod_env(rendered, "sentinel", local, tmp_path / "pod")
    start_script("sentinel-start.sh", env, tmp_path / "sentinel.log")

    address = f"127.0.0.1:{port}"
    wait_until(
        "the new sentinel names the master",
        lambda: _sentinel_master(address) == master,
    )
    wait_until(
        "the new sentinel has met the other three",
        lambda: len(_known_sentinels(address)) == 3,
        timeout=20,
    )
    assert run_script("probe.sh", env, "sentinel-ready").returncode == 0


def test_a_restarted_sentinel_keeps_its_id(
    rendered: Rendered,
    local_topology: LocalTopology,
    start_script: StartScript,
    free_ports: FreePorts,
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    local = addresses(local_topology, 1, sentinel_port=port)
    env = pod_env(rendered, "sentinel", local, tmp_path / "pod")
    address = f"127.0.0.1:{port}"
    first = start_script("sentinel-start.sh", env, tmp_path / "first.log")
    wait_until("the sentinel answers", lambda: bool(_sentinel_master(address)))
    with client(address) as sentinel:
        first_id = sentinel.execute_command("SENTINEL", "MYID")
    first.terminate()
    first.wait(timeout=10)

    start_script("sentinel-start.sh", env, tmp_path / "second.log")
    wait_until("the restarted sentinel answers", lambda: bool(_sentinel_master(address)))
    with client(address) as sentinel:
        assert sentinel.execute_command("SENTINEL", "MYID") == first_id


def _sentinel_master(address: str) -> str:
    with client(address) as sentinel:
        reply = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
    return f"{reply[0]}:{reply[1]}" if reply else ""


def _known_sentinels(address: str) -> list[object]:
    with client(address) as sentinel:
        others: list[object] = sentinel.execute_command("SENTINEL", "SENTINELS", "mymaster")
        return others


# --- handing over the master role (preStop) ---------------------------------------------------


def test_prestop_on_the_master_hands_its_role_to_a_replica_before_the_pod_stops(
    rendered: Rendered, local_topology: LocalTopology, tmp_path: Path
) -> None:
    old_master = local_topology.master_address()
    env = pod_env(rendered, "redis", addresses(local_topology, port_of(old_master)), tmp_path)

    started = time.monotonic()
    result = run_script("redis-prestop.sh", env)
    took = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    # When the hook returns, the old master already follows the new one...
    reply = role(old_master)
    assert reply[0] == "slave"
    new_master = f"{reply[1]}:{reply[2]}"
    assert new_master != old_master
    # ...which every sentinel names, well within the hook's deadline.
    assert local_topology.wait_for_failover(old_master, timeout=5) == new_master
    assert took < 15, result.stderr


def test_prestop_on_a_replica_changes_nothing(
    rendered: Rendered, shared_topology: LocalTopology, tmp_path: Path
) -> None:
    master = shared_topology.master_address()
    replica = next(n.address for n in shared_topology.redis_nodes if n.address != master)
    env = pod_env(rendered, "redis", addresses(shared_topology, port_of(replica)), tmp_path)

    result = run_script("redis-prestop.sh", env)

    assert result.returncode == 0, result.stderr
    assert "nothing to hand over" in result.stderr
    assert shared_topology.master_address() == master


# --- probes -----------------------------------------------------------------------------------


def test_probes_pass_on_a_healthy_pod_and_fail_when_sentinels_lose_their_majority(
    rendered: Rendered, local_topology: LocalTopology, tmp_path: Path
) -> None:
    master = local_topology.master_address()
    replica = next(n.address for n in local_topology.redis_nodes if n.address != master)
    sentinel = local_topology.sentinel_nodes[0]
    on_replica = pod_env(
        rendered,
        "sentinel",
        addresses(local_topology, port_of(replica), sentinel_port=sentinel.port),
        tmp_path,
    )
    for mode in ("redis-alive", "redis-ready", "sentinel-alive", "sentinel-ready"):
        result = run_script("probe.sh", on_replica, mode)
        assert result.returncode == 0, f"{mode}: {result.stderr}"

    for other in local_topology.sentinel_nodes[1:]:
        local_topology.kill(other)

    # Once the last sentinel sees the others down (down-after-milliseconds), it has no majority.
    wait_until(
        "sentinel-ready fails",
        lambda: run_script("probe.sh", on_replica, "sentinel-ready").returncode != 0,
        timeout=10,
    )
    assert "NOQUORUM" in run_script("probe.sh", on_replica, "sentinel-ready").stderr
    assert run_script("probe.sh", on_replica, "sentinel-alive").returncode == 0


def test_redis_probes_fail_when_nothing_answers(
    rendered: Rendered, free_ports: FreePorts, tmp_path: Path
) -> None:
    (closed,) = free_ports(1)
    env = pod_env(rendered, "redis", LocalAddresses([], ["127.0.0.1:1"], closed), tmp_path)
    for mode in ("redis-alive", "redis-ready"):
        assert run_script("probe.sh", env, mode).returncode != 0, mode


# --- TLS --------------------------------------------------------------------------------------


def test_with_tls_redis_and_sentinel_speak_only_tls_and_the_probes_still_work(
    start_script: StartScript,
    free_ports: FreePorts,
    certificates: dict[str, str],
    tmp_path: Path,
) -> None:
    rendered = render({"tls": {"enabled": True, "existingSecret": "shop-redis-tls"}})
    port, sentinel_port = free_ports(2)
    local = LocalAddresses(
        [f"127.0.0.1:{sentinel_port}"], [f"127.0.0.1:{port}"], port, sentinel_port
    )
    redis_env = pod_env(rendered, "redis", local, tmp_path / "redis", **certificates)
    sentinel_env = pod_env(rendered, "sentinel", local, tmp_path / "sentinel", **certificates)
    start_script("redis-start.sh", redis_env, tmp_path / "redis.log")
    wait_until(
        "Redis answers the probe over TLS",
        lambda: run_script("probe.sh", redis_env, "redis-ready").returncode == 0,
    )
    start_script("sentinel-start.sh", sentinel_env, tmp_path / "sentinel.log")

    wait_until(
        "Sentinel reaches the master over TLS",
        lambda: _tls_sentinel_master_flags(sentinel_port, certificates) == "master",
    )
    assert run_script("probe.sh", sentinel_env, "sentinel-alive").returncode == 0
    with pytest.raises(redis.ConnectionError):
        client(f"127.0.0.1:{port}").ping()


def _tls_sentinel_master_flags(port: int, certificates: dict[str, str]) -> str:
    with redis.Redis(
        port=port,
        ssl=True,
        ssl_ca_certs=certificates["TLS_CA_FILE"],
        ssl_check_hostname=False,
        socket_timeout=2,
        decode_responses=True,
    ) as sentinel:
        reply = sentinel.execute_command("SENTINEL", "MASTER", "mymaster")
    fields = dict(zip(reply[::2], reply[1::2], strict=True)) if isinstance(reply, list) else reply
    return str(fields["flags"])


# --- TLS and ACL users, against the secure local topology (DESIGN §3b) -----------------------

# Mutual TLS, as the secure topology demands of every client and peer.
SECURE_VALUES = {"tls": {"enabled": True, "existingSecret": "shop-redis-tls", "authClients": "yes"}}
# How Redis refuses a client that did not log in while the default user is off.
NOT_LOGGED_IN = r"NOAUTH|NOPERM|Authentication required"


def secure_pod_env(
    topology: LocalTopology, container_name: str, local: LocalAddresses, run_dir: Path
) -> dict[str, str]:
    """The chart's TLS + ACL environment with the topology's passwords and its server
    certificate (which names 127.0.0.1), as the pod's Secrets would provide them."""
    credentials = topology.credentials
    assert credentials is not None
    tls = credentials.server_tls
    return pod_env(
        render(SECURE_VALUES),
        container_name,
        local,
        run_dir,
        passwords=credentials.passwords,
        TLS_CERT_FILE=str(tls.cert_file),
        TLS_KEY_FILE=str(tls.key_file),
        TLS_CA_FILE=str(tls.ca_file),
    )


def secure_client(topology: LocalTopology, address: str, user: str | None = "admin") -> redis.Redis:
    """A mutual-TLS client of `address`, logged in as `user` (None: not logged in)."""
    credentials = topology.credentials
    assert credentials is not None
    tls = credentials.client_tls
    host, _, port = address.rpartition(":")
    return redis.Redis(
        host=host,
        port=int(port),
        username=user,
        password=credentials.password(user) if user else None,
        ssl=True,
        ssl_ca_certs=str(tls.ca_file),
        ssl_certfile=str(tls.cert_file),
        ssl_keyfile=str(tls.key_file),
        socket_timeout=2,
        socket_connect_timeout=2,
        decode_responses=True,
    )


def _secure_role(topology: LocalTopology, address: str) -> list[object]:
    with secure_client(topology, address) as node:
        reply: list[object] = node.execute_command("ROLE")
        return reply


def test_with_tls_and_acl_a_redis_pod_joins_as_the_replica_user_and_hands_over_on_prestop(
    secure_topology: LocalTopology,
    start_script: StartScript,
    free_ports: FreePorts,
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    old_master = secure_topology.master_address()
    joining = secure_pod_env(
        secure_topology, "redis", addresses(secure_topology, port), tmp_path / "new"
    )
    start_script("redis-start.sh", joining, tmp_path / "new.log")
    new_node = f"127.0.0.1:{port}"

    def linked() -> bool:
        reply = _secure_role(secure_topology, new_node)
        linked_to = f"{reply[1]}:{reply[2]}" if reply[0] == "slave" else ""
        return linked_to == old_master and reply[3] == "connected"

    wait_until("the new node logged in to the master as replica over TLS and linked", linked)
    leaving = secure_pod_env(
        secure_topology, "redis", addresses(secure_topology, port_of(old_master)), tmp_path / "old"
    )
    result = run_script("redis-prestop.sh", leaving)

    assert result.returncode == 0, result.stderr
    assert _secure_role(secure_topology, old_master)[0] == "slave"
    # The pod's node has the ACL users with default off, so a client that does not log in
    # can run nothing; its rendered files hold no password in the ACL and are private.
    with pytest.raises(redis.RedisError, match=NOT_LOGGED_IN):
        secure_client(secure_topology, new_node, user=None).ping()
    config_dir = tmp_path / "new" / "config"
    acl = (config_dir / "users.acl").read_text()
    assert "user default off" in acl
    credentials = secure_topology.credentials
    assert credentials is not None
    assert not [p for p in credentials.passwords.values() if p in acl]
    for name in ("redis.conf", "users.acl"):
        assert stat.S_IMODE((config_dir / name).stat().st_mode) == 0o600, name


def test_with_tls_and_acl_a_sentinel_pod_joins_as_the_sentinel_user_and_the_probes_pass(
    secure_topology: LocalTopology,
    start_script: StartScript,
    free_ports: FreePorts,
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    master = secure_topology.master_address()
    local = addresses(secure_topology, port_of(master), sentinel_port=port)
    env = secure_pod_env(secure_topology, "sentinel", local, tmp_path / "pod")
    start_script("sentinel-start.sh", env, tmp_path / "sentinel.log")
    address = f"127.0.0.1:{port}"

    def ask(*command: str) -> object:
        with secure_client(secure_topology, address) as sentinel:
            return sentinel.execute_command("SENTINEL", *command)

    def names_master() -> bool:
        reply = ask("GET-MASTER-ADDR-BY-NAME", "mymaster")
        return isinstance(reply, list) and f"{reply[0]}:{reply[1]}" == master

    wait_until("the new sentinel names the master", names_master)
    # Replicas are learnt from the master's INFO (auth-user sentinel), the other sentinels
    # from their hello messages and links (sentinel-user sentinel).
    wait_until("it logged in to the master", lambda: len(ask("REPLICAS", "mymaster")) == 2)
    wait_until("it met the other three", lambda: len(ask("SENTINELS", "mymaster")) == 3, 20)
    for mode in ("redis-alive", "redis-ready", "sentinel-alive", "sentinel-ready"):
        result = run_script("probe.sh", env, mode)
        assert result.returncode == 0, f"{mode}: {result.stderr}"
    assert stat.S_IMODE((tmp_path / "pod" / "config" / "sentinel.conf").stat().st_mode) == 0o600
