"""deploy/prometheus as promtool sees it: the config template renders to a valid config, the
rule files are valid, and every alert has unit tests where it fires and where it stays quiet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.local.observability import ScrapeTargets, render_prometheus_config
from tests.observability.dashboards import PROMETHEUS_DIR, rules

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (make setup installs Debian's prometheus package)",
)

RULE_FILES = sorted(PROMETHEUS_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_config_template_rendered_with_local_targets_is_a_valid_prometheus_config(
    tmp_path: Path,
) -> None:
    targets = ScrapeTargets(
        prometheus=["127.0.0.1:9090"],
        redis_exporter=["127.0.0.1:9121"],
        gateway=["127.0.0.1:8080"],
        cart=["127.0.0.1:8081"],
        redis=["redis://127.0.0.1:6380", "redis://127.0.0.1:6381"],
        sentinel=["redis://127.0.0.1:26380"],
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        render_prometheus_config(
            targets, redis_exporter_address="127.0.0.1:9121", scrape_interval="1s"
        )
    )

    result = promtool("check", "config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs == {
        "prometheus", "gateway", "cart", "redis_exporter", "redis", "sentinel", "redis-cluster"
    }  # fmt: skip


def test_the_rule_files_are_valid() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_pass() -> None:
    result = promtool(
        "test", "rules", *(path.name for path in TEST_FILES), cwd=TEST_FILES[0].parent
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])

    alerts = {rule.name for rule in rules() if rule.kind == "alert"}

    assert alerts - fires == set(), "alerts without a case where they fire"
    assert alerts - quiet == set(), "alerts without a case where they stay quiet"
    assert (fires | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_every_rule_file_is_covered_by_a_unit_test_file() -> None:
    tested = {
        Path(rule_file).name
        for path in TEST_FILES
        for rule_file in yaml.safe_load(path.read_text())["rule_files"]
    }

    assert tested == {path.name for path in RULE_FILES}
