"""Fixtures of the Helm chart tests: the chart rendered with default values, pod scripts
started as real processes (stopped at teardown)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.helm.chart import SCRIPTS_DIR, Rendered, render

StartScript = Callable[[str, Mapping[str, str], Path], subprocess.Popen[bytes]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "helm: the Helm chart: rendering, linting, schemas and its pod scripts"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test here is about the chart, so `pytest -m helm` selects exactly this folder.
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.helm)


@pytest.fixture(scope="session")
def rendered() -> Rendered:
    """The chart with its default values (read-only: never modify the objects)."""
    return render()


@pytest.fixture
def start_script() -> Iterator[StartScript]:
    """`start_script(name, env, log_path)` runs a pod script in the background, as a
    container would; every one started is stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(script: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["sh", str(SCRIPTS_DIR / script)],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: teardown stops the script and whatever it started.
                start_new_session=True,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
