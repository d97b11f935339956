"""Every dashboard panel and rule against a real Prometheus that watched the local stack take
traffic and a failover: each query parses, reads only exported metrics, and panels show data."""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path

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

# Where `make dashboard-png` wants the picture; tests without it draw into a tmp dir.
PNG_ENV = "SESSIONLIB_DASHBOARD_PNG"


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


@pytest.mark.parametrize("query", list(all_panel_queries()), ids=str)
def test_every_dashboard_panel_query_shows_data_from_the_live_system(
    live_system: LiveSystem, query: PanelQuery
) -> None:
    expr = substitute(query.expr, grafana_variables(dashboard_of(query), live_system))

    series = live_system.prometheus.query_range(
        expr, live_system.started, live_system.ended, SCRAPE_INTERVAL
    )

    assert unexported_metrics(live_system, expr) == []
    assert series, f"no series: {expr}"
    values = [value for s in series for _, value in s.points]
    assert any(math.isfinite(value) for value in values), f"only NaN/Inf: {expr}"


@pytest.mark.parametrize("rule", rules(), ids=str)
def test_every_rule_expression_parses_and_reads_only_metrics_the_system_exports(
    live_system: LiveSystem, rule: Rule
) -> None:
    live_system.prometheus.query(rule.expr, live_system.ended)  # raises on a parse error

    assert unexported_metrics(live_system, rule.expr) == []


def test_prometheus_loaded_every_rule_and_evaluates_each_without_error(
    live_system: LiveSystem,
) -> None:
    loaded = live_system.prometheus.rules()

    assert {rule["name"] for rule in loaded} == {rule.name for rule in rules()}
    unhealthy = {rule["name"]: rule.get("lastError") for rule in loaded if rule["health"] != "ok"}
    assert unhealthy == {}


def test_every_recording_rule_records_series(live_system: LiveSystem) -> None:
    empty = [
        rule.name
        for rule in rules()
        if rule.kind == "record"
        and not live_system.prometheus.series(rule.name, live_system.started, live_system.ended)
    ]

    assert empty == []


def test_the_failover_fires_the_failover_alerts_of_services_and_sentinels(
    live_system: LiveSystem,
) -> None:
    alerts = live_system.prometheus.query('ALERTS{alertstate="firing"}', time.time())

    firing = {alert["metric"]["alertname"] for alert in alerts}
    assert {"SessionStoreFailoverSeen", "RedisSentinelFailover"} <= firing


def test_up_local_names_prometheus_and_redis_exporter_among_what_it_started(
    live_system: LiveSystem,
) -> None:
    assert "prometheus" in live_system.up_output
    assert "redis_exporter" in live_system.up_output


def test_the_session_store_dashboard_renders_to_a_png(
    live_system: LiveSystem, tmp_path: Path
) -> None:
    (dashboard,) = [d for d in dashboards() if d.title == "Session store"]
    out = Path(os.environ.get(PNG_ENV) or tmp_path / "session-store.png")
    variables = grafana_variables(dashboard, live_system)
    started = datetime.fromtimestamp(live_system.started, UTC)

    render_dashboard(
        dashboard,
        lambda expr: live_system.prometheus.query_range(
            substitute(expr, variables), live_system.started, live_system.ended, SCRAPE_INTERVAL
        ),
        (live_system.started, live_system.ended),
        out,
        subtitle=f"local stack, {live_system.window:.0f}s from {started:%Y-%m-%d %H:%M:%S} UTC: "
        "logins and carts, the Redis master killed under load",
    )

    assert out.stat().st_size > 50_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
