"""Renders the shared templates in deploy/redis/ into the config of one local Redis or Sentinel.
Compose and Helm fill the same ${NAME} placeholders their own way; this is the local filler."""

from __future__ import annotations

import hashlib
from pathlib import Path
from string import Template

from deploy.local.credentials import Credentials, TLSFiles, private_dir, write_private
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
    auth_directives: str | None = None,
) -> str:
    """redis.conf for a node on `host:port` keeping its data in `directory`;
    `auth_directives` replace the password lines (secure mode: ACL users)."""
    auth = f"requirepass {quote(password)}\nmasterauth {quote(password)}" if password else ""
    if auth_directives is not None:
        auth = auth_directives
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
    auth_directives: str | None = None,
) -> str:
    """sentinel.conf for a sentinel on `host:port` watching `master` under `master_name`;
    `auth_directives` replace the password line (secure mode: ACL users)."""
    auth = f"sentinel auth-pass {master_name} {quote(password)}" if password else ""
    if auth_directives is not None:
        auth = auth_directives
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


def render_acl(template: str, passwords: dict[str, str]) -> str:
    """An ACL file from a template in deploy/redis/: its comment and blank lines dropped
    (Redis reads neither in an ACL file), each `<USER>_PASSWORD_HASH` placeholder filled with
    the hex SHA-256 of that user's password, so the file holds no password."""
    hashes = {
        f"{user.upper()}_PASSWORD_HASH": hashlib.sha256(password.encode()).hexdigest()
        for user, password in passwords.items()
    }
    text = (TEMPLATE_DIR / template).read_text()
    rules = "".join(
        f"{line}\n" for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    return Template(rules).substitute(hashes)


def tls_directives(port: int, tls: TLSFiles) -> str:
    """What turns a rendered config into TLS only on `port`, appended after the template
    (the later `port 0` wins over its plain-text port), as the Helm chart's pod scripts do:
    mutual TLS for every client, and replication (for a sentinel: its links to the nodes and
    to the other sentinels) over TLS too, with the same certificate as a client one."""
    return (
        "\n# --- TLS (secure mode) ---\n"
        "port 0\n"
        f"tls-port {port}\n"
        f"tls-cert-file {quote(str(tls.cert_file))}\n"
        f"tls-key-file {quote(str(tls.key_file))}\n"
        f"tls-ca-cert-file {quote(str(tls.ca_file))}\n"
        "tls-auth-clients yes\n"
        "tls-replication yes\n"
    )


def _redis_acl_directives(directory: Path, credentials: Credentials) -> str:
    acl = write_private(directory / "users.acl", render_acl("users.acl", credentials.passwords))
    return (
        f"aclfile {quote(str(acl))}\n"
        "masteruser replica\n"
        f"masterauth {quote(credentials.password('replica'))}"
    )


def _sentinel_acl_directives(directory: Path, master_name: str, credentials: Credentials) -> str:
    acl = write_private(
        directory / "users.acl", render_acl("sentinel-users.acl", credentials.passwords)
    )
    # Generated passwords are URL-safe: Sentinel writes them back unquoted on a rewrite.
    password = credentials.password("sentinel")
    return (
        f"aclfile {quote(str(acl))}\n"
        f"sentinel auth-user {master_name} sentinel\n"
        f"sentinel auth-pass {master_name} {password}\n"
        "sentinel sentinel-user sentinel\n"
        f"sentinel sentinel-pass {password}"
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
    directory: Path,
    node: Node,
    spec: TopologySpec,
    replica_of: tuple[str, int] | None,
    credentials: Credentials | None = None,
) -> Path:
    """Render the config of a topology's Redis node into `directory` (its data dir too);
    with `credentials` (secure mode) TLS only and ACL users, in a folder of mode 0700."""
    directory.mkdir(parents=True, exist_ok=True)
    auth, tls = _secure_redis_directives(directory, node, credentials)
    text = (
        render_redis_conf(
            host=node.host,
            port=node.port,
            directory=directory,
            password=spec.password,
            replica_of=replica_of,
            min_replicas_to_write=spec.min_replicas_to_write,
            min_replicas_max_lag=spec.min_replicas_max_lag,
            auth_directives=auth,
        )
        + _partition_directives(node, spec)
        + tls
    )
    return _write_config(directory / "redis.conf", text, private=credentials is not None)


def write_cluster_node_conf(
    directory: Path,
    node: Node,
    *,
    bus_port: int,
    node_timeout_ms: int,
    password: str | None,
    min_replicas_to_write: int,
    min_replicas_max_lag: int,
    credentials: Credentials | None = None,
) -> Path:
    """Render the config of a Redis Cluster node (DESIGN §3a) into `directory` (its data dir
    too): the same template as a Sentinel topology's node, never a replicaof line (the cluster
    assigns roles), plus the cluster lines; with `credentials` (secure mode, §3b) the same ACL
    users and TLS lines as there, and the cluster bus over TLS too."""
    directory.mkdir(parents=True, exist_ok=True)
    auth, tls = _secure_redis_directives(directory, node, credentials)
    text = (
        render_redis_conf(
            host=node.host,
            port=node.port,
            directory=directory,
            password=password,
            replica_of=None,
            min_replicas_to_write=min_replicas_to_write,
            min_replicas_max_lag=min_replicas_max_lag,
            auth_directives=auth,
        )
        + cluster_directives(
            bus_port=bus_port, node_timeout_ms=node_timeout_ms, tls=credentials is not None
        )
        + tls
    )
    return _write_config(directory / "redis.conf", text, private=credentials is not None)


def _secure_redis_directives(
    directory: Path, node: Node, credentials: Credentials | None
) -> tuple[str | None, str]:
    """The ACL lines (written users.acl) and TLS lines of a secure Redis node, its folder
    made private; (None, "") for a plain one."""
    if credentials is None:
        return None, ""
    private_dir(directory)
    auth = _redis_acl_directives(directory, credentials)
    return auth, tls_directives(node.port, credentials.server_tls)


def write_sentinel_conf(
    directory: Path,
    node: Node,
    spec: TopologySpec,
    master: Node,
    credentials: Credentials | None = None,
) -> Path:
    """Render the config of a topology's sentinel watching `master` into `directory`; with
    `credentials` (secure mode) TLS only and ACL users, in a folder of mode 0700."""
    directory.mkdir(parents=True, exist_ok=True)
    auth, tls = None, ""
    if credentials is not None:
        private_dir(directory)
        auth = _sentinel_acl_directives(directory, spec.master_name, credentials)
        tls = tls_directives(node.port, credentials.server_tls)
    text = (
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
            auth_directives=auth,
        )
        + _partition_directives(node, spec)
        + tls
    )
    return _write_config(directory / "sentinel.conf", text, private=credentials is not None)


