"""The certificates of the compose stack's TLS variant (`make up-ha TLS=1`): a private CA, one
certificate for every Redis node and Sentinel and one for their clients, written on the host.

    python -m deploy.compose.certificates DIRECTORY

DIRECTORY gets ca.crt, server.crt/.key and client.crt/.key (keys mode 0600) and is mounted
read-only into the containers (deploy/compose/tls.yml); the CA's key goes to DIRECTORY-ca/,
which no container sees. Existing files are kept: delete DIRECTORY to issue new ones.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from deploy.local.certificates import LOCAL_NAMES, Authority

# Every name a client may reach a node or sentinel by: the service names (bridge network, and
# the host through /etc/hosts) and loopback (host networking, where everything announces
# 127.0.0.1). Clients verify the name, so a missing one is a refused connection.
SERVICE_NAMES = (
    "redis-1",
    "redis-2",
    "redis-3",
    "sentinel-1",
    "sentinel-2",
    "sentinel-3",
)
FILES = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")


def issue(directory: Path) -> bool:
    """Write the CA and both certificates into `directory` unless all are there already;
    True when new ones were written."""
    if all((directory / name).is_file() for name in FILES):
        return False
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_dir = directory.with_name(f"{directory.name}-ca")
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    authority = Authority.create(ca_dir, name="sessionlib compose CA")
    names = (*SERVICE_NAMES, *LOCAL_NAMES)
    # The nodes' certificate serves both ways: to clients, and as a client to the master a
    # replica follows and to the other sentinels (tls-replication, mutual TLS).
    authority.issue(directory, "server", hostnames=names, client=None)
    authority.issue(directory, "client", hostnames=names, client=True)
    shutil.copyfile(authority.ca_file, directory / "ca.crt")
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m deploy.compose.certificates DIRECTORY", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    if issue(directory):
        print(f"certificates: wrote a new CA and certificates to {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
