"""`python -m bench [--quick] [--output PATH] [--run-dir DIR]`: every benchmark in one run
against processes it starts and stops itself; a Markdown table on stdout, figures in JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import failover, http_level, library_level, memory, near_cache, round_trips
from bench.app import CLUSTER, NEAR, SENTINEL, VARIANTS
from bench.machine import load_average, machine, versions
from bench.plan import FULL, QUICK, Plan
from bench.report import render
from bench.servers import (
    REPO,
    app_servers,
    fresh_redis,
    master_urls,
    redis_cluster,
    sentinel_topology,
)
from bench.wrk import wrk_binary, wrk_version

RESULTS = REPO / "bench" / "results" / "latest.json"
RUN_DIR = REPO / ".run" / "bench"
# The apps on the standalone redis-server whose commands per request are counted; with the
# near cache, a read answered from memory sends none.
REDIS_APPS = ("sessionlib", "starsessions", NEAR)


@contextmanager
def _section(record: dict[str, Any], name: str) -> Iterator[None]:
    """Times a part of the run and notes how busy the machine was when it began."""
    print(f"bench: {name} ...", flush=True)
    started, load = time.monotonic(), load_average()
    yield
    record["sections"][name] = {"seconds": time.monotonic() - started, "load_average": load}


def run(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """Every benchmark, in the order of the issue; returns the record latest.json holds."""
    wrk_binary()  # fail before starting anything when the load generator is missing
    started = time.monotonic()
    record: dict[str, Any] = {
        "schema": 1,
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "plan": plan.to_json(),
        "machine": machine(),
        "load_average": {"start": load_average()},
        "sections": {},
    }
    with fresh_redis(run_dir) as redis_server:
        redis_pid = redis_server.pid
        if redis_pid is None:
            raise RuntimeError("redis-server started without a pid")
        with redis_server.client() as client:
            record["versions"] = versions(client.info("server")["redis_version"], wrk_version())
        with _section(record, "library"):
            record["library"] = asyncio.run(library_level.run(redis_server.url, redis_pid, plan))
        with _section(record, "near_cache"):
            record["near_cache"] = asyncio.run(near_cache.run(redis_server.url, plan))
        with (
            sentinel_topology(run_dir) as topology,
            redis_cluster(run_dir) as cluster,
        ):
            topologies = {SENTINEL: topology, CLUSTER: cluster}
            with app_servers(
                [*VARIANTS, *topologies], redis_server, run_dir, topologies
            ) as servers:
                cookies = {
                    app: http_level.login_cookies(servers[app], plan.http_connections)
                    for app in servers
                    if app != "none"
                }
                with _section(record, "round_trips"):
                    counted = {app: [redis_server.url] for app in REDIS_APPS}
                    counted[CLUSTER] = master_urls(cluster)
                    first = {app: cookies[app][0] for app in counted}
                    record["round_trips"] = round_trips.run(
                        counted, servers, first, plan.round_trip_requests
                    )
                with _section(record, "http"):
                    record["http"] = http_level.run(servers, cookies, plan, run_dir)
                    record["near_cache"]["http"] = near_cache.http_summary(record["http"], NEAR)
                with _section(record, "memory"):
                    record["memory"] = memory.run(redis_server.url, servers, plan.memory_sessions)
            with _section(record, "failover"):
                record["failover"] = asyncio.run(failover.run(plan, topology))
            with _section(record, "near_cache_failover"):
                killed = record["failover"]["rounds"][-1]["killed"]
                record["near_cache"]["failover_reads"] = asyncio.run(
                    near_cache.failover_reads(plan, topology, killed_before=killed)
                )
            with _section(record, "cluster_failover"):
                record["cluster_failover"] = asyncio.run(failover.run_cluster(plan, cluster))
    record["load_average"]["end"] = load_average()
    record["seconds"] = time.monotonic() - started
    return record


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of under a minute")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default {RESULTS}")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="state and logs")
    args = parser.parse_args(argv)
    # A stopped run (Ctrl-C, or SIGTERM from make or CI) unwinds, so every process it
    # started is stopped by the block that started it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING)
    # Not emptied first: each part clears its own files there (data, state, cookies).
    args.run_dir.mkdir(parents=True, exist_ok=True)
    record = run(QUICK if args.quick else FULL, args.run_dir)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(render(record))
    print(f"bench: figures written to {args.output}")


if __name__ == "__main__":
    main()
