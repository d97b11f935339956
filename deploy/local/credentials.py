"""What the secure local topology (DESIGN §3b) is protected with: a private CA with one
certificate for the servers and one for their clients, and a generated password per ACL user.

Everything lives under the run directory, readable by its owner only, and never on a command
line: Redis and Sentinel read it from their config files, clients from `users.json`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from deploy.local.certificates import LOCAL_NAMES, Authority, CertificatePair
from deploy.local.errors import TopologyError

# The users of deploy/redis/users.acl and sentinel-users.acl; each has one password, the same
# on the Redis nodes and on the sentinels.
USERS = ("admin", "sessionlib", "replica", "sentinel", "exporter")
TLS_DIR = "tls"
PASSWORDS_FILE = "users.json"


@dataclass(frozen=True)
class TLSFiles:
    """What a TLS client needs under mutual TLS: the CA to trust and its own certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Credentials:
    """The CA, the two certificates and the passwords of one secure run directory.

    `server` is presented by every Redis node and sentinel, to clients and, as a client
    itself, to the master it replicates from and to the other sentinels (so it carries both
    usages); `client` is for everyone else: the tools, the services, redis_exporter.
    """

    ca_file: Path
    server: CertificatePair
    client: CertificatePair
    passwords: dict[str, str]

    @classmethod
    def create(cls, run_dir: Path, hostnames: tuple[str, ...] = ()) -> Credentials:
        """A new CA, certificates for `hostnames` (and localhost) and new passwords, written
        under `run_dir` in place of any earlier ones."""
        directory = private_dir(run_dir / TLS_DIR)
        names = tuple(dict.fromkeys((*LOCAL_NAMES, *hostnames)))
        authority = Authority.create(directory, name="sessionlib local CA")
        server = authority.issue(directory, "server", hostnames=names, client=None)
        client = authority.issue(directory, "client", hostnames=names, client=True)
        passwords = {user: secrets.token_urlsafe(24) for user in USERS}
        write_private(run_dir / PASSWORDS_FILE, json.dumps(passwords, indent=2) + "\n")
        return cls(authority.ca_file, server, client, passwords)

    @classmethod
    def load(cls, run_dir: Path) -> Credentials:
        """The credentials `create` wrote into `run_dir`."""
        directory = run_dir / TLS_DIR
        try:
            passwords = json.loads((run_dir / PASSWORDS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise TopologyError(
                f"the secure topology's passwords are unreadable ({exc}); start it again "
                "with `make up-local SECURE=1`"
            ) from exc
        missing = [user for user in USERS if user not in passwords]
        if missing:
            raise TopologyError(f"{run_dir / PASSWORDS_FILE} has no password for {missing}")
        return cls(
            directory / "ca.crt",
            CertificatePair(directory / "server.crt", directory / "server.key"),
            CertificatePair(directory / "client.crt", directory / "client.key"),
            passwords,
        )

    @property
    def client_tls(self) -> TLSFiles:
        return TLSFiles(self.ca_file, self.client.cert_file, self.client.key_file)

    @property
    def server_tls(self) -> TLSFiles:
        return TLSFiles(self.ca_file, self.server.cert_file, self.server.key_file)

    def password(self, user: str) -> str:
        return self.passwords[user]


def private_dir(directory: Path) -> Path:
    """`directory` (created when missing) with mode 0700. Redis rewrites its config with mode
    0644 (Sentinel has it run CONFIG REWRITE after a failover), so the folder is what keeps a
    node's `masterauth` private."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    return directory


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` with mode 0600, never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)
    return path
