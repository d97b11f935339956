"""Turns a run's record (what latest.json holds) into Markdown tables: median (25th-75th
percentile) of every figure, so the same text goes to the terminal and to the README.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

APPS = {
    "none": "(a) no sessions",
    "sessionlib": "(b) sessionlib",
    "starsessions": "(c) starsessions, Redis store",
    "starlette-cookie": "(d) Starlette signed cookie",
    "sessionlib-sentinel": "(e) sessionlib, Sentinel mode",
    "sessionlib-cluster": "(f) sessionlib, Cluster mode",
    "sessionlib-near": "(g) sessionlib, near cache",
}
LIMITS = {"redis-defaults": "Redis defaults", "shipped": "shipped redis.conf"}

Format = Callable[[float], str]


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _two(value: float) -> str:
    return f"{value:.2f}"


def _spread(figure: dict[str, float] | None, fmt: Format) -> str:
    if figure is None:
        return "-"
    median, low, high = (fmt(figure[key]) for key in ("median", "p25", "p75"))
    return median if low == high else f"{median} ({low}-{high})"


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    return [f"| {' | '.join(cells)} |" for cells in (header, align, *rows)]


def _measured(figures: dict[str, Any]) -> list[str]:
    """The cells every throughput comparison shows, in the order of `_MEASURED`."""
    return [
        _spread(figures["rate"], _count),
        _spread(figures["p50_ms"], _two),
        _spread(figures["p99_ms"], _two),
        _spread(figures["python_cpu_us"], _count),
        _spread(figures["redis_cpu_us"], _count),
        _spread(figures["ratio_to_reference"], _two),
    ]


_MEASURED = ["p50 ms", "p99 ms", "Python CPU us", "Redis CPU us"]


def _library(record: dict[str, Any]) -> list[str]:
    rows = []
    for operation, by_concurrency in record["library"].items():
        for concurrency, comparison in by_concurrency.items():
            for client, figures in comparison["variants"].items():
                rows.append(
                    [f"{operation}, concurrency {concurrency}", client, *_measured(figures)]
                )
    header = ["operation", "client", "ops/s", *_MEASURED, "ratio to redis-py"]
    return _table(header, rows, text_columns=2)


def _encryption_cost(record: dict[str, Any]) -> list[str]:
    """The ops/s of the store with encryption at rest over the plain store's, same rounds."""
    parts = [
        f"{operation} at concurrency {concurrency} {_spread(figures['ratio_to_sessionlib'], _two)}"
        for operation, by_concurrency in record["library"].items()
        for concurrency, comparison in by_concurrency.items()
        for figures in comparison["variants"].values()
        if "ratio_to_sessionlib" in figures
    ]
    if not parts:  # a record from before the encrypted variant was measured
        return []
    return [
        "",
        "Encryption at rest (AES-256-GCM per attribute), ops/s of sessionlib + encryption over "
        "sessionlib, round by round: " + "; ".join(parts) + ".",
    ]


def _http(record: dict[str, Any]) -> list[str]:
    rows = []
    for mix, comparison in record["http"].items():
        for app, figures in comparison["variants"].items():
            mix_label = f"{mix} ({comparison['write_percent']}% writes)"
            rows.append([mix_label, APPS[app], *_measured(figures)])
    header = ["mix", "app", "requests/s", *_MEASURED, "ratio to (b)"]
    return _table(header, rows, text_columns=2)


def _cluster_cost(record: dict[str, Any]) -> list[str]:
    """Requests/s of Cluster mode over Sentinel mode, same rounds."""
    parts = [
        f"{mix} {_spread(figures['ratio_to_sentinel'], _two)}"
        for mix, comparison in record["http"].items()
        for figures in comparison["variants"].values()
        if "ratio_to_sentinel" in figures
    ]
    if not parts:  # a record from before Cluster mode was measured
        return []
    return [
        "",
        "(b) runs on one redis-server; (e) on a master with two replicas and three sentinels; "
        "(f) on a cluster of three such shards (two replicas per master); Redis CPU sums "
        "every redis-server behind the app. Requests/s of (f) over (e), round by round: "
        + "; ".join(parts)
        + ".",
    ]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _load_at(record: dict[str, Any], section: str) -> str:
    """The 1-minute load average when a section began, as the note under its table."""
    found = record["sections"].get(section)
    return "unknown" if found is None else f"{found['load_average'][0]}"


