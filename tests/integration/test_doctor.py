"""`sessionlib doctor` as a user runs it: a process configured by environment variables,
against real topologies that are up, down and misconfigured; exit status and its lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.cluster import ClusterSpec, LocalCluster, cluster_nodes
from deploy.local.processes import find_free_ports
from deploy.local.spec import Node
from deploy.local.standalone import StandaloneRedis
from deploy.local.topology import LocalTopology

pytestmark = pytest.mark.integration


def doctor(**variables: str) -> tuple[int, list[str]]:
    """Run `python -m sessionlib doctor` with only these SESSIONLIB_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SESSIONLIB_")}
    env.update(variables)
    result = subprocess.run(
        [sys.executable, "-m", "sessionlib", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stderr == "", result.stderr
    return result.returncode, result.stdout.splitlines()


def sentinel_variables(topology: LocalTopology) -> dict[str, str]:
    return {
        "SESSIONLIB_REDIS__SENTINELS": json.dumps(
            [f"{host}:{port}" for host, port in topology.sentinel_addresses]
        ),
        "SESSIONLIB_REDIS__MASTER_NAME": topology.master_name,
    }


def failures(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip().startswith("FAIL")]


def test_a_healthy_topology_passes_every_check_and_exits_0(shared_topology):
    status, lines = doctor(
        **sentinel_variables(shared_topology), SESSIONLIB_SESSION__DURABILITY__REPLICAS="1"
    )

    assert status == 0, "\n".join(lines)
    assert lines[-1] == "everything holds"
    assert sum("ok    sentinel" in line for line in lines) == 3
    master = shared_topology.master_address()
    assert any(f"master {master}" in line and "ROLE master, 2 replicas" in line for line in lines)
    assert any("WAIT 1 500" in line for line in lines)
    assert any("EVALSHA, WAIT allowed" in line for line in lines)


def test_each_value_is_printed_with_its_source_and_secrets_are_not(redis_server, tmp_path):
    config = tmp_path / "sessionlib.yaml"
    config.write_text("session:\n  cookie_name: app_session\n")

    status, lines = doctor(
        SESSIONLIB_REDIS__URL=redis_server.url,
        SESSIONLIB_SESSION__SIGNING_KEYS='["do-not-print-me"]',
        SESSIONLIB_CONFIG_FILE=str(config),
    )

    assert status == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "do-not-print-me" not in text
    keys = _setting(lines, "session.signing_keys")
    assert keys == "[********]  [SESSIONLIB_SESSION__SIGNING_KEYS]"
    assert _setting(lines, "session.cookie_name") == f"app_session  [{config}]"
    assert _setting(lines, "redis.mode") == "standalone  [implied by redis.url]"
    assert _setting(lines, "session.cookie_same_site") == "lax  [profile dev]"
    assert _setting(lines, "session.max_attributes") == "256  [default]"


def _setting(lines: list[str], path: str) -> str:
    for line in lines:
        name, _, rest = line.strip().partition(" ")
        if name == path:
            return rest.strip()
    raise AssertionError(f"{path} not printed")


def test_a_wrong_password_is_one_line_naming_the_password_variable(tmp_path):
    port = find_free_ports(1)[0]
    with StandaloneRedis(tmp_path / "redis", port, password="right-password"):
        status, lines = doctor(
            SESSIONLIB_REDIS__URL=f"redis://127.0.0.1:{port}/0",
            SESSIONLIB_REDIS__PASSWORD="wrong-password",
        )

    assert status == 1
    [problem] = failures(lines)
    assert f"redis 127.0.0.1:{port} refused user 'default'" in problem
    assert "SESSIONLIB_REDIS__PASSWORD" in problem
    assert "wrong-password" not in "\n".join(lines)
    assert lines[-1] == "1 problem"


def test_a_command_the_acl_user_may_not_run_is_named(redis_server):
    with redis_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "app", "on", ">app-password", "~sessionlib:*", "+@all", "-wait"
        )

    status, lines = doctor(
        SESSIONLIB_REDIS__URL=redis_server.url,
        SESSIONLIB_REDIS__USERNAME="app",
        SESSIONLIB_REDIS__PASSWORD="app-password",
    )

    assert status == 1
    [problem] = failures(lines)
    assert "user 'app' may not run WAIT on sessionlib:doctor" in problem
    assert "ACL rules" in problem


def test_with_the_near_cache_on_a_user_who_may_not_track_keys_is_named(redis_server):
    with redis_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "app", "on", ">app-password", "~sessionlib:*", "+@all", "-client"
        )

    status, lines = doctor(
        SESSIONLIB_REDIS__URL=redis_server.url,
        SESSIONLIB_REDIS__USERNAME="app",
        SESSIONLIB_REDIS__PASSWORD="app-password",
        SESSIONLIB_SESSION__NEAR_CACHE__ENABLED="true",
    )

    assert status == 1
    assert any("user 'app' may not run CLIENT ID" in p for p in failures(lines))
    assert any("user 'app' may not run CLIENT TRACKING" in p for p in failures(lines))


