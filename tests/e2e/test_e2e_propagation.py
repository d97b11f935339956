"""The gateway forwards the session id and request id to allow-listed base URLs only: a
recording HTTP server plays the downstream at an allowed and at a look-alike path."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.e2e.harness import (
    ServiceProcess,
    System,
    find_free_ports,
    login,
    service_env,
    start_services,
)

pytestmark = pytest.mark.integration


class HeaderRecorder:
    """A tiny HTTP server that answers like an empty cart and keeps every request's
    path and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int) -> None:
                recorded.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                body = json.dumps({"items": []}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(200)

            def do_POST(self) -> None:
                self._answer(201)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", find_free_ports(1)[0]), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def requests_to(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]


@pytest.fixture(scope="module")
def recorder() -> Iterator[HeaderRecorder]:
    server = HeaderRecorder()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture(scope="module")
def gateways(
    system: System, recorder: HeaderRecorder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    """Two gateways whose allow-list is `<recorder>/internal`: one with its cart there,
    one with its cart at the look-alike `<recorder>/internal-not`."""
    allowed_port, outside_port = find_free_ports(2)
    env = service_env(system.redis.url, {"GATEWAY_INTERNAL_URLS": f"{recorder.url}/internal"})
    allowed, outside = start_services(
        [
            ("gateway", allowed_port, {**env, "GATEWAY_CART_URL": f"{recorder.url}/internal"}),
            ("gateway", outside_port, {**env, "GATEWAY_CART_URL": f"{recorder.url}/internal-not"}),
        ],
        tmp_path_factory.mktemp("gateways"),
    )
    try:
        yield {"allowed": allowed, "outside": outside}
    finally:
        allowed.stop()
        outside.stop()


def test_an_allow_listed_downstream_gets_the_session_id_and_request_id(
    gateways: dict[str, ServiceProcess], recorder: HeaderRecorder
):
    gateway = gateways["allowed"].url
    session_id = login(gateway)
    answer = httpx.get(
        f"{gateway}/cart", headers={"X-Session-Id": session_id, "X-Request-Id": "req-allowed"}
    )
    seen = recorder.requests_to("/internal/cart")[-1]
    assert answer.status_code == 200
    assert seen["x-session-id"] == session_id, "forwarded exactly as presented, signature too"
    assert seen["x-request-id"] == "req-allowed"


@pytest.mark.parametrize("method, path", [("GET", "/cart"), ("POST", "/cart/items")])
def test_a_downstream_outside_the_allow_list_gets_neither_header(
    gateways: dict[str, ServiceProcess], recorder: HeaderRecorder, method: str, path: str
):
    gateway = gateways["outside"].url
    session_id = login(gateway)
    answer = httpx.request(
        method,
        f"{gateway}{path}",
        json={"sku": "book", "qty": 1},
        headers={"X-Session-Id": session_id, "X-Request-Id": "req-outside"},
        cookies={"session": session_id},
    )
    seen = recorder.requests_to(f"/internal-not{path}")[-1]
    assert answer.status_code in (200, 201)
    assert "x-session-id" not in seen and "x-request-id" not in seen and "cookie" not in seen
    assert session_id.partition(".")[0] not in json.dumps(seen)
