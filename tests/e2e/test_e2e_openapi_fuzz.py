"""Schemathesis generates requests from each service's own OpenAPI document and sends
them over real HTTP, logged in: no input makes either service answer with a 5xx."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.e2e.harness import System, login

pytestmark = pytest.mark.integration

# Enough to walk every field's edge cases, few enough to keep the suite quick.
EXAMPLES_PER_OPERATION = 100
OPERATIONS = [
    ("gateway", "POST", "/login"),
    ("gateway", "GET", "/me"),
    ("gateway", "POST", "/logout"),
    ("gateway", "GET", "/cart"),
    ("gateway", "POST", "/cart/items"),
    ("gateway", "GET", "/readyz"),
    ("cart", "GET", "/cart"),
    ("cart", "POST", "/cart/items"),
    ("cart", "GET", "/readyz"),
]
WITH_BODY = {"/login", "/cart/items"}


def _cases(url: str, method: str, path: str) -> SearchStrategy[schemathesis.Case]:
    """Valid and, where there is a body to break, invalid requests for one operation, from
    the document the running service serves."""
    operation = schemathesis.openapi.from_url(f"{url}/openapi.json")[path][method]
    valid = operation.as_strategy(GenerationMode.POSITIVE)
    if path not in WITH_BODY:
        return valid
    return st.one_of(valid, operation.as_strategy(GenerationMode.NEGATIVE))


@pytest.mark.parametrize("service, method, path", OPERATIONS)
def test_no_generated_request_makes_a_service_answer_5xx(
    system: System, service: str, method: str, path: str
):
    url = getattr(system, service).url

    @given(case=_cases(url, method, path))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call_logged_in(case: schemathesis.Case) -> None:
        # A fresh session per example: a generated `POST /logout` must not turn every
        # later example into a shallow 401.
        session_id = login(system.gateway.url, "fuzz")
        response = case.call(base_url=url, headers={"X-Session-Id": session_id}, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert "detail" in response.json()

    call_logged_in()


def test_both_services_publish_the_api_of_design_section_4(system: System):
    gateway = httpx.get(f"{system.gateway.url}/openapi.json").json()["paths"]
    cart = httpx.get(f"{system.cart.url}/openapi.json").json()["paths"]
    assert {p: sorted(gateway[p]) for p in gateway} == {
        "/login": ["post"],
        "/me": ["get"],
        "/logout": ["post"],
        "/cart": ["get"],
        "/cart/items": ["post"],
        "/healthz": ["get"],
        "/readyz": ["get"],
    }
    assert {p: sorted(cart[p]) for p in cart} == {
        "/cart": ["get"],
        "/cart/items": ["post"],
        "/healthz": ["get"],
        "/readyz": ["get"],
    }
