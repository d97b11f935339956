"""Runs the chart's pod scripts here, with the environment the rendered StatefulSet gives a
Redis pod; only what must differ outside a cluster (addresses, ports, directories) is swapped."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.helm.chart import CHART_DIR, SCRIPTS_DIR, Rendered, container, secret_values

# The users of deploy/redis/users.acl, each with a password in the pod's environment.
ACL_USERS = ("admin", "sessionlib", "replica", "sentinel", "exporter")
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def container_env(rendered: Rendered, name: str, pod_index: int) -> dict[str, str]:
    """The environment Kubernetes would give container `name` of Redis pod `pod_index`.

    Resolves what the kubelet resolves: the pod name (downward API), Secret keys (from the
    rendered Secret), and $(VAR) references to variables defined earlier in the list.
    """
    statefulset = rendered.redis
    secrets = {s["metadata"]["name"]: secret_values(s) for s in rendered.of_kind("Secret")}
    env: dict[str, str] = {}
    for entry in container(statefulset, name).get("env", []):
        if "value" in entry:
            value = _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), entry["value"])
        else:
            source = entry["valueFrom"]
            if "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] == "metadata.name"
                value = f"{statefulset['metadata']['name']}-{pod_index}"
            else:
                ref = source["secretKeyRef"]
                value = secrets[ref["name"]][ref["key"]]
        env[entry["name"]] = value
    return env


def mount_files(rendered: Rendered, directory: Path) -> Path:
    """Write the Redis pods' `files` volume under `directory`, as a pod sees /opt/sessionlib:
    the ConfigMap's keys at the paths the StatefulSet maps them to (scripts/cluster-start.sh)."""
    configmap = rendered.one("ConfigMap", "redis")
    pod = rendered.redis["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "files"]
    for item in volume["configMap"]["items"]:
        path = directory / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(configmap["data"][item["key"]])
    return directory


def configmap_file(rendered: Rendered, key: str, directory: Path) -> Path:
    """Write one key of the Redis pods' ConfigMap to `directory`, as the volume would."""
    configmap = rendered.one("ConfigMap", "redis")
    path = directory / key
    path.write_text(configmap["data"][key])
    return path


@dataclass(frozen=True)
class LocalAddresses:
    """Where a script's pod lives on 127.0.0.1 instead of in a cluster."""

    sentinels: list[str]
    redis_nodes: list[str]
    redis_port: int
    sentinel_port: int | None = None


def pod_env(
    rendered: Rendered,
    container_name: str,
    local: LocalAddresses,
    run_dir: Path,
    *,
    pod_index: int = 0,
    passwords: Mapping[str, str] | None = None,
    **overrides: str,
) -> dict[str, str]:
    """The chart's environment for the container, moved to 127.0.0.1 under `run_dir`.

    `passwords` ({ACL user: password}) replaces the chart's generated ones, which a local
    topology does not know; None means a topology without auth.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    env = container_env(rendered, container_name, pod_index)
    extra_key = "redis-extra.conf" if container_name == "redis" else "sentinel-extra.conf"
    env.update(
        {
            "PATH": os.environ["PATH"],
            "ANNOUNCE_HOST": "127.0.0.1",
            "LOCAL_HOST": "127.0.0.1",
            "BIND": "127.0.0.1",
            "SENTINELS": " ".join(local.sentinels),
            "REDIS_NODES": " ".join(local.redis_nodes),
            "REDIS_PORT": str(local.redis_port),
            "TEMPLATE_DIR": str(CHART_DIR / "files" / "redis"),
            "CONFIG_DIR": str(run_dir / "config"),
            "DATA_DIR": str(run_dir / "data"),
            "EXTRA_CONFIG_FILE": str(configmap_file(rendered, extra_key, run_dir)),
        }
    )
    for user in ACL_USERS:
        env[f"{user.upper()}_PASSWORD"] = (passwords or {}).get(user, "")
    if local.sentinel_port is not None:
        env["SENTINEL_PORT"] = str(local.sentinel_port)
    env.update(overrides)
    return env


def run_script(
    script: str,
    env: Mapping[str, str],
    *args: str,
    timeout: float = 60,
    scripts_dir: Path = SCRIPTS_DIR,
) -> subprocess.CompletedProcess[str]:
    """Run a pod script to completion under sh (dash here, as in the redis image)."""
    return subprocess.run(
        ["sh", str(scripts_dir / script), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def client(address: str, password: str | None = None, username: str | None = None) -> redis.Redis:
    host, _, port = address.rpartition(":")
    return redis.Redis(
        host=host,
        port=int(port),
        username=username,
        password=password or None,
        socket_timeout=2,
        socket_connect_timeout=2,
        decode_responses=True,
    )


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError as exc:
            last_error = exc
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:g}s (last error: {last_error})")


def role(address: str, password: str | None = None) -> list[object]:
    with client(address, password) as connection:
        reply: list[object] = connection.execute_command("ROLE")
        return reply
