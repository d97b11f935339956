"""What the figures were measured on: the machine, how busy it was, and the version of
everything in the comparison, recorded next to the figures in latest.json.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "sessionlib",
    "redis",
    "hiredis",  # redis-py parses replies with it when installed: much faster on hashes
    "starsessions",
    "starlette",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
)
REPO = Path(__file__).resolve().parent.parent


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: over the core count, others were busy too."""
    return [round(value, 2) for value in os.getloadavg()]


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return 0.0


def _git(*args: str) -> str:
    git = shutil.which("git")
    if git is None:
        return ""
    done = subprocess.run([git, *args], cwd=REPO, capture_output=True, text=True, check=False)  # noqa: S603
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
    }


def versions(redis_server: str, wrk: str) -> dict[str, Any]:
    """Package versions, redis-server's (from INFO), wrk's, and the commit measured."""
    found: dict[str, Any] = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return {
        **found,
        "redis-server": redis_server,
        "wrk": wrk,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain")),
    }


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far (10 ms resolution)."""
    # Fields 14 and 15 of /proc/<pid>/stat; the command name before ")" may hold spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
