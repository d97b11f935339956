"""Runs Debian's `wrk` (a load generator outside the server process) with `sessions.lua`
and reads the figures the script prints; any failed or non-2xx request is an error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.machine import process_cpu_seconds
from bench.stats import Sample

SCRIPT = Path(__file__).with_name("sessions.lua")
INSTALL_HINT = "install wrk (Debian: apt-get install wrk; `make bench` does it)"


class LoadGeneratorError(RuntimeError):
    pass


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise LoadGeneratorError(f"`wrk` was not found on PATH; {INSTALL_HINT}")
    return found


def wrk_version() -> str:
    """`wrk <version>` from the banner `wrk -v` prints (and exits 1, as for any bad call)."""
    done = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)  # noqa: S603
    return " ".join(done.stdout.split()[:2]) or "unknown"


def run_wrk(
    url: str,
    cookie_file: Path | None,
    write_percent: int,
    connections: int,
    seconds: int,
    app_pid: int,
    redis_pids: Sequence[int],
) -> Sample:
    """One wrk run (one thread) against `url`: requests/s, latency percentiles, and CPU per
    request of the app and of the redis-server processes behind it (summed)."""
    argv = [
        wrk_binary(),
        "--threads", "1",
        "--connections", str(connections),
        "--duration", f"{seconds}s",
        "--timeout", "5s",
        "--script", str(SCRIPT),
        url,
        "--", str(cookie_file or "-"), str(write_percent),
    ]  # fmt: skip

    def cpu_seconds() -> tuple[float, float]:
        return process_cpu_seconds(app_pid), sum(map(process_cpu_seconds, redis_pids))

    app_before, redis_before = cpu_seconds()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    app_after, redis_after = cpu_seconds()
    app_cpu, redis_cpu = app_after - app_before, redis_after - redis_before
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise LoadGeneratorError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    figures = json.loads(lines[-1])
    failed = {kind: count for kind, count in figures["errors"].items() if count}
    if failed:
        raise LoadGeneratorError(f"wrk saw failed requests against {url}: {failed}")
    latency, requests = figures["latency_us"], figures["requests"]
    return Sample(
        rate=requests / (figures["duration_us"] / 1e6),
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        python_cpu_us=app_cpu / requests * 1e6,
        redis_cpu_us=redis_cpu / requests * 1e6,
        count=requests,
    )
