"""Renders the shared templates in deploy/redis/ into the config of one local Redis or Sentinel.
Compose and Helm fill the same ${NAME} placeholders their own way; this is the local filler."""

from __future__ import annotations

from pathlib import Path
from string import Template

from deploy.local.spec import Node, TopologySpec

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "redis"


def quote(value: str) -> str:
    """A Redis config string literal, safe for spaces, quotes and backslashes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _render(template: str, values: dict[str, object]) -> str:
    # substitute() (not safe_substitute) so a placeholder nobody fills fails loudly here
    # instead of reaching Redis as a literal "${NAME}".
    text = (TEMPLATE_DIR / template).read_text()
    return Template(text).substitute({k: str(v) for k, v in values.items()})


def render_redis_conf(
    *,
    host: str,
    port: int,
    directory: Path,
    password: str | None,
    replica_of: tuple[str, int] | None,
    min_replicas_to_write: int,
    min_replicas_max_lag: int,
) -> str:
    """redis.conf for a node on `host:port` keeping its data in `directory`."""
    auth = f"requirepass {quote(password)}\nmasterauth {quote(password)}" if password else ""
    replication = f"replicaof {replica_of[0]} {replica_of[1]}" if replica_of else ""
    return _render(
        "redis.conf",
        {
            "BIND": host,
            "PORT": port,
            "PROTECTED_MODE": "yes",
            "ANNOUNCE_IP": host,
            "ANNOUNCE_PORT": port,
            "DIR": quote(str(directory)),
            "MIN_REPLICAS_TO_WRITE": min_replicas_to_write,
            "MIN_REPLICAS_MAX_LAG": min_replicas_max_lag,
            "REPLICATION_DIRECTIVES": replication,
            "AUTH_DIRECTIVES": auth,
        },
    )


def render_sentinel_conf(
    *,
    host: str,
    port: int,
    directory: Path,
    password: str | None,
    master_name: str,
    master: tuple[str, int],
    quorum: int,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> str:
    """sentinel.conf for a sentinel on `host:port` watching `master` under `master_name`."""
    auth = f"sentinel auth-pass {master_name} {quote(password)}" if password else ""
    return _render(
        "sentinel.conf",
        {
            "BIND": host,
            "PORT": port,
            "PROTECTED_MODE": "yes",
            "ANNOUNCE_IP": host,
            "ANNOUNCE_PORT": port,
            "RESOLVE_HOSTNAMES": "no",
            "ANNOUNCE_HOSTNAMES": "no",
            "DIR": quote(str(directory)),
            "MASTER_NAME": master_name,
            "MASTER_HOST": master[0],
            "MASTER_PORT": master[1],
            "QUORUM": quorum,
            "DOWN_AFTER_MS": down_after_ms,
            "FAILOVER_TIMEOUT_MS": failover_timeout_ms,
            "AUTH_DIRECTIVES": auth,
        },
    )


def _partition_directives(node: Node, spec: TopologySpec) -> str:
    """Extra lines when a node runs in a network namespace (see deploy/local/netns.py): every
    node sends from the address it binds, so partition rules can tell its traffic apart from
    clients' (Redis otherwise lets the kernel pick the source address); and protected mode,
    which refuses non-loopback peers without a password, is off: these addresses exist only
    on the test's own veth pair."""
    if not spec.netns:
        return ""
    return f"\n# network namespace topology\nbind-source-addr {node.host}\nprotected-mode no\n"


def write_redis_conf(
    directory: Path, node: Node, spec: TopologySpec, replica_of: tuple[str, int] | None
) -> Path:
    """Render the config of a topology's Redis node into `directory` (its data dir too)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "redis.conf"
    config.write_text(
        render_redis_conf(
            host=node.host,
            port=node.port,
            directory=directory,
            password=spec.password,
            replica_of=replica_of,
            min_replicas_to_write=spec.min_replicas_to_write,
            min_replicas_max_lag=spec.min_replicas_max_lag,
        )
        + _partition_directives(node, spec)
    )
    return config


def write_sentinel_conf(directory: Path, node: Node, spec: TopologySpec, master: Node) -> Path:
    """Render the config of a topology's sentinel watching `master` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.conf"
    config.write_text(
        render_sentinel_conf(
            host=node.host,
            port=node.port,
            directory=directory,
            password=spec.password,
            master_name=spec.master_name,
            master=(master.host, master.port),
            quorum=spec.quorum,
            down_after_ms=spec.down_after_ms,
            failover_timeout_ms=spec.failover_timeout_ms,
        )
        + _partition_directives(node, spec)
    )
    return config
