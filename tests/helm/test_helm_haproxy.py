"""The chart's optional master endpoint (haproxy.enabled): off it renders nothing; on, valid
manifests whose haproxy.cfg is the shared template filled as the local topology fills it, and
that HAProxy itself accepts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from deploy.local.haproxy import check_auth_lines, find_haproxy, render_haproxy_cfg
from tests.helm.chart import (
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    Rendered,
    container,
    labels,
    lint,
    pod_spec,
    render,
)

FULLNAME = f"{RELEASE}-sessionlib-ha"
ENABLED: dict[str, Any] = {"haproxy": {"enabled": True}}
CLIENTS = [{"podSelector": {"matchLabels": {"app": "legacy-php"}}}]
# What the chart puts after every server line: the pods' names resolved again through DNS.
SERVER_OPTIONS = "resolvers dns init-addr last,libc,none"
VARIATIONS: dict[str, dict[str, Any]] = {
    "enabled": ENABLED,
    "dev-without-auth": {**ENABLED, "auth": {"enabled": False}, "sessionlib": {"profile": "dev"}},
    "five-nodes-clients-listed": {
        "haproxy": {"enabled": True, "replicas": 3, "port": 6390, "checkIntervalMilliseconds": 500},
        "redis": {"replicas": 5},
        "networkPolicy": {"redisClientsFrom": CLIENTS},
    },
}


def haproxy_objects(rendered: Rendered) -> list[dict[str, Any]]:
    return [
        o for o in rendered.objects if labels(o).get("app.kubernetes.io/component") == "haproxy"
    ]


def haproxy_cfg(rendered: Rendered) -> str:
    return str(rendered.one("ConfigMap", "haproxy")["data"]["haproxy.cfg"])


def redis_policy_admits_haproxy(rendered: Rendered) -> bool:
    policy = rendered.one("NetworkPolicy", "redis")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule.get("from", [])]
    return any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "haproxy"
        for peer in peers
    )


def test_the_endpoint_is_off_by_default_and_then_renders_nothing() -> None:
    rendered = render()

    assert haproxy_objects(rendered) == []
    assert not redis_policy_admits_haproxy(rendered)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(VARIATIONS))
def test_the_enabled_endpoint_lints_clean_and_is_valid_kubernetes(
    name: str, kube_version: str
) -> None:
    report = lint(VARIATIONS[name], kube_version)
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and findings == [], findings or report["errors"]

    objects = haproxy_objects(render(VARIATIONS[name]))

    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_a_drain_never_takes_every_endpoint_pod_at_once() -> None:
    rendered = render(ENABLED)
    budget = rendered.one("PodDisruptionBudget", "haproxy")
    pods = rendered.one("Deployment", "haproxy")

    assert budget["spec"]["maxUnavailable"] == 1 < pods["spec"]["replicas"]
    assert (
        budget["spec"]["selector"]["matchLabels"].items()
        <= labels(pods["spec"]["template"]).items()
    )


@pytest.mark.parametrize("name", sorted(VARIATIONS))
def test_the_chart_fills_the_shared_template_as_the_local_topology_does(name: str) -> None:
    values = VARIATIONS[name]
    rendered = render(values)
    haproxy = rendered.one("Deployment", "haproxy")
    port = values["haproxy"].get("port", 6379)
    nodes = values.get("redis", {}).get("replicas", 3)
    domain = f"{FULLNAME}-redis-headless.{NAMESPACE}.svc.cluster.local"
    auth = values.get("auth", {}).get("enabled", True)

    expected = render_haproxy_cfg(
        bind=f":{port}",
        servers=[(f"redis-{i}", f"{FULLNAME}-redis-{i}.{domain}:6379") for i in range(nodes)],
        check_interval_ms=values["haproxy"].get("checkIntervalMilliseconds", 1000),
        # HAProxy expands the variable at start; the ConfigMap holds no password.
        check_auth=check_auth_lines("${REDIS_EXPORTER_PASSWORD}", "exporter") if auth else "",
        server_options=SERVER_OPTIONS,
    )
    assert haproxy_cfg(rendered).rstrip("\n") == expected.rstrip("\n")
    assert haproxy["spec"]["replicas"] == values["haproxy"].get("replicas", 2)
    service = rendered.one("Service", "haproxy")
    assert service["metadata"]["name"] == f"{FULLNAME}-haproxy"
    assert [p["port"] for p in service["spec"]["ports"]] == [port]


def test_the_check_password_comes_from_the_secret_and_changing_it_rolls_the_pods() -> None:
    rendered = render(ENABLED)
    haproxy = rendered.one("Deployment", "haproxy")
    env = {e["name"]: e for e in container(haproxy, "haproxy")["env"]}
    secret = rendered.one("Secret", "auth")

    assert env["REDIS_EXPORTER_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "exporter-password",
    }
    annotations = haproxy["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/auth"} <= set(annotations)


def test_the_endpoint_pods_run_unprivileged_with_a_read_only_root() -> None:
    haproxy = render(ENABLED).one("Deployment", "haproxy")
    pod = pod_spec(haproxy)
    assert pod is not None
    context = container(haproxy, "haproxy")["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]


def test_network_policies_let_the_endpoint_reach_redis_and_only_listed_clients_reach_it() -> None:
    listed = render(VARIATIONS["five-nodes-clients-listed"])
    unlisted = render(ENABLED)

    assert redis_policy_admits_haproxy(listed) and redis_policy_admits_haproxy(unlisted)
    (rule,) = listed.one("NetworkPolicy", "haproxy")["spec"]["ingress"]
    assert rule["from"] == CLIENTS
    assert unlisted.one("NetworkPolicy", "haproxy")["spec"]["ingress"] == []


def test_the_endpoint_with_tls_is_refused_by_name() -> None:
    values = {**ENABLED, "tls": {"enabled": True, "existingSecret": "shop-redis-tls"}}

    with pytest.raises(helm.HelmRenderError, match=r"haproxy\.enabled does not work with tls"):
        render(values)


@pytest.mark.skipif(find_haproxy() is None, reason="HAProxy is not installed")
@pytest.mark.parametrize("name", sorted(VARIATIONS))
def test_haproxy_accepts_the_rendered_config(name: str, tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_cfg(render(VARIATIONS[name])))

    checked = subprocess.run(
        [str(find_haproxy()), "-c", "-f", str(config)],
        env={**os.environ, "REDIS_EXPORTER_PASSWORD": "secret"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