def test_durability_without_a_replica_is_a_problem_naming_the_replicas_variable(redis_server):
    status, lines = doctor(
        SESSIONLIB_REDIS__URL=redis_server.url, SESSIONLIB_SESSION__DURABILITY__REPLICAS="1"
    )

    assert status == 1
    [problem] = failures(lines)
    assert "session.durability.replicas is 1" in problem
    assert "(0 replicas connected)" in problem
    assert "SESSIONLIB_SESSION__DURABILITY__REPLICAS" in problem


def test_a_sentinel_down_is_reported_and_the_master_still_checked(local_topology):
    sentinel = local_topology.kill("sentinel-1")

    status, lines = doctor(**sentinel_variables(local_topology))

    assert status == 1
    [problem] = failures(lines)
    assert f"sentinel {sentinel.host}:{sentinel.port}: unreachable" in problem
    assert "SESSIONLIB_REDIS__SENTINELS" in problem
    assert sum("ok    sentinel" in line for line in lines) == 2
    assert any("ROLE master, 2 replicas" in line for line in lines)


def test_a_topology_that_is_down_fails_every_sentinel_and_names_the_variables():
    ports = find_free_ports(2)
    status, lines = doctor(
        SESSIONLIB_REDIS__SENTINELS=json.dumps([f"127.0.0.1:{port}" for port in ports])
    )

    assert status == 1
    problems = failures(lines)
    assert len(problems) == 3
    assert all("SESSIONLIB_REDIS__SENTINELS" in problem for problem in problems)
    assert "no sentinel named a master for 'mymaster'" in problems[-1]


def test_a_misspelt_variable_is_a_problem_with_the_right_name(tmp_path: Path):
    status, lines = doctor(SESSIONLIB_REDIS_URL="redis://127.0.0.1:6379/0")

    assert status == 1
    [problem] = failures(lines)
    assert "did you mean SESSIONLIB_REDIS__URL?" in problem


def test_a_variable_that_sets_nothing_is_a_warning_not_a_problem(redis_server):
    status, lines = doctor(SESSIONLIB_REDIS__URL=redis_server.url, SESSIONLIB_TRACING="on")

    assert status == 0
    assert "WARN  SESSIONLIB_TRACING matches no sessionlib setting and is ignored" in [
        line.strip() for line in lines
    ]


def secure_variables(topology: LocalTopology, **tls_changes: str) -> dict[str, str]:
    """The environment a service of the secure topology gets (DESIGN §3b)."""
    redis = topology.redis_settings()
    tls = {**redis["tls"], **tls_changes}
    return {
        **sentinel_variables(topology),
        "SESSIONLIB_REDIS__USERNAME": redis["username"],
        "SESSIONLIB_REDIS__PASSWORD": redis["password"],
        "SESSIONLIB_REDIS__SENTINEL_USERNAME": redis["sentinel_username"],
        "SESSIONLIB_REDIS__SENTINEL_PASSWORD": redis["sentinel_password"],
        **{f"SESSIONLIB_REDIS__TLS__{key.upper()}": str(value) for key, value in tls.items()},
    }


