"""The package as users get it: the sdist and wheel `python -m build` makes, the wheel
installed into a fresh venv outside the source tree (core first, then with extras), and
a Starlette app and a FastAPI app in that venv logging in, reading and logging out
against a real redis-server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.local.processes import find_free_ports
from deploy.local.standalone import StandaloneRedis

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).with_name("installed_apps.py")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

pytestmark = pytest.mark.packaging


@dataclass
class Built:
    wheel: Path
    sdist: Path


@dataclass
class FreshVenv:
    root: Path
    workdir: Path  # outside the source tree: `import sessionlib` must find the installed one

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def pip_install(self, *requirements: str) -> None:
        run([str(self.python), "-m", "pip", "install", "-q", *requirements], cwd=self.workdir)

    def run(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            cwd=self.workdir,
            env=env or clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def apps(self, what: str, redis_url: str) -> dict[str, object]:
        result = self.run(
            str(self.python),
            str(self.workdir / APPS.name),
            what,
            env=clean_env(SESSIONLIB_REDIS__URL=redis_url),
        )
        assert result.returncode == 0, result.stderr
        answer: dict[str, object] = json.loads(result.stdout)
        return answer


def clean_env(**variables: str) -> dict[str, str]:
    """The environment without this checkout: no PYTHONPATH, no SESSIONLIB_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("SESSIONLIB_") and k not in {"PYTHONPATH", "VIRTUAL_ENV"}
    }
    return env | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"} | variables


def run(argv: list[str], cwd: Path) -> None:
    result = subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, f"{argv}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """sdist first, then the wheel built from that sdist (build's default): a file the
    sdist forgot breaks the wheel here, not on a user's machine."""
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=dist)
    [wheel] = dist.glob("sessionlib-*.whl")
    [sdist] = dist.glob("sessionlib-*.tar.gz")
    return Built(wheel, sdist)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, built: Built) -> FreshVenv:
    """A fresh venv with only the core wheel installed (deps from the index)."""
    base = tmp_path_factory.mktemp("installed")
    assert ROOT not in base.parents
    fresh = FreshVenv(base / "venv", base / "work")
    fresh.workdir.mkdir()
    shutil.copy(APPS, fresh.workdir)
    run([sys.executable, "-m", "venv", str(fresh.root)], cwd=base)
    fresh.pip_install(str(built.wheel))
    return fresh


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with StandaloneRedis(tmp_path_factory.mktemp("redis"), find_free_ports(1)[0]) as server:
        yield server.url


def test_the_sdist_carries_the_package_data_docs_and_changelog(built):
    with tarfile.open(built.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml"} <= names
    assert "sessionlib/py.typed" in names
    assert {"sessionlib/profiles/dev.yaml", "sessionlib/profiles/prod.yaml"} <= names
    assert any(name.startswith("sessionlib/lua/") and name.endswith(".lua") for name in names)
    assert not any(name.startswith(("tests/", "services/", "deploy/")) for name in names)


def test_the_core_installs_without_fastapi_uvicorn_or_httpx(venv):
    meta = venv.apps("metadata", "redis://unused")

    assert not {"fastapi", "uvicorn", "httpx"} & set(meta["installed"])
    assert {"starlette", "redis", "hiredis", "tenacity", "pydantic-settings"} <= set(
        meta["installed"]
    )
    core = [r for r in meta["requires"] if "extra ==" not in r]
    assert not [r for r in core if r.startswith(("fastapi", "uvicorn", "httpx"))]
    assert "starlette>=1.7" in core
    assert set(meta["extras"]) >= {"fastapi", "propagation", "services", "dev"}


def test_installed_metadata_is_true(venv):
    meta = venv.apps("metadata", "redis://unused")

    assert meta["version"] == meta["__version__"] == PROJECT["version"]
    assert Path(meta["module_file"]).is_relative_to(venv.root)
    assert meta["license"] == "Apache-2.0" and meta["license_files"], "the text ships too"
    assert "Cluster" not in meta["summary"]  # Cluster mode is partial (no WAIT yet)
    assert meta["py_typed"]
    assert meta["profiles"] == ["dev.yaml", "prod.yaml"]
    assert meta["lua"]


def test_an_integration_without_its_extra_names_the_extra_to_install(venv):
    refused = venv.apps("extras", "redis://unused")

    assert "pip install 'sessionlib[fastapi]'" in refused["sessionlib.fastapi"]
    assert "pip install 'sessionlib[propagation]'" in refused["sessionlib.propagation"]


def test_the_console_script_runs_doctor(venv, redis_url):
    version = venv.run(str(venv.root / "bin" / "sessionlib"), "--version")
    doctor = venv.run(
        str(venv.root / "bin" / "sessionlib"),
        "doctor",
        env=clean_env(SESSIONLIB_REDIS__URL=redis_url),
    )

    assert version.stdout.strip() == f"sessionlib {PROJECT['version']}"
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.splitlines()[-1] == "everything holds"


def assert_login_read_logout(steps: dict[str, dict[str, object]]) -> None:
    assert steps["login"]["status"] == 200
    assert steps["login"]["sessions_in_redis"] == 1
    assert steps["read"]["body"] == {"user": "alice", "visits": 1}
    assert steps["read_again"]["body"] == {"user": "alice", "visits": 2}
    assert steps["logout"]["status"] == 200
    assert steps["logout"]["sessions_in_redis"] == 0
    assert steps["read_after_logout"]["status"] == 401


def test_a_starlette_app_on_the_core_logs_in_reads_and_logs_out(venv, redis_url):
    assert_login_read_logout(venv.apps("starlette", redis_url))


def test_a_fastapi_app_with_the_fastapi_extra_logs_in_reads_and_logs_out(venv, built, redis_url):
    venv.pip_install(f"sessionlib[fastapi,propagation] @ {built.wheel.as_uri()}")

    steps = venv.apps("fastapi", redis_url)

    assert_login_read_logout(steps)
    assert venv.apps("extras", redis_url) == {
        "sessionlib.fastapi": "imported",
        "sessionlib.propagation": "imported",
    }
