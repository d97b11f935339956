"""Every dashboard panel and rule against a real Prometheus that watched the local stack take
traffic and a failover: each query parses, reads only exported metrics, and panels show data.
Cluster dashboards and rules are read against the stack in Cluster mode, the rest against the
stack in Sentinel mode."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar, cast

import pytest

from tests.observability.conftest import SCRAPE_INTERVAL, LiveSystem
from tests.observability.dashboards import (
    Dashboard,
    PanelQuery,
    Rule,
    all_panel_queries,
    dashboards,
    label_values_query,
    metric_names,
    rules,
    substitute,
)
from tests.observability.render import render_dashboard

pytestmark = pytest.mark.integration

# Where `make dashboard-png` wants the pictures; tests without them draw into a tmp dir.
PNG_ENV = "SESSIONLIB_DASHBOARD_PNG"
CLUSTER_PNG_ENV = "SESSIONLIB_CLUSTER_DASHBOARD_PNG"
# Which live system (a fixture of conftest.py) a dashboard or rule file is checked against:
# dashboards tagged "cluster" and the Cluster rules against the Cluster stack.
SENTINEL, CLUSTER = "live_system", "live_cluster_system"
CLUSTER_RULE_FILE = "redis-cluster.rules.yml"
T = TypeVar("T")


def system_of_dashboard(dashboard: Dashboard) -> str:
    return CLUSTER if "cluster" in dashboard.model.get("tags", []) else SENTINEL


def system_of_rule(rule: Rule) -> str:
    return CLUSTER if rule.file == CLUSTER_RULE_FILE else SENTINEL


def live(request: pytest.FixtureRequest, system: str) -> LiveSystem:
    """The module's live system named `system`, started on first use."""
    return cast(LiveSystem, request.getfixturevalue(system))


def by_system(items: list[T], system_of: Callable[[T], str]) -> list[T]:
    """`items` with the Sentinel system's first, so each system is started once, in turn."""
    return sorted(items, key=lambda item: system_of(item) == CLUSTER)


def grafana_variables(dashboard: Dashboard, live: LiveSystem) -> dict[str, str]:
    """The values Grafana would give the dashboard's variables over the test window: "All"
    for multi-value variables, else the first value the metric has; $__rate_interval as
    Grafana computes it for a one-scrape step (4 scrapes)."""
    values = {
        "__rate_interval": f"{4 * SCRAPE_INTERVAL:g}s",
        "__interval": f"{SCRAPE_INTERVAL:g}s",
        "__range": f"{math.ceil(live.window)}s",
    }
    for variable in dashboard.variables:
        if variable["type"] == "datasource":
            values[variable["name"]] = "prometheus"
            continue
        metric, label = label_values_query(variable)
        found = sorted(
            {
                s[label]
                for s in live.prometheus.series(metric, live.started, live.ended)
                if label in s
            }
        )
        assert found, f"{dashboard.title}: variable ${variable['name']} has no values"
        values[variable["name"]] = variable["allValue"] if variable["multi"] else found[0]
    return values


def unexported_metrics(live: LiveSystem, expr: str) -> list[str]:
    """The metrics `expr` reads that had no series while the system ran."""
    return [
        name
        for name in sorted(metric_names(expr))
        if not live.prometheus.series(name, live.started, live.ended)
    ]


def dashboard_of(query: PanelQuery) -> Dashboard:
    return next(d for d in dashboards() if d.title == query.dashboard)


@pytest.mark.parametrize(
    "query",
    by_system(list(all_panel_queries()), lambda q: system_of_dashboard(dashboard_of(q))),
    ids=str,
)
def test_every_dashboard_panel_query_shows_data_from_its_live_system(
    request: pytest.FixtureRequest, query: PanelQuery
) -> None:
    dashboard = dashboard_of(query)
    live_system = live(request, system_of_dashboard(dashboard))
    expr = substitute(query.expr, grafana_variables(dashboard, live_system))

    series = live_system.prometheus.query_range(
        expr, live_system.started, live_system.ended, SCRAPE_INTERVAL
    )

    assert unexported_metrics(live_system, expr) == []
    assert series, f"no series: {expr}"
    values = [value for s in series for _, value in s.points]
    assert any(math.isfinite(value) for value in values), f"only NaN/Inf: {expr}"


