"""deploy/grafana as Grafana would load it: the provisioning files, and dashboards whose every
panel queries the provisioned Prometheus through the dashboard's data source variable."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.observability.dashboards import REPO, dashboards, label_values_query, panel_queries

GRAFANA_DIR = REPO / "deploy" / "grafana"


def test_the_kit_ships_the_session_store_and_redis_ha_dashboards_with_distinct_uids() -> None:
    found = dashboards()

    assert {dashboard.title for dashboard in found} >= {"Session store", "Redis HA"}
    uids = [dashboard.model["uid"] for dashboard in found]
    assert len(set(uids)) == len(uids)


def test_every_panel_has_a_query_and_reads_the_data_source_variable() -> None:
    for dashboard in dashboards():
        for panel in dashboard.panels:
            where = f"{dashboard.title} / {panel['title']}"
            assert panel["targets"], f"{where} has no query"
            for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                assert source == {"type": "prometheus", "uid": "${datasource}"}, where


def test_panels_of_a_dashboard_have_unique_ids_and_do_not_overlap() -> None:
    for dashboard in dashboards():
        ids = [panel["id"] for panel in dashboard.model["panels"]]
        assert len(set(ids)) == len(ids), dashboard.title
        cells: set[tuple[int, int]] = set()
        for panel in dashboard.model["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{dashboard.title} / {panel['title']}"
            covered = {
                (grid["x"] + dx, grid["y"] + dy)
                for dx in range(grid["w"])
                for dy in range(grid["h"])
            }
            assert not covered & cells, f"{dashboard.title} / {panel['title']} overlaps"
            cells |= covered


def test_query_variables_are_label_values_of_exported_metrics_and_a_datasource_picker() -> None:
    for dashboard in dashboards():
        variables = {variable["name"]: variable for variable in dashboard.variables}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for variable in variables.values():
            if variable["type"] == "query":
                label_values_query(variable)  # raises on anything else


def test_every_query_has_an_expression_and_a_legend() -> None:
    for dashboard in dashboards():
        for query in panel_queries(dashboard):
            assert query.expr.strip(), str(query)
            assert query.legend, f"{query}: without a legend Grafana shows raw label sets"


def test_provisioning_points_grafana_at_prometheus_and_at_the_dashboards_folder() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text()
    )
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/sessionlib.yml").read_text())

    (prometheus,) = datasources["datasources"]
    assert (prometheus["type"], prometheus["url"], prometheus["isDefault"]) == (
        "prometheus",
        "${PROMETHEUS_URL}",
        True,
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()
