"""End-to-end fixtures: the healthy system every e2e test may share (and none breaks),
and a fresh logged-in session on it. A test that breaks Redis builds its own system."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import System, login, start_system


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The healthy system every e2e test may use (and nobody breaks)."""
    running = start_system(tmp_path_factory.mktemp("e2e-system"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def session_id(system: System) -> str:
    """A fresh logged-in session of user `ann`."""
    return login(system.gateway.url)
