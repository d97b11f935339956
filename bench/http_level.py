"""HTTP level: the same FastAPI app with no sessions, sessionlib, starsessions and Starlette's
signed cookie, loaded by wrk on loopback; each app's requests/s as a ratio to sessionlib's.
sessionlib in Cluster mode runs in the same rounds, also as a ratio to Sentinel mode, and
sessionlib with the near cache as a ratio to the signed cookie, with its hit ratio per round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from bench.app import CLUSTER, NEAR, NEAR_CACHE_COUNTS, SENTINEL
from bench.plan import Plan
from bench.servers import AppServer
from bench.stats import Sample, Spread, compare
from bench.wrk import run_wrk

REFERENCE = "sessionlib"
COOKIE = "starlette-cookie"
# Percentage of requests that write (POST /write changes one attribute); the rest read.
MIXES = {"read-only": 0, "read-write": 50}


def login_cookies(server: AppServer, count: int) -> list[str]:
    """`count` fresh sessions of `server`, each as the `name=value` its cookie header carries."""
    cookies = []
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        for _ in range(count):
            client.cookies.clear()  # each login a new session, not the last one again
            response = client.post("/login")
            response.raise_for_status()
            set_cookie = response.headers.get("set-cookie")
            if set_cookie is None:
                raise RuntimeError(f"the {server.variant} app set no session cookie at /login")
            cookies.append(set_cookie.split(";", 1)[0])
    return cookies


def near_cache_counts(server: AppServer) -> dict[str, float]:
    """The near cache variant's loads so far by result (hit, miss, bypass, stale)."""
    response = httpx.get(f"{server.url}{NEAR_CACHE_COUNTS}", timeout=10.0)
    response.raise_for_status()
    counts: dict[str, float] = response.json()
    return counts


def _hit_ratio(before: dict[str, float], after: dict[str, float], served: int) -> dict[str, Any]:
    """One run's loads that the near cache answered, over all loads it was asked for."""
    delta = {result: after[result] - before[result] for result in after}
    lookups = sum(delta.values())
    return {
        "hit_ratio": delta["hit"] / lookups if lookups else 0.0,
        "lookups": lookups,
        "requests": served,
        "by_result": delta,
    }


def run(
    servers: dict[str, AppServer],
    cookies: dict[str, list[str]],
    plan: Plan,
    run_dir: Path,
) -> dict[str, Any]:
    """Every mix: a warm-up per app, then rounds in which each app runs once, in an order
    rotated from round to round. `cookies`: the sessions of each app that has them."""
    cookie_files: dict[str, Path | None] = {variant: None for variant in servers}
    for variant, lines in cookies.items():
        path = cookie_files[variant] = run_dir / f"cookies-{variant}.txt"
        path.write_text("\n".join(lines) + "\n")

    near_rounds: list[dict[str, Any]] = []

    def load(variant: str, write_percent: int, seconds: int) -> Sample:
        if variant == NEAR:
            before = near_cache_counts(servers[NEAR])
            sample = wrk(variant, write_percent, seconds)
            near_rounds.append(_hit_ratio(before, near_cache_counts(servers[NEAR]), sample.count))
            return sample
        return wrk(variant, write_percent, seconds)

    def wrk(variant: str, write_percent: int, seconds: int) -> Sample:
        return run_wrk(
            servers[variant].url,
            cookie_files[variant],
            write_percent,
            plan.http_connections,
            seconds,
            servers[variant].pid,
            servers[variant].redis_pids,
        )

    results: dict[str, Any] = {}
    names = list(servers)
    for mix, write_percent in MIXES.items():
        if plan.http_warm_up_seconds:
            for variant in names:
                load(variant, write_percent, plan.http_warm_up_seconds)
        rounds: dict[str, list[Sample]] = {variant: [] for variant in names}
        near_rounds.clear()  # the timed rounds only, not the warm-up
        for number in range(plan.http_rounds):
            shift = number % len(names)
            for variant in names[shift:] + names[:shift]:
                rounds[variant].append(load(variant, write_percent, plan.http_seconds))
        comparison = compare(rounds, REFERENCE)
        if CLUSTER in rounds and SENTINEL in rounds:
            per_round = zip(rounds[CLUSTER], rounds[SENTINEL], strict=True)
            cost = Spread.of([c.rate / s.rate for c, s in per_round]).to_json()
            comparison["variants"][CLUSTER]["ratio_to_sentinel"] = cost
        if NEAR in rounds and COOKIE in rounds:
            per_round = zip(rounds[NEAR], rounds[COOKIE], strict=True)
            near = comparison["variants"][NEAR]
            near["ratio_to_cookie"] = Spread.of([n.rate / c.rate for n, c in per_round]).to_json()
            near["hit_ratio"] = Spread.of([r["hit_ratio"] for r in near_rounds]).to_json()
            near["near_cache_rounds"] = list(near_rounds)
        results[mix] = {"write_percent": write_percent, **comparison}
    return results
