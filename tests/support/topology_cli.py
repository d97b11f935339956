"""Running the local stack's command line as `make up-local` does, for tests.

One copy of the environment scrubbing and of the port flags, for every test that drives it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_topology_cli(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m deploy.local ARGS` from the repo root, without any
    SESSIONLIB_LOCAL_* settings of the developer's; `path` replaces PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONLIB_LOCAL_")}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "deploy.local", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stack_port_flags(ports: list[int]) -> list[str]:
    """`up` flags for 6 ports (Redis, Sentinel), 8 (+ gateway, cart) or 10 (+ Prometheus,
    redis_exporter). With fewer than 10, Prometheus and the exporter stay off: a running
    `make up-local` may hold their default ports."""
    if len(ports) not in (6, 8, 10):
        raise ValueError(f"give 6, 8 or 10 ports, not {len(ports)}")
    flags = [
        "--redis-ports",
        ",".join(map(str, ports[:3])),
        "--sentinel-ports",
        ",".join(map(str, ports[3:6])),
    ]
    return _with_services(flags, ports[6:])


def cluster_stack_port_flags(ports: list[int]) -> list[str]:
    """`up --mode cluster` flags for 12 ports (6 nodes, their 6 bus ports), 14 (+ gateway,
    cart) or 16 (+ Prometheus, redis_exporter). With fewer than 16, Prometheus and the exporter
    stay off, as in stack_port_flags."""
    if len(ports) not in (12, 14, 16):
        raise ValueError(f"give 12, 14 or 16 ports, not {len(ports)}")
    flags = [
        "--mode",
        "cluster",
        "--cluster-ports",
        ",".join(map(str, ports[:6])),
        "--cluster-bus-ports",
        ",".join(map(str, ports[6:12])),
    ]
    return _with_services(flags, ports[12:])


def _with_services(flags: list[str], ports: list[int]) -> list[str]:
    """`flags` plus the ports of gateway, cart, Prometheus and redis_exporter, as many as
    given; without the last two, Prometheus and the exporter stay off."""
    names = ["--gateway-port", "--cart-port", "--prometheus-port", "--redis-exporter-port"]
    for name, port in zip(names, ports, strict=False):
        flags += [name, str(port)]
    if len(ports) < len(names):
        flags.append("--no-observability")
    return flags
