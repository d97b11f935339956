"""The chart ships the same Redis/Sentinel templates, alert rules and dashboards as compose and
the local topology (deploy/), linked into the chart by helm/sync-shared-files.sh."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from deploy.images.standins import STANDINS
from tests.helm.chart import CHART_DIR, ROOT, render, secret_values

SYNC = "sh helm/sync-shared-files.sh"
# (folder under the repository root, file pattern, folder under the chart's files/)
SHARED = [
    ("deploy/redis", "*.conf", "redis"),
    ("deploy/redis", "*.acl", "redis"),
    ("deploy/haproxy", "*.cfg", "haproxy"),
    ("deploy/prometheus", "*.rules.yml", "prometheus"),
    ("deploy/grafana/dashboards", "*.json", "grafana/dashboards"),
]


def contents(folder: Path, pattern: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(pattern))}


@pytest.mark.parametrize(("source", "pattern", "target"), SHARED)
def test_the_chart_ships_exactly_the_shared_files(source: str, pattern: str, target: str) -> None:
    shared = contents(ROOT / source, pattern)
    shipped = contents(CHART_DIR / "files" / target, pattern)
    assert sorted(shipped) == sorted(shared), f"chart and {source} list different files: {SYNC}"
    for name, data in shared.items():
        assert shipped[name] == data, f"files/{target}/{name} differs from {source}: {SYNC}"


def test_the_redis_templates_are_shared_at_all() -> None:
    assert {"redis.conf", "sentinel.conf"} <= set(contents(ROOT / "deploy/redis", "*.conf"))


def test_the_shared_rules_select_only_jobs_the_chart_names() -> None:
    chart_jobs = set(
        yaml.safe_load((CHART_DIR / "values.yaml").read_text())["metrics"]["serviceMonitor"][
            "jobNames"
        ].values()
    )
    selected: set[str] = set()
    for rules in (CHART_DIR / "files" / "prometheus").glob("*.rules.yml"):
        for value in re.findall(r'\bjob=~?"([^"]+)"', rules.read_text()):
            selected.update(value.split("|"))
    assert selected <= chart_jobs, (
        f"rules select jobs no ServiceMonitor sets: {selected - chart_jobs}"
    )


def test_the_shared_rules_and_dashboards_render_into_the_chart() -> None:
    rendered = render({"metrics": {"prometheusRule": {"enabled": True}}})
    rule_files = sorted((CHART_DIR / "files" / "prometheus").glob("*.rules.yml"))
    groups = [g["name"] for p in rule_files for g in yaml.safe_load(p.read_text())["groups"]]
    (prometheus_rule,) = rendered.of_kind("PrometheusRule")
    assert [g["name"] for g in prometheus_rule["spec"]["groups"]] == groups
    dashboards = {p.name for p in (CHART_DIR / "files/grafana/dashboards").glob("*.json")}
    shipped = {
        key
        for c in rendered.of_kind("ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key in c["data"]
    }
    assert shipped == dashboards


def test_sync_links_new_shared_files_and_drops_removed_ones(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "helm", tmp_path / "helm", symlinks=True)
    shutil.copytree(ROOT / "deploy" / "redis", tmp_path / "deploy" / "redis")
    rules = tmp_path / "deploy" / "prometheus"
    rules.mkdir(parents=True)
    (rules / "new.rules.yml").write_text("groups: []\n")
    chart_rules = tmp_path / "helm/sessionlib-ha/files/prometheus"

    subprocess.run(["sh", str(tmp_path / "helm/sync-shared-files.sh")], check=True)

    assert sorted(p.name for p in chart_rules.iterdir()) == ["new.rules.yml"]
    assert (chart_rules / "new.rules.yml").read_text() == "groups: []\n"
    assert (chart_rules / "new.rules.yml").is_symlink()


def test_the_packaged_chart_carries_the_shared_files_themselves(tmp_path: Path) -> None:
    archive = helm.package(CHART_DIR, destination=tmp_path)

    with helm.Chart.load_archive(Path(archive).read_bytes()) as chart:
        files = {f["name"]: f["data"] for f in chart.files}
    for source, pattern, target in SHARED:
        for name, data in contents(ROOT / source, pattern).items():
            assert files[f"files/{target}/{name}"] == data.decode(), name


def test_local_compose_and_helm_have_the_same_acl_users_as_the_shared_templates() -> None:
    from deploy.local.credentials import USERS

    templates = {
        name: set(re.findall(r"^user (\S+)", (ROOT / "deploy/redis" / name).read_text(), re.M))
        - {"default"}
        for name in ("users.acl", "sentinel-users.acl")
    }
    chart = set(secret_values(render().one("Secret", "auth")))
    compose = set(
        re.findall(r"^REDIS_([A-Z]+)_PASSWORD=", (ROOT / ".env.example").read_text(), re.M)
    )

    # A sentinel has no replica user: nothing replicates from it.
    assert templates["users.acl"] == set(USERS)
    assert templates["sentinel-users.acl"] == set(USERS) - {"replica"}
    assert chart == {f"{user}-password" for user in USERS}
    assert compose == {user.upper() for user in USERS}


# Images compose and the chart both run, so both must pin one version of each (the one the
# stand-ins build where no registry is reachable, i.e. the one the tests run).
SHARED_IMAGES = ("redis", "oliver006/redis_exporter")
COMPOSE_FILES = [ROOT / "docker-compose.ha.yml", *sorted((ROOT / "deploy/compose").glob("*.yml"))]


def versions(images: Iterable[str]) -> dict[str, set[str]]:
    """The tags named for each of SHARED_IMAGES, whatever registry prefix the name carries."""
    found: dict[str, set[str]] = {repository: set() for repository in SHARED_IMAGES}
    for image in images:
        repository, _, tag = image.rpartition(":")
        repository = repository.removeprefix("docker.io/").removeprefix("library/")
        if repository in found:
            found[repository].add(tag)
    return found


def test_compose_helm_and_the_standins_pin_the_same_redis_and_exporter_versions() -> None:
    compose = versions(
        service["image"]
        for path in COMPOSE_FILES
        for service in yaml.safe_load(path.read_text())["services"].values()
        if "image" in service
    )
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    chart = versions(
        f"{values[component]['image']['repository']}:{values[component]['image']['tag']}"
        for component in ("redis", "exporter")
    )
    rendered = versions(container["image"] for _, container in render().containers())
    standins = versions(standin.tag for standin in STANDINS)

    assert all(len(tags) == 1 for tags in compose.values()), f"compose pins {compose}"
    assert chart == compose, f"values.yaml pins {chart}, docker-compose.ha.yml {compose}"
    assert rendered == compose, f"the chart's pods run {rendered}, compose {compose}"
    assert standins == compose, f"deploy/images/standins.py builds {standins}, compose {compose}"
