"""The Prometheus metrics: exactly the contract names of DESIGN §5, low-cardinality labels,
HTTP metrics by route template, and the `/metrics` response."""

import ast
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

import sessionlib
from sessionlib.metrics import (
    HttpMetricsMiddleware,
    StoreMetrics,
    metrics_response,
    service_registry,
)
from sessionlib.observer import STORE_OPERATIONS, StoreObserver
from sessionlib.resilience import RETRY_REASONS
from tests.support.source import parse_source

CONTRACT = {
    "sessionlib_store_operations_total": ("counter", {"operation", "outcome"}),
    "sessionlib_store_operation_duration_seconds": ("histogram", {"operation"}),
    "sessionlib_store_retries_total": ("counter", {"operation", "reason"}),
    "sessionlib_failovers_total": ("counter", set()),
    "sessionlib_redis_master_info": ("gauge", {"address"}),
    "sessionlib_sessions_created_total": ("counter", set()),
    "sessionlib_sessions_destroyed_total": ("counter", {"reason"}),
    "sessionlib_session_size_bytes": ("histogram", set()),
    "sessionlib_durability_shortfall_total": ("counter", set()),
    "sessionlib_cluster_topology_refreshes_total": ("counter", set()),
}


def exposition(registry: CollectorRegistry) -> str:
    return metrics_response(registry).body.decode()


def families(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """Exposed name (with `_total` for counters) -> (type, label names); without the
    client's `*_created` timestamps, which services switch off."""
    found = {}
    for family in text_string_to_metric_families(exposition(registry)):
        if family.name.endswith("_created") and family.type == "gauge":
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        found[name] = (family.type, labels)
    return found


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def exercise(observer: StoreObserver) -> None:
    observer.operation("load", "success", 0.002)
    observer.retry("save", "readonly")
    observer.session_created()
    observer.session_destroyed("deleted")
    observer.session_size(300)
    observer.durability_shortfall()
    observer.master_changed("10.0.0.1:6379", failover=False)
    observer.topology_refreshed()


def test_the_store_exports_exactly_the_contract_metrics_with_their_types_and_labels():
    registry = CollectorRegistry()
    exercise(StoreMetrics(registry))
    assert families(registry) == CONTRACT


def test_every_contract_metric_exists_before_the_first_event():
    registry = CollectorRegistry()
    StoreMetrics(registry)
    text = exposition(registry)
    for name in CONTRACT:
        if name != "sessionlib_redis_master_info":  # no master is known yet
            assert f"# TYPE {name.removesuffix('_total')}" in text
    saves_failed = {"operation": "save", "outcome": "error"}
    assert sample(registry, "sessionlib_store_operations_total", **saves_failed) == 0


def test_unavailable_operations_are_counted_from_zero_so_a_first_failover_shows_in_increase():
    registry = CollectorRegistry()
    StoreMetrics(registry)
    for operation in ("load", "save"):
        unavailable = {"operation": operation, "outcome": "unavailable"}
        assert sample(registry, "sessionlib_store_operations_total", **unavailable) == 0


def test_every_retry_series_exists_at_zero_so_a_dashboard_has_data_before_the_first_retry():
    registry = CollectorRegistry()
    StoreMetrics(registry)
    for operation in STORE_OPERATIONS:
        for reason in RETRY_REASONS:
            retried = {"operation": operation, "reason": reason}
            assert sample(registry, "sessionlib_store_retries_total", **retried) == 0


def operations_the_store_runs() -> set[str]:
    """The names `store.py` passes to `_call`: literals, or the literals assigned in the
    same function to the variable it passes (a name that arrives as a parameter is not
    followed)."""
    tree = parse_source(Path(sessionlib.__file__).parent / "store.py")
    names: set[str] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for call in ast.walk(function):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "_call"
                and call.args
            ):
                continue
            name = call.args[0]
            if isinstance(name, ast.Name):
                values = [
                    node.value
                    for assign in ast.walk(function)
                    if isinstance(assign, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == name.id for t in assign.targets)
                    for node in ast.walk(assign.value)
                    if isinstance(node, ast.Constant)
                ]
            else:
                values = [name.value] if isinstance(name, ast.Constant) else []
            names.update(v for v in values if isinstance(v, str))
    return names


def test_every_operation_the_store_runs_is_a_known_operation_with_series_from_the_start():
    assert operations_the_store_runs() <= set(STORE_OPERATIONS)


