"""HTTP level: the same FastAPI app with no sessions, sessionlib, starsessions and Starlette's
signed cookie, loaded by wrk on loopback; each app's requests/s as a ratio to sessionlib's.
sessionlib in Cluster mode runs in the same rounds, also as a ratio to Sentinel mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from bench.app import CLUSTER, SENTINEL
from bench.plan import Plan
from bench.servers import AppServer
from bench.stats import Sample, Spread, compare
from bench.wrk import run_wrk

REFERENCE = "sessionlib"
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

    def load(variant: str, write_percent: int, seconds: int) -> Sample:
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
        for number in range(plan.http_rounds):
            shift = number % len(names)
            for variant in names[shift:] + names[:shift]:
                rounds[variant].append(load(variant, write_percent, plan.http_seconds))
        comparison = compare(rounds, REFERENCE)
        if CLUSTER in rounds and SENTINEL in rounds:
            per_round = zip(rounds[CLUSTER], rounds[SENTINEL], strict=True)
            cost = Spread.of([c.rate / s.rate for c, s in per_round]).to_json()
            comparison["variants"][CLUSTER]["ratio_to_sentinel"] = cost
        results[mix] = {"write_percent": write_percent, **comparison}
    return results
