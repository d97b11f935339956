"""Runs one sample service under uvicorn on 127.0.0.1, its settings read from an env file.

The local stack starts services through this, so the command line it records (and checks
before stopping a pid) stays the same whatever the settings are.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from deploy.local.credentials import write_private

SERVICE_APPS = {"gateway": "services.gateway.app:app", "cart": "services.cart.app:app"}


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines; blank lines and `#` comments are skipped, nothing is evaluated."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """`NAME=value` lines in a file of mode 0600: the values may hold Redis passwords."""
    write_private(path, "".join(f"{name}={value}\n" for name, value in values.items()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.serve")
    parser.add_argument("service", choices=sorted(SERVICE_APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--env-file", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.update(read_env_file(args.env_file))
    uvicorn.run(
        SERVICE_APPS[args.service],
        host="127.0.0.1",
        port=args.port,
        timeout_graceful_shutdown=2,
        log_level="info",
    )


if __name__ == "__main__":
    main()