def test_tls_and_the_acl_user_of_the_secure_topology_pass(shared_secure_topology):
    # With the near cache on: the ACL user of deploy/redis/users.acl may track keys too.
    status, lines = doctor(
        **secure_variables(shared_secure_topology), SESSIONLIB_SESSION__NEAR_CACHE__ENABLED="true"
    )

    assert status == 0, "\n".join(lines)
    assert sum("ok    sentinel" in line and "over TLS" in line for line in lines) == 3
    assert any("over TLS (CA" in line and "as user 'sessionlib'" in line for line in lines)
    assert any("EVALSHA, WAIT, CLIENT ID, CLIENT TRACKING allowed" in line for line in lines)


def test_a_ca_that_did_not_sign_the_servers_is_a_problem_naming_the_tls_variables(
    shared_secure_topology,
):
    client_certificate = shared_secure_topology.redis_settings()["tls"]["cert_file"]

    status, lines = doctor(**secure_variables(shared_secure_topology, ca_file=client_certificate))

    assert status == 1
    problems = failures(lines)
    assert sum("SESSIONLIB_REDIS__TLS__" in problem for problem in problems) == 3
    assert "no sentinel named a master" in problems[-1]


# -- Cluster mode -----------------------------------------------------------------------

CLUSTER_PASSWORD = "cluster-password"
# A failure is flagged within a few cluster-node-timeouts (1 s); a loaded machine is slower.
SETTLE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One healthy password-protected cluster for the tests that do not break it."""
    ports = find_free_ports(12)
    spec = ClusterSpec(
        ports=tuple(ports[:6]), bus_ports=tuple(ports[6:]), password=CLUSTER_PASSWORD
    )
    with LocalCluster(tmp_path_factory.mktemp("doctor-cluster"), spec) as running:
        yield running


def cluster_variables(cluster: LocalCluster, **more: str) -> dict[str, str]:
    return {
        "SESSIONLIB_REDIS__MODE": "cluster",
        "SESSIONLIB_REDIS__CLUSTER_NODES": json.dumps(cluster.startup_nodes),
        **more,
    }


def wait_until_every_live_node_flags_it_failed(cluster: LocalCluster, dead: Node) -> None:
    """Until each node but `dead` flags it `fail` (gossip takes a few node timeouts)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        views = []
        for node in cluster.nodes:
            if node != dead:
                with cluster.client(node) as client:
                    views += [v.flags for v in cluster_nodes(client) if v.address == dead.address]
        if views and all("fail" in flags for flags in views):
            return
        assert time.monotonic() < deadline, f"{dead.address} not flagged fail by all: {views}"
        time.sleep(0.2)


def test_a_healthy_cluster_passes_every_check_and_exits_0(shared_cluster):
    status, lines = doctor(
        **cluster_variables(
            shared_cluster,
            SESSIONLIB_REDIS__PASSWORD=CLUSTER_PASSWORD,
            SESSIONLIB_SESSION__DURABILITY__REPLICAS="1",
        )
    )

    assert status == 0, "\n".join(lines)
    assert lines[-1] == "everything holds"
    assert sum("WAIT 1 500 on master" in line for line in lines) == 3
    assert sum("ok    cluster node" in line for line in lines) == 6
    assert any(
        "all 6 nodes that answered agree on the slot map: 3 masters" in line for line in lines
    )
    assert any("cluster_state:ok on all 6 nodes" in line for line in lines)
    assert any("16384/16384 slots served by 3 masters" in line for line in lines)
    assert sum("1 replica(s) up" in line and "1 linked" in line for line in lines) == 3
    assert (
        sum("CLUSTER SLOTS, COMMAND," in line and "EVALSHA, WAIT allowed" in line for line in lines)
        == 3
    )
    assert sum("SCRIPT LOAD of 6 scripts" in line for line in lines) == 3