def _write_config(path: Path, text: str, *, private: bool) -> Path:
    # A secure node's config holds masterauth or sentinel auth-pass: mode 0600.
    if private:
        return write_private(path, text)
    path.write_text(text)
    return path


def cluster_directives(*, bus_port: int, node_timeout_ms: int, tls: bool = False) -> str:
    """What turns a rendered redis.conf into a Redis Cluster node (DESIGN §3a), appended after
    the template like the TLS lines: the node keeps its view of the cluster in nodes.conf
    beside its data, and gossips on `bus_port` (by default Redis would take port + 10000);
    with `tls` the gossip is over TLS, with the certificates of `tls_directives`."""
    lines = (
        "\n# --- Redis Cluster (cluster mode) ---\n"
        "cluster-enabled yes\n"
        "cluster-config-file nodes.conf\n"
        f"cluster-port {bus_port}\n"
        f"cluster-node-timeout {node_timeout_ms}\n"
        # A shard lost whole (master and replicas) takes only its own slots' sessions down:
        # with the default `yes` every node would refuse every key (CLUSTERDOWN) until it is
        # back. A minority partition still refuses writes (tests/chaos/test_cluster_*.py).
        "cluster-require-full-coverage no\n"
    )
    return lines + "tls-cluster yes\n" if tls else lines
