"""The few calls of Prometheus' HTTP API the observability tests make, with Prometheus' own
error message in the exception when it refuses a query (a parse error names the position)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class QueryRefused(Exception):
    """Prometheus answered with status "error" (bad PromQL, bad parameters, ...)."""


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and its (unix time, value) points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


class PrometheusAPI:
    """A client for one Prometheus at `url` (http://host:port)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant query's result: the vector (or scalar) at `at`."""
        data = self._get("/api/v1/query", {"query": expr, "time": at})
        result = data["result"]
        return result if data["resultType"] == "vector" else [{"metric": {}, "value": result}]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query's series; values Prometheus cannot express as numbers come as NaN."""
        data = self._get(
            "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}
        )
        return [
            Series(item["metric"], [(float(t), float(v)) for t, v in item["values"]])
            for item in data["result"]
        ]

    def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        """The label sets of the series `match` selects that had samples in [start, end]."""
        return list(self._get("/api/v1/series", {"match[]": match, "start": start, "end": end}))

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (recording and alerting) with its health and last error."""
        groups = self._get("/api/v1/rules", {})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        answer = httpx.get(f"{self.url}{path}", params=params, timeout=10.0)
        body = answer.json()
        if body.get("status") != "success":
            raise QueryRefused(f"{body.get('errorType')}: {body.get('error')} ({params})")
        return body["data"]