@pytest.mark.parametrize("rule", by_system(rules(), system_of_rule), ids=str)
def test_every_rule_expression_parses_and_reads_only_metrics_its_system_exports(
    request: pytest.FixtureRequest, rule: Rule
) -> None:
    live_system = live(request, system_of_rule(rule))

    live_system.prometheus.query(rule.expr, live_system.ended)  # raises on a parse error

    assert unexported_metrics(live_system, rule.expr) == []


@pytest.mark.parametrize("system", [SENTINEL, CLUSTER])
def test_prometheus_loaded_every_rule_and_evaluates_each_without_error(
    request: pytest.FixtureRequest, system: str
) -> None:
    loaded = live(request, system).prometheus.rules()

    assert {rule["name"] for rule in loaded} == {rule.name for rule in rules()}
    unhealthy = {rule["name"]: rule.get("lastError") for rule in loaded if rule["health"] != "ok"}
    assert unhealthy == {}


@pytest.mark.parametrize("system", [SENTINEL, CLUSTER])
def test_every_recording_rule_records_series_in_its_system(
    request: pytest.FixtureRequest, system: str
) -> None:
    live_system = live(request, system)

    empty = [
        rule.name
        for rule in rules()
        if rule.kind == "record"
        and system_of_rule(rule) == system
        and not live_system.prometheus.series(rule.name, live_system.started, live_system.ended)
    ]

    assert empty == []


def test_the_failover_fires_the_failover_alerts_of_services_and_sentinels(
    live_system: LiveSystem,
) -> None:
    alerts = live_system.prometheus.query('ALERTS{alertstate="firing"}', time.time())

    firing = {alert["metric"]["alertname"] for alert in alerts}
    assert {"SessionStoreFailoverSeen", "RedisSentinelFailover"} <= firing


def test_the_cluster_failover_fires_the_cluster_failover_alert(
    live_cluster_system: LiveSystem,
) -> None:
    alerts = live_cluster_system.prometheus.query('ALERTS{alertstate="firing"}', time.time())

    firing = {alert["metric"]["alertname"] for alert in alerts}
    assert "RedisClusterFailover" in firing


@pytest.mark.parametrize("system", [SENTINEL, CLUSTER])
def test_up_local_names_prometheus_and_redis_exporter_among_what_it_started(
    request: pytest.FixtureRequest, system: str
) -> None:
    live_system = live(request, system)

    assert "prometheus" in live_system.up_output
    assert "redis_exporter" in live_system.up_output


@pytest.mark.parametrize(
    ("title", "env", "scenario"),
    [
        ("Session store", PNG_ENV, "logins and carts, the Redis master killed under load"),
        (
            "Redis Cluster",
            CLUSTER_PNG_ENV,
            "logins and carts, a slot's master killed under load, slots migrated live",
        ),
    ],
)
def test_the_dashboard_renders_to_a_png(
    request: pytest.FixtureRequest, tmp_path: Path, title: str, env: str, scenario: str
) -> None:
    (dashboard,) = [d for d in dashboards() if d.title == title]
    live_system = live(request, system_of_dashboard(dashboard))
    out = Path(os.environ.get(env) or tmp_path / "dashboard.png")
    variables = grafana_variables(dashboard, live_system)
    started = datetime.fromtimestamp(live_system.started, UTC)
    mode = "Cluster mode" if system_of_dashboard(dashboard) == CLUSTER else "Sentinel mode"

    render_dashboard(
        dashboard,
        lambda expr: live_system.prometheus.query_range(
            substitute(expr, variables), live_system.started, live_system.ended, SCRAPE_INTERVAL
        ),
        (live_system.started, live_system.ended),
        out,
        subtitle=f"local stack ({mode}), {live_system.window:.0f}s from "
        f"{started:%Y-%m-%d %H:%M:%S} UTC: {scenario}",
    )

    assert out.stat().st_size > 50_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