def _near_cache_http(record: dict[str, Any]) -> list[str]:
    """Requests/s with the near cache over the signed cookie's, and the hit ratio."""
    http = record.get("near_cache", {}).get("http")
    if not http:  # a record from before the near cache was measured
        return []
    ratios = "; ".join(f"{mix} {_spread(f['ratio_to_cookie'], _two)}" for mix, f in http.items())
    hits = "; ".join(f"{mix} {_spread(f['hit_ratio'], _two)}" for mix, f in http.items())
    return [
        "",
        "(g) is (b) with session.near_cache on (its defaults), on the same redis-server. "
        f"Requests/s of (g) over (d), round by round: {ratios}. Hit ratio of (g), loads "
        f"answered from memory over loads (its sessionlib_near_cache_requests_total): {hits}.",
    ]


def _near_cache(record: dict[str, Any]) -> list[str]:
    near = record.get("near_cache")
    if near is None or "invalidation" not in near:
        return []
    invalidation, memory = near["invalidation"], near["memory"]
    after = invalidation["answered_after_logout"]
    rows = [
        [
            f"logout elsewhere to refused here, p50 / p99 / max ({invalidation['logouts']} "
            "logouts)",
            f"{_ms(invalidation['p50_ms'])} / {_ms(invalidation['p99_ms'])} / "
            f"{_ms(invalidation['max_ms'])} ms",
        ],
        [
            "loads still answered after the acknowledged logout",
            f"{after['total']} in all, at most {after['max']} per logout",
        ],
        [
            f"memory per cached session, cache's own account ({memory['sessions']} sessions)",
            f"{_count(memory['size_bytes_per_session'])} bytes",
        ],
        [
            "memory per cached session, tracemalloc",
            f"{_count(memory['traced_bytes_per_session'])} bytes",
        ],
        [
            "the session's payload in Redis (names and values)",
            f"{_count(memory['payload_bytes'])} bytes",
        ],
    ]
    return [
        "",
        "Near cache, library level on the standalone redis-server: another store deletes a "
        "session this store has cached; from its acknowledged delete, this store's load is "
        "polled (yielding once per poll) until it answers None. Load average "
        f"{_load_at(record, 'near_cache')} when this began.",
        "",
        *_table(["figure", "value"], rows),
        *_near_cache_failover(record),
    ]


def _near_cache_failover(record: dict[str, Any]) -> list[str]:
    reads = record["near_cache"].get("failover_reads")
    if reads is None:
        return []
    rows = []
    for store, figures in reads["stores"].items():
        outcomes = figures["outcomes"]
        latencies = [r["stores"][store] for r in reads["rounds"]]
        rows.append(
            [
                store,
                _count(figures["reads"]),
                _percent(figures["served_share"]),
                _percent(figures["served_in_time_share"]),
                _count(outcomes["stale"]),
                _count(outcomes["failed"] + outcomes["unfinished"] + outcomes["none"]),
                " / ".join(_ms(r["p50_ms"]) for r in latencies),
                " / ".join(_ms(r["p99_ms"]) for r in latencies),
            ]
        )
    header = [
        "store",
        "reads",
        "served",
        f"served within {reads['read_budget_seconds']:g} s",
        "of them stale",
        "not served",
        "p50 ms per kill",
        "p99 ms per kill",
    ]
    kills = len(reads["rounds"])
    return [
        "",
        f"Reads through a master SIGKILL, Sentinel mode: {reads['sessions']} sessions cached "
        "(or read) before the kill, read in turn every 10 ms (at most 64 at once) by a store "
        "with the near cache and one without, same settings otherwise, same kill; the reads "
        "started between the kill and the sentinels' agreement on a new master "
        f"({_spread(reads['agreed_seconds'], _two)} s, {kills} kill{'s' if kills != 1 else ''}) "
        "count. Served: answered with the session, stale flagged ones included. Load average "
        f"{_load_at(record, 'near_cache_failover')} when this began.",
        "",
        *_table(header, rows),
    ]


def _round_trips(record: dict[str, Any]) -> list[str]:
    rows = []
    for library, kinds in record["round_trips"].items():
        for kind, counts in kinds.items():
            by_command = ", ".join(f"{name} {n:g}" for name, n in counts["by_command"].items())
            by_command = by_command or "none"  # a read the near cache answered
            nodes = counts.get("nodes", 1)
            where = f" (summed over {nodes} masters)" if nodes > 1 else ""
            rows.append(
                [
                    f"{library}, {kind}{where}",
                    f"{counts['sent_per_request']:g}",
                    f"{counts['in_scripts_per_request']:g}",
                    f"{counts['commands_per_request']:g}",
                    by_command,
                ]
            )
    header = ["library, request", "sent by the app", "run inside Lua", "total", "by command"]
    return _table(header, rows, text_columns=1)