def test_a_wrong_cluster_password_is_a_refusal_on_every_node_not_an_outage(shared_cluster):
    status, lines = doctor(
        **cluster_variables(shared_cluster, SESSIONLIB_REDIS__PASSWORD="wrong-password")
    )

    assert status == 1
    problems = failures(lines)
    refusals = [
        p for p in problems if "refused user 'default'" in p and "SESSIONLIB_REDIS__PASSWORD" in p
    ]
    assert len(refusals) == 6
    assert not any("unreachable" in problem for problem in problems)
    assert "no cluster node answered" in problems[-1]
    assert "wrong-password" not in "\n".join(lines)


def test_a_master_where_the_acl_user_may_not_load_scripts_is_named(shared_cluster):
    for node in shared_cluster.nodes:
        with shared_cluster.client(node) as admin:
            admin.execute_command(
                "ACL",
                "SETUSER",
                "no-scripts",
                "on",
                ">app-password",
                "~sessionlib:*",
                "+@all",
                "-script|load",
            )
    try:
        status, lines = doctor(
            **cluster_variables(
                shared_cluster,
                SESSIONLIB_REDIS__USERNAME="no-scripts",
                SESSIONLIB_REDIS__PASSWORD="app-password",
            )
        )
    finally:
        for node in shared_cluster.nodes:
            with shared_cluster.client(node) as admin:
                admin.execute_command("ACL", "DELUSER", "no-scripts")

    assert status == 1
    problems = failures(lines)
    assert len(problems) == 3, "\n".join(lines)
    assert all(
        "user 'no-scripts' may not run SCRIPT LOAD" in p and "ACL rules" in p for p in problems
    )


def test_one_startup_node_is_enough_to_find_and_check_every_node(shared_cluster):
    first, *others = shared_cluster.startup_nodes
    status, lines = doctor(
        SESSIONLIB_REDIS__MODE="cluster",
        SESSIONLIB_REDIS__CLUSTER_NODES=json.dumps([first]),
        SESSIONLIB_REDIS__PASSWORD=CLUSTER_PASSWORD,
    )

    assert status == 0, "\n".join(lines)
    found = [line for line in lines if "(not in redis.cluster_nodes)" in line]
    assert sorted(
        address for address in others if any(address in line for line in found)
    ) == sorted(others)
    assert sum("SCRIPT LOAD of 6 scripts" in line for line in lines) == 3


def test_a_user_who_may_not_read_cluster_nodes_is_checked_through_cluster_shards_with_a_warning(
    shared_cluster,
):
    for node in shared_cluster.nodes:
        with shared_cluster.client(node) as admin:
            admin.execute_command(
                "ACL",
                "SETUSER",
                "shards-only",
                "on",
                ">app-password",
                "~sessionlib:*",
                "+@all",
                "-cluster|info",
                "-cluster|nodes",
            )
    try:
        status, lines = doctor(
            **cluster_variables(
                shared_cluster,
                SESSIONLIB_REDIS__USERNAME="shards-only",
                SESSIONLIB_REDIS__PASSWORD="app-password",
            )
        )
    finally:
        for node in shared_cluster.nodes:
            with shared_cluster.client(node) as admin:
                admin.execute_command("ACL", "DELUSER", "shards-only")

    assert status == 0, "\n".join(lines)
    [warning] = [line.strip() for line in lines if line.strip().startswith("WARN")]
    assert "user 'shards-only' may not run CLUSTER INFO or CLUSTER NODES" in warning
    assert "+cluster|info +cluster|nodes" in warning
    assert any("16384/16384 slots served by 3 masters" in line for line in lines)
    assert sum("1 replica(s) up" in line for line in lines) == 3


def test_a_killed_master_that_no_replica_replaced_is_reported_with_its_slots(cluster):
    master, replica = cluster.master_of(0), cluster.nodes[3]
    with cluster.client(replica) as client:
        client.config_set("cluster-replica-no-failover", "yes")
    cluster.kill(master)
    wait_until_every_live_node_flags_it_failed(cluster, master)

    status, lines = doctor(**cluster_variables(cluster))

    assert status == 1
    problems = failures(lines)
    assert any(f"cluster node {master.address}: unreachable" in p for p in problems)
    [down] = [p for p in problems if p.startswith(f"FAIL  master {master.address}")]
    assert "(slots 0-5460) is flagged fail" in down
    assert "no replica has taken its slots over" in down
    assert replica.address in down


