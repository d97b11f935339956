"""`sessionlib doctor` as a user runs it: a process configured by environment variables,
against real topologies that are up, down and misconfigured; exit status and its lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.processes import find_free_ports
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
    status, lines = doctor(**secure_variables(shared_secure_topology))

    assert status == 0, "\n".join(lines)
    assert sum("ok    sentinel" in line and "over TLS" in line for line in lines) == 3
    assert any("over TLS (CA" in line and "as user 'sessionlib'" in line for line in lines)
    assert any("EVALSHA, WAIT allowed" in line for line in lines)


def test_a_ca_that_did_not_sign_the_servers_is_a_problem_naming_the_tls_variables(
    shared_secure_topology,
):
    client_certificate = shared_secure_topology.redis_settings()["tls"]["cert_file"]

    status, lines = doctor(**secure_variables(shared_secure_topology, ca_file=client_certificate))

    assert status == 1
    problems = failures(lines)
    assert sum("SESSIONLIB_REDIS__TLS__" in problem for problem in problems) == 3
    assert "no sentinel named a master" in problems[-1]
