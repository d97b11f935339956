"""Single containers of the project's images, through testcontainers, on the private engine:
the Redis entrypoint of docker-compose.ha.yml and the gateway image, each started alone,
waited for by its log, then asked from the host and through `exec`, and read in its logs.

The engine has no bridge, so containers use the host's network (no mapped ports: the
container listens on a free port of the host), and Ryuk stays off: the engine itself is
stopped, with every container in it, at the end of the module.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from deploy.compose.engine import PrivateDockerEngine
from deploy.images.standins import build_standins
from deploy.local.processes import find_free_ports
from deploy.local.standalone import StandaloneRedis
from tests.compose.stack import ACL_USERS, REPO

pytestmark = pytest.mark.compose_engine

REDIS_IMAGE = "redis:7.0.15-bookworm"
GATEWAY_IMAGE = "sessionlib-gateway:single-container-test"


@pytest.fixture(scope="module")
def engine(docker_engine: PrivateDockerEngine) -> Iterator[PrivateDockerEngine]:
    """The private engine as testcontainers' DOCKER_HOST, Ryuk off, stand-ins built."""
    build_standins(docker_engine.docker, docker_engine.env(), REPO / ".run" / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", docker_engine.host)
        patch.setenv("DOCKER_CONFIG", docker_engine.env()["DOCKER_CONFIG"])
        patch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
        patch.setattr(testcontainers_config, "ryuk_disabled", True)
        yield docker_engine


def host_container(image: str) -> DockerContainer:
    return DockerContainer(image).with_kwargs(network_mode="host")


def output(result: tuple[int, bytes] | object) -> tuple[int, str]:
    exit_code, raw = result  # type: ignore[misc]
    return int(exit_code), bytes(raw or b"").decode()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_redis_entrypoint_starts_a_node_with_acl_users_only(engine, tmp_path):
    port = find_free_ports(1)[0]
    passwords = {user: secrets.token_urlsafe(16) for user in ACL_USERS}
    container = (
        host_container(REDIS_IMAGE)
        .with_kwargs(
            network_mode="host", entrypoint=["sh", "/opt/sessionlib/compose/redis-entrypoint.sh"]
        )
        .with_command(["redis"])
        .with_volume_mapping(str(REPO / "deploy" / "redis"), "/opt/sessionlib/redis", "ro")
        .with_volume_mapping(str(REPO / "deploy" / "compose"), "/opt/sessionlib/compose", "ro")
        .waiting_for(LogMessageWaitStrategy("Ready to accept connections").with_startup_timeout(60))
    )
    for user, password in passwords.items():
        container.with_env(f"{user.upper()}_PASSWORD", password)
    for name, value in {
        "REDIS_PORT": str(port),
        "REDIS_BIND": "127.0.0.1",
        "REDIS_ANNOUNCE_HOST": "127.0.0.1",
        "REDIS_MIN_REPLICAS_TO_WRITE": "0",
    }.items():
        container.with_env(name, value)

    with container:
        as_app = output(
            container.exec(
                ["redis-cli", "-p", str(port), "--user", "sessionlib", "--pass",
                 passwords["sessionlib"], "--no-auth-warning", "ping"]
            )
        )  # fmt: skip
        as_default = output(container.exec(["redis-cli", "-p", str(port), "ping"]))
        doctor = _doctor_from_the_host(port, passwords["sessionlib"])
        stdout, stderr = container.get_logs()

    assert as_app == (0, "PONG\n")
    assert "NOAUTH" in as_default[1]
    assert doctor.returncode == 0, doctor.stdout
    assert "PING, EXISTS, HMGET, PTTL, EVALSHA, WAIT allowed" in doctor.stdout
    logs = (stdout + stderr).decode()
    assert not [user for user, password in passwords.items() if password in logs]


def _doctor_from_the_host(port: int, password: str) -> subprocess.CompletedProcess[str]:
    """`sessionlib doctor` as the services' user: users.acl grants what the store needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONLIB_")}
    env |= {
        "SESSIONLIB_REDIS__URL": f"redis://127.0.0.1:{port}/0",
        "SESSIONLIB_REDIS__USERNAME": "sessionlib",
        "SESSIONLIB_REDIS__PASSWORD": password,
    }
    return subprocess.run(
        [sys.executable, "-m", "sessionlib", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def gateway_image(engine: PrivateDockerEngine) -> str:
    """The gateway's stage of the services' own Dockerfile, unchanged, on the stand-in
    python:3.11-slim."""
    engine.docker(
        "build", "--network", "host",
        "-f", str(REPO / "services" / "Dockerfile"),
        "--target", "gateway",
        "-t", GATEWAY_IMAGE,
        str(REPO),
        timeout=900,
    )  # fmt: skip
    return GATEWAY_IMAGE


def test_the_gateway_image_serves_alone_and_its_doctor_passes(gateway_image, tmp_path: Path):
    port = find_free_ports(1)[0]
    with StandaloneRedis(tmp_path / "redis", find_free_ports(1)[0]) as redis_server:
        container = (
            host_container(gateway_image)
            .with_command(
                ["uvicorn", "services.gateway.app:app", "--host", "127.0.0.1", "--port", str(port)]
            )
            .with_env("SESSIONLIB_PROFILE", "dev")
            .with_env("SESSIONLIB_REDIS__URL", redis_server.url)
            .waiting_for(
                LogMessageWaitStrategy("Application startup complete").with_startup_timeout(60)
            )
        )
        with container:
            ready = status_of(f"http://127.0.0.1:{port}/readyz")
            doctor = output(container.exec(["sessionlib", "doctor"]))
            extras = output(
                container.exec(
                    ["python", "-c", "import fastapi, httpx, uvicorn, sessionlib.propagation"]
                )
            )
            redis_server.kill()
            ready_without_redis = status_of(f"http://127.0.0.1:{port}/readyz")
            stdout, stderr = container.get_logs()

    assert ready == 200
    assert doctor[0] == 0, doctor[1]
    assert doctor[1].splitlines()[-1] == "everything holds"
    assert extras[0] == 0, extras[1]
    assert ready_without_redis == 503
    assert f"Uvicorn running on http://127.0.0.1:{port}" in (stdout + stderr).decode()