def test_observations_land_in_the_right_series():
    registry = CollectorRegistry()
    exercise(StoreMetrics(registry))
    load_ok = {"operation": "load", "outcome": "success"}
    fast_load = {"operation": "load", "le": "0.0025"}
    retried = {"operation": "save", "reason": "readonly"}
    assert sample(registry, "sessionlib_store_operations_total", **load_ok) == 1
    assert sample(registry, "sessionlib_store_operation_duration_seconds_bucket", **fast_load) == 1
    assert sample(registry, "sessionlib_store_retries_total", **retried) == 1
    assert sample(registry, "sessionlib_sessions_destroyed_total", reason="deleted") == 1
    assert sample(registry, "sessionlib_session_size_bytes_bucket", le="512.0") == 1
    assert sample(registry, "sessionlib_durability_shortfall_total") == 1


def test_master_info_shows_only_the_current_master_and_failovers_count_changes():
    registry = CollectorRegistry()
    metrics = StoreMetrics(registry)
    metrics.master_changed("10.0.0.1:6379", failover=False)
    metrics.master_changed("10.0.0.2:6379", failover=True)
    assert sample(registry, "sessionlib_redis_master_info", address="10.0.0.2:6379") == 1
    assert sample(registry, "sessionlib_redis_master_info", address="10.0.0.1:6379") is None
    assert sample(registry, "sessionlib_failovers_total") == 1


def test_two_observers_on_one_registry_share_the_series_instead_of_failing():
    registry = CollectorRegistry()
    StoreMetrics(registry).session_created()
    StoreMetrics(registry).session_created()
    assert sample(registry, "sessionlib_sessions_created_total") == 2


def test_a_service_registry_also_has_process_metrics():
    assert "process_cpu_seconds_total" in exposition(service_registry())


def test_metrics_speak_openmetrics_when_the_scraper_asks():
    registry = CollectorRegistry()
    StoreMetrics(registry)
    response = metrics_response(registry, "application/openmetrics-text; version=1.0.0")
    assert response.media_type.startswith("application/openmetrics-text")
    assert response.body.decode().endswith("# EOF\n")


# -- HTTP -----------------------------------------------------------------------------


def http_app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}/cart")
    async def cart(user_id: str) -> dict[str, str]:
        return {"user": user_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_middleware(HttpMetricsMiddleware, registry=registry)
    return app


async def get(app: FastAPI, path: str, method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.request(method, path)


async def test_http_requests_are_counted_by_route_template_never_by_raw_path():
    registry = CollectorRegistry()
    app = http_app(registry)
    await get(app, "/users/secret-user-42/cart")
    await get(app, "/users/other/cart")
    labels = {"route": "/users/{user_id}/cart", "method": "GET", "status_class": "2xx"}
    assert sample(registry, "http_requests_total", **labels) == 2
    assert "secret-user-42" not in exposition(registry)


async def test_unmatched_paths_share_one_series():
    registry = CollectorRegistry()
    app = http_app(registry)
    for path in ("/wp-admin", "/.env", "/a/b/c"):
        await get(app, path)
    labels = {"route": "<unmatched>", "method": "GET", "status_class": "4xx"}
    assert sample(registry, "http_requests_total", **labels) == 3


async def test_a_crash_counts_as_5xx_and_odd_methods_as_other():
    registry = CollectorRegistry()
    app = http_app(registry)
    await get(app, "/boom")
    await get(app, "/users/x/cart", method="PROPFIND")
    crashed = {"route": "/boom", "method": "GET", "status_class": "5xx"}
    odd = {"route": "/users/{user_id}/cart", "method": "OTHER", "status_class": "4xx"}
    assert sample(registry, "http_requests_total", **crashed) == 1
    assert sample(registry, "http_requests_total", **odd) == 1


async def test_an_answer_given_before_routing_still_counts_against_the_route_template():
    class StoreDown:
        """Answers like the session middleware does when Redis is gone."""

        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await JSONResponse({"detail": "down"}, status_code=503)(scope, receive, send)

    registry = CollectorRegistry()
    app = FastAPI()

    @app.get("/users/{user_id}/cart")
    async def cart(user_id: str) -> dict[str, str]:
        return {"user": user_id}

    app.add_middleware(StoreDown)
    app.add_middleware(HttpMetricsMiddleware, registry=registry)
    await get(app, "/users/x/cart")
    down = {"route": "/users/{user_id}/cart", "method": "GET", "status_class": "5xx"}
    assert sample(registry, "http_requests_total", **down) == 1


async def test_request_duration_is_a_histogram_by_route_and_method():
    registry = CollectorRegistry()
    await get(http_app(registry), "/users/x/cart")
    labels = {"route": "/users/{user_id}/cart", "method": "GET"}
    assert sample(registry, "http_request_duration_seconds_count", **labels) == 1


@pytest.mark.parametrize("forbidden", ["session", "user", "path", "sid"])
def test_no_metric_has_a_label_for_identities_or_paths(forbidden):
    registry = CollectorRegistry()
    exercise(StoreMetrics(registry))
    HttpMetricsMiddleware(http_app(registry), registry=registry)
    for _, labels in families(registry).values():
        assert forbidden not in labels
