"""Fixtures of the Helm chart tests: the chart rendered with default values, pod scripts
started as real processes (stopped at teardown)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.helm.chart import SCRIPTS_DIR, Rendered, render

StartScript = Callable[[str, Mapping[str, str], Path], subprocess.Popen[bytes]]
StartCommand = Callable[[Sequence[str], Mapping[str, str], Path], subprocess.Popen[bytes]]


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
def start_command() -> Iterator[StartCommand]:
    """`start_command(argv, env, log_path)` runs a command in the background, as a container
    would; every one started is stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: teardown stops the command and whatever it started.
                start_new_session=True,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        _stop(process)


@pytest.fixture
def start_script(start_command: StartCommand) -> StartScript:
    """`start_script(name, env, log_path)`: one of the chart's pod scripts, under sh."""

    def start(script: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        return start_command(["sh", str(SCRIPTS_DIR / script)], env, log_path)

    return start


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, str]:
    """A CA and a server certificate for the pods' DNS names, as a tls.enabled Secret holds
    them. It does not name 127.0.0.1: in-pod tools connect by loopback and must cope."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path / "tls"
    folder.mkdir()
    subject_alt_name = "subjectAltName=DNS:*.shop-sessionlib-ha-redis-headless.sessions.svc"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=ca",
        "-days",
        "1",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=redis",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    )
    (folder / "ext").write_text(subject_alt_name + "\n")
    run(
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-extfile",
        "ext",
    )
    return {
        "TLS_CERT_FILE": str(folder / "tls.crt"),
        "TLS_KEY_FILE": str(folder / "tls.key"),
        "TLS_CA_FILE": str(folder / "ca.crt"),
    }