def test_a_shard_whose_replica_is_gone_is_reported_and_its_refused_writes_named(cluster):
    master, replica = cluster.master_of(0), cluster.nodes[3]
    cluster.kill(replica)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    with cluster.client(master) as client:
        while client.execute_command("ROLE")[2]:
            assert time.monotonic() < deadline, "the master still counts its killed replica"
            time.sleep(0.2)

    status, lines = doctor(**cluster_variables(cluster))

    assert status == 1
    problems = failures(lines)
    [shard] = [p for p in problems if p.startswith(f"FAIL  master {master.address}")]
    assert "has no working replica" in shard and "0 linked" in shard
    assert "refuses writes (NOREPLICAS" in shard
    assert any(f"cluster node {replica.address}: unreachable" in p for p in problems)


def test_slots_no_master_serves_and_a_slot_left_migrating_are_reported(cluster):
    for node in cluster.nodes:
        with cluster.client(node) as client:
            client.execute_command("CLUSTER", "DELSLOTSRANGE", 100, 199)
    source, target = cluster.master_of(6000), cluster.master_of(12000)
    with cluster.client(target) as client:
        target_id = client.execute_command("CLUSTER", "MYID")
    with cluster.client(source) as client:
        client.execute_command("CLUSTER", "SETSLOT", 6000, "MIGRATING", target_id)

    status, lines = doctor(**cluster_variables(cluster))

    assert status == 1
    problems = failures(lines)
    assert any("100 slots are served by no master (100-199)" in p for p in problems)
    assert any(
        f"{source.address}: slot 6000 left migrating to {target.address}" in p
        and "redis-cli --cluster fix" in p
        for p in problems
    )


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A healthy cluster in secure mode (DESIGN §3b): mutual TLS only, ACL users."""
    ports = find_free_ports(12)
    spec = ClusterSpec(ports=tuple(ports[:6]), bus_ports=tuple(ports[6:]), secure=True)
    with LocalCluster(tmp_path_factory.mktemp("doctor-secure-cluster"), spec) as running:
        yield running


def secure_cluster_variables(cluster: LocalCluster, **tls_changes: str) -> dict[str, str]:
    """The environment a service of the secure cluster gets."""
    redis = cluster.redis_settings()
    tls = {**redis["tls"], **tls_changes}
    return cluster_variables(
        cluster,
        SESSIONLIB_REDIS__USERNAME=redis["username"],
        SESSIONLIB_REDIS__PASSWORD=redis["password"],
        **{f"SESSIONLIB_REDIS__TLS__{key.upper()}": str(value) for key, value in tls.items()},
    )


def test_tls_and_the_acl_user_of_the_secure_cluster_pass(secure_cluster):
    status, lines = doctor(**secure_cluster_variables(secure_cluster))

    assert status == 0, "\n".join(lines)
    assert sum("over TLS as user 'sessionlib'" in line for line in lines) == 6
    assert sum("CLUSTER SLOTS, COMMAND," in line for line in lines) == 3
    assert sum("SCRIPT LOAD of 6 scripts" in line for line in lines) == 3


def test_a_ca_that_did_not_sign_the_cluster_nodes_is_a_refusal_naming_the_tls_variables(
    secure_cluster,
):
    client_certificate = secure_cluster.redis_settings()["tls"]["cert_file"]

    status, lines = doctor(**secure_cluster_variables(secure_cluster, ca_file=client_certificate))

    assert status == 1
    problems = failures(lines)
    refusals = [p for p in problems if "refused user 'sessionlib'" in p]
    assert len(refusals) == 6
    assert all("SESSIONLIB_REDIS__TLS__" in problem for problem in refusals)
    assert "no cluster node answered" in problems[-1]
