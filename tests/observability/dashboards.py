"""The Grafana dashboards and Prometheus rules of deploy/ as data: every panel query with its
Grafana variables filled in the way Grafana would, every rule, and the metrics a query reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "deploy" / "grafana" / "dashboards"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,]+),\s*(?P<label>\w+)\)$")
# What is not a metric name in PromQL: label matchers, ranges, grouping clauses, strings,
# numbers with units, and function names (followed by a parenthesis).
_NOT_METRICS = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),
    re.compile(r"\{[^}]*\}"),
    re.compile(r"\[[^\]]*\]"),
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
    re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\s*\("),
    re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]?\b"),
]
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "inf", "nan"}
)
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass(frozen=True)
class Dashboard:
    path: Path
    model: dict[str, Any]

    @property
    def title(self) -> str:
        return str(self.model["title"])

    @property
    def panels(self) -> list[dict[str, Any]]:
        """Every panel but rows, including those inside collapsed rows."""
        found = []
        for panel in self.model["panels"]:
            if panel["type"] == "row":
                found += panel.get("panels", [])
            else:
                found.append(panel)
        return found

    @property
    def variables(self) -> list[dict[str, Any]]:
        return list(self.model["templating"]["list"])


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel: where it is and its PromQL as written in the dashboard."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    legend: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


@dataclass(frozen=True)
class Rule:
    """A recording or alerting rule of deploy/prometheus/*.rules.yml."""

    file: str
    name: str
    kind: str  # "record" or "alert"
    expr: str

    def __str__(self) -> str:
        return f"{self.file} / {self.name}"


def dashboards() -> list[Dashboard]:
    return [
        Dashboard(path, json.loads(path.read_text()))
        for path in sorted(DASHBOARD_DIR.glob("*.json"))
    ]


def panel_queries(dashboard: Dashboard) -> list[PanelQuery]:
    return [
        PanelQuery(
            dashboard.title,
            panel["title"],
            target["refId"],
            target["expr"],
            target.get("legendFormat", ""),
        )
        for panel in dashboard.panels
        for target in panel.get("targets", [])
    ]


def rules() -> list[Rule]:
    found = []
    for path in sorted(PROMETHEUS_DIR.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                kind = "record" if "record" in rule else "alert"
                found.append(Rule(path.name, rule[kind], kind, rule["expr"]))
    return found


def label_values_query(variable: Mapping[str, Any]) -> tuple[str, str]:
    """(metric selector, label) of a `label_values(metric, label)` query variable."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = _LABEL_VALUES.match(text.strip())
    if match is None:
        raise ValueError(f"variable {variable['name']}: unsupported query {text!r}")
    return match["metric"].strip(), match["label"]


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with every $name / ${name} replaced; KeyError names a variable nobody defines."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in values:
            raise KeyError(f"undefined Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names (recorded ones included) a PromQL expression reads."""
    text = expr
    for pattern in _NOT_METRICS:
        text = pattern.sub(" ", text)
    return {word for word in _IDENTIFIER.findall(text) if word.lower() not in _KEYWORDS}


def all_panel_queries() -> Iterator[PanelQuery]:
    for dashboard in dashboards():
        yield from panel_queries(dashboard)