def _failover(failover: dict[str, Any]) -> list[str]:
    rows = []
    for client, figures in failover["clients"].items():
        first, steady = figures["outage_seconds"], figures["steady_outage_seconds"]
        rows.append(
            [
                client,
                _spread(first, _two),
                _spread(steady, _two),
                f"{_two(steady['min'])}-{_two(steady['max'])}" if steady else "-",
                f"{figures['calls_failed']} of {figures['calls_started']}",
                str(figures["never_recovered"]),
            ]
        )
    header = [
        "client",
        "kill to first success, s",
        "kill to all succeeding, s",
        "min-max",
        "failed calls",
        "not recovered",
    ]
    agreed = _spread(failover["agreed_seconds"], _two)
    ratio = _spread(failover["ratio_sessionlib_to_redis_py"], _two)
    kills = len(failover["rounds"])
    return [
        *_table(header, rows),
        "",
        f"{kills} kill{'s' if kills != 1 else ''}; the {failover['agreed_by']} agreed on the new "
        f"master after {agreed} s (polled every 0.1 s); sessionlib / redis-py per kill, until "
        f"all succeed: {ratio}. All succeeding: every call from then on succeeded, for "
        f"{failover['steady_seconds']:g} s at least and until the calls in flight ended.",
    ]


def _cluster_failover(record: dict[str, Any]) -> list[str]:
    if "cluster_failover" not in record:  # a record from before Cluster mode was measured
        return []
    return [
        "",
        "Failover, Cluster mode: SIGKILL of the master owning the sessions' slot, local Redis "
        "Cluster (cluster-node-timeout 1000 ms, two replicas per master), a session read or "
        "write (in turn) started every 10 ms by each client; redis-py is RedisCluster with "
        "its defaults:",
        "",
        *_failover(record["cluster_failover"]),
    ]


def _memory(record: dict[str, Any]) -> list[str]:
    memory = record["memory"]
    rows = []
    for layout, by_limits in memory["layouts"].items():
        for label, figures in by_limits.items():
            limits = memory["configurations"][label]
            rows.append(
                [
                    layout,
                    f"{LIMITS[label]} ({limits['hash-max-listpack-entries']} entries, "
                    f"{limits['hash-max-listpack-value']} bytes)",
                    figures["encoding"],
                    _spread(figures["payload_bytes"], _count),
                    _spread(figures["bytes_per_session"], _count),
                ]
            )
    header = ["layout", "hash-max-listpack limits", "encoding", "payload bytes", "MEMORY USAGE"]
    return _table(header, rows, text_columns=3)


def render(record: dict[str, Any]) -> str:
    machine, versions, load = record["machine"], record["versions"], record["load_average"]
    compared = ", ".join(
        f"{name} {versions[name] or 'not installed'}"
        for name in (
            "sessionlib",
            "redis",
            "hiredis",
            "redis-server",
            "starsessions",
            "starlette",
            "fastapi",
        )
    )
    lines = [
        f"`python -m bench` ({record['plan']['name']} run, {record['started']}, "
        f"{record['seconds'] / 60:.1f} min)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}; load average {load['start'][0]} at the start, "
        f"{load['end'][0]} at the end. Versions: {compared}; {versions['wrk']}.",
        "Each figure: median (25th-75th percentile) over the rounds; ratios are taken round "
        "by round, the variants of a round run back to back in alternating order. CPU columns: "
        "CPU time per operation of the Python process doing the work (the benchmark client, "
        "or the app server) and of redis-server; waiting for a busy core does not count.",
        "",
        "Library level, async, 1 KB session (10 attributes, one changed per save), "
        f"{record['plan']['library_seconds']:g} s per round:",
        "",
        *_library(record),
        *_encryption_cost(record),
        "",
        "HTTP level, FastAPI on uvicorn (one worker), wrk on loopback, "
        f"{record['plan']['http_connections']} connections, {record['plan']['http_seconds']} s "
        "per round:",
        "",
        *_http(record),
        *_cluster_cost(record),
        *_near_cache_http(record),
        "",
        "Redis commands per request (INFO commandstats deltas; MONITOR splits them; sessionlib "
        "sends one command per round trip on these paths, no pipeline):",
        "",
        *_round_trips(record),
        "",
        "Failover, Sentinel mode: SIGKILL of the master, local Sentinel topology (down-after "
        # Records from before the field was kept were all measured at 1000 ms.
        f"{record['failover'].get('down_after_ms', 1000)} ms), a session write started every "
        "10 ms by each client:",
        "",
        *_failover(record["failover"]),
        *_cluster_failover(record),
        "",
        "Memory per session, 10 attributes of 100 bytes (MEMORY USAGE):",
        "",
        *_memory(record),
        *_near_cache(record),
    ]
    return "\n".join(lines) + "\n"
