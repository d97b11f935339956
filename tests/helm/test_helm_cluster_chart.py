"""The chart in Redis Cluster mode (redis.mode cluster), as rendered: one StatefulSet of
cluster nodes without Sentinel, both services in cluster mode with the same TLS and ACL options
as Sentinel mode, one pod at a time through disruptions, and scale-in refused until drained.
(Lint and kubernetes-validate on 1.29 and 1.33 run for it in test_helm_chart.py's VARIATIONS.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from deploy.local.configs import cluster_directives
from sessionlib import load_settings
from tests.helm.chart import (
    CHART_DIR,
    CLUSTER_SCRIPTS_DIR,
    SCRIPTS_DIR,
    Rendered,
    container,
    labels,
    pod_spec,
    render,
    render_with_lookup,
)

CLUSTER: dict[str, Any] = {"redis": {"mode": "cluster"}}
TLS = {"enabled": True, "existingSecret": "shop-redis-tls"}
HEADLESS_DOMAIN = "shop-sessionlib-ha-redis-headless.sessions.svc.cluster.local"
# The one `lookup` of the running StatefulSet (templates/_helpers.tpl, "redis.runningPods").
STATEFULSET_LOOKUP = (
    '(lookup "apps/v1" "StatefulSet" .Release.Namespace (include "sessionlib-ha.redis.fullname" .))'
)


@pytest.fixture(scope="module")
def cluster() -> Rendered:
    return render(CLUSTER)


def env_of(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload, name)["env"]}


def with_cluster(**values: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {"redis": {"mode": "cluster"}}
    for key, value in values.items():
        merged[key] = {**merged.get(key, {}), **value}
    return merged


# --- the nodes ----------------------------------------------------------------------------------


def test_cluster_mode_runs_the_cluster_nodes_with_an_exporter_and_no_sentinel(
    cluster: Rendered,
) -> None:
    pod = pod_spec(cluster.redis)
    assert pod is not None
    assert [c["name"] for c in pod["containers"]] == ["redis", "redis-exporter"]
    assert container(cluster.redis, "redis")["command"] == [
        "sh",
        "/opt/sessionlib/scripts/cluster-start.sh",
    ]
    env = env_of(cluster.redis, "redis")
    assert not {"SENTINELS", "SENTINEL_PORT", "MASTER_NAME", "QUORUM"} & set(env)
    assert "sentinel-config" not in {v["name"] for v in pod["volumes"]}
    # Every pod is created at once: the cluster is created only when every node answers.
    assert cluster.redis["spec"]["podManagementPolicy"] == "Parallel"
    # nodes.conf lives beside the data, on the pod's volume.
    (claim,) = cluster.redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert env_of(cluster.redis, "redis")["DATA_DIR"] == "/data"


@pytest.mark.parametrize(("shards", "replicas", "pods"), [(3, 1, 6), (4, 1, 8), (3, 2, 9)])
def test_shards_and_their_replicas_make_the_pod_count(
    shards: int, replicas: int, pods: int
) -> None:
    rendered = render(
        {"redis": {"mode": "cluster", "cluster": {"shards": shards, "replicasPerShard": replicas}}}
    )
    env = env_of(rendered.redis, "redis")
    assert rendered.redis["spec"]["replicas"] == pods
    assert env["REDIS_NODES"].split() == [
        f"shop-sessionlib-ha-redis-{i}.{HEADLESS_DOMAIN}:6379" for i in range(pods)
    ]
    assert env["CLUSTER_REPLICAS"] == str(replicas)


def test_nodes_announce_their_pod_name_and_gossip_on_a_declared_bus_port(
    cluster: Rendered,
) -> None:
    env = env_of(cluster.redis, "redis")
    assert env["ANNOUNCE_HOST"] == f"$(POD_NAME).{HEADLESS_DOMAIN}"
    assert env["CLUSTER_BUS_PORT"] == "16379"
    assert env["CLUSTER_NODE_TIMEOUT_MS"] == "5000"
    assert env["MIN_REPLICAS_TO_WRITE"] == "1"
    ports = {p["name"]: p["containerPort"] for p in container(cluster.redis, "redis")["ports"]}
    assert ports == {"redis": 6379, "cluster-bus": 16379}
    headless = next(s for s in cluster.of_kind("Service") if s["spec"].get("clusterIP") == "None")
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"] for p in headless["spec"]["ports"]} == {"redis", "cluster-bus"}


def test_the_cluster_lines_are_the_local_topologys_plus_the_pod_name(tmp_path: Path) -> None:
    script = (
        f'. "{SCRIPTS_DIR}/lib.sh"; . "{CLUSTER_SCRIPTS_DIR}/cluster-lib.sh"; cluster_directives'
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "CLUSTER_BUS_PORT": "16379",
        "CLUSTER_NODE_TIMEOUT_MS": "5000",
        "ANNOUNCE_HOST": "pod-0.example",
    }
    plain = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    secure = subprocess.run(
        ["sh", "-c", script], env=env | {"TLS_ENABLED": "true"}, capture_output=True, text=True
    )
    pod_lines = (
        "cluster-announce-hostname pod-0.example\ncluster-preferred-endpoint-type hostname\n"
    )
    assert plain.stdout == cluster_directives(bus_port=16379, node_timeout_ms=5000) + pod_lines
    assert secure.stdout == (
        cluster_directives(bus_port=16379, node_timeout_ms=5000, tls=True) + pod_lines
    )


def test_memory_is_sized_as_in_sentinel_mode(cluster: Rendered, rendered: Rendered) -> None:
    key = "redis-extra.conf"
    assert (
        cluster.one("ConfigMap", "redis")["data"][key]
        == (rendered.one("ConfigMap", "redis")["data"][key])
    )
    assert "maxmemory 256mb" in cluster.one("ConfigMap", "redis")["data"][key]


def test_the_pods_get_the_cluster_scripts_beside_lib_sh(cluster: Rendered) -> None:
    (files,) = [v for v in pod_spec(cluster.redis)["volumes"] if v["name"] == "files"]  # type: ignore[index]
    paths = {item["path"] for item in files["configMap"]["items"]}
    for script in CLUSTER_SCRIPTS_DIR.glob("*.sh"):
        assert f"scripts/{script.name}" in paths
    assert "scripts/lib.sh" in paths
    readiness = container(cluster.redis, "redis")["readinessProbe"]["exec"]["command"]
    assert readiness == ["sh", "/opt/sessionlib/scripts/cluster-probe.sh", "cluster-ready"]
    prestop = container(cluster.redis, "redis")["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[-1].endswith("exec sh /opt/sessionlib/scripts/cluster-prestop.sh")


def test_every_variable_a_cluster_script_requires_is_set_by_the_pod_spec(
    cluster: Rendered,
) -> None:
    set_by_chart = {entry["name"] for entry in container(cluster.redis, "redis")["env"]}
    required = {
        match
        for script in CLUSTER_SCRIPTS_DIR.glob("*.sh")
        for match in re.findall(r"\$\{([A-Z_]+):\?", script.read_text())
    }
    assert required
    assert required <= set_by_chart, f"not set by the chart: {sorted(required - set_by_chart)}"


# --- the services -----------------------------------------------------------------------------


def test_both_services_reach_the_cluster_through_every_node(cluster: Rendered) -> None:
    nodes = env_of(cluster.redis, "redis")["REDIS_NODES"].split()
    for component in ("gateway", "cart"):
        env = env_of(cluster.one("Deployment", component), component)
        assert env["SESSIONLIB_REDIS__MODE"] == "cluster"
        assert json.loads(env["SESSIONLIB_REDIS__CLUSTER_NODES"]) == nodes
        assert env["SESSIONLIB_REDIS__USERNAME"] == "sessionlib"
        assert env["SESSIONLIB_REDIS__PASSWORD"]["secretKeyRef"]["key"] == "sessionlib-password"
        assert not any("SENTINEL" in name or "MASTER_NAME" in name for name in env)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_services_cluster_environment_is_accepted_by_sessionlib_prod(
    tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(with_cluster(tls=TLS) if tls else CLUSTER)
    for key, value in env_of(rendered.one("Deployment", "cart"), "cart").items():
        monkeypatch.setenv(key, "from-a-secret" if isinstance(value, dict) else value)

    settings = load_settings()

    assert settings.profile == "prod"
    assert settings.redis.mode == "cluster"
    assert len(settings.redis.cluster_nodes) == 6
    assert settings.redis.tls.enabled is tls


def test_tls_and_acl_reach_the_cluster_nodes_as_in_sentinel_mode() -> None:
    rendered = render(with_cluster(tls={**TLS, "authClients": "yes"}))
    env = env_of(rendered.redis, "redis")
    assert env["TLS_ENABLED"] == "true" and env["TLS_AUTH_CLIENTS"] == "yes"
    assert {"ADMIN_PASSWORD", "REPLICA_PASSWORD", "SESSIONLIB_PASSWORD"} <= set(env)
    exporter = env_of(rendered.redis, "redis-exporter")
    assert exporter["REDIS_ADDR"].startswith("rediss://$(POD_NAME).")
    assert exporter["REDIS_USER"] == "exporter"
    for component in ("gateway", "cart"):
        app = env_of(rendered.one("Deployment", component), component)
        assert app["SESSIONLIB_REDIS__TLS__CA_FILE"] == "/etc/sessionlib/tls/ca.crt"
        assert app["SESSIONLIB_REDIS__TLS__CERT_FILE"] == "/etc/sessionlib/tls/tls.crt"


# --- disruption, scheduling, network ------------------------------------------------------------


def test_a_drain_takes_one_cluster_pod_at_a_time_and_anti_affinity_spans_every_node(
    cluster: Rendered,
) -> None:
    budget = cluster.one("PodDisruptionBudget", "redis")
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": budget["spec"]["selector"],
    }
    pods = labels(cluster.redis["spec"]["template"])
    selector = budget["spec"]["selector"]["matchLabels"]
    assert all(pods[k] == v for k, v in selector.items())
    rendered = render(with_cluster(redis={"mode": "cluster", "antiAffinity": "hard"}))
    (term,) = pod_spec(rendered.redis)["affinity"]["podAntiAffinity"][  # type: ignore[index]
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    # Every cluster pod repels every other: no Kubernetes node holds a master and its replica.
    assert term["labelSelector"]["matchLabels"] == selector
    assert term["topologyKey"] == "kubernetes.io/hostname"


def test_only_cluster_pods_reach_the_cluster_bus(cluster: Rendered) -> None:
    policy = cluster.one("NetworkPolicy", "redis")
    clients, bus, metrics = policy["spec"]["ingress"]
    assert [p["port"] for p in clients["ports"]] == ["redis"]
    assert [p["port"] for p in bus["ports"]] == ["cluster-bus"]
    (peer,) = bus["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    assert [p["port"] for p in metrics["ports"]] == ["exp-redis"]


def test_cluster_nodes_are_scraped_under_the_job_the_shared_cluster_rules_select() -> None:
    rendered = render(with_cluster(metrics={"serviceMonitor": {"enabled": True}}))
    monitor = next(m for m in rendered.of_kind("ServiceMonitor") if "redis" in str(m["metadata"]))
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "exp-redis"
    assert endpoint["relabelings"][0]["replacement"] == "redis-cluster"
    rules = (CHART_DIR / "files" / "prometheus" / "redis-cluster.rules.yml").read_text()
    assert 'job="redis-cluster"' in rules


def test_the_notes_tell_how_to_check_the_cluster(cluster: Rendered) -> None:
    assert "cluster-check.sh" in cluster.notes
    assert "Sentinel" not in cluster.notes


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"redis": {"mode": "cluster", "minReplicasToWrite": 2}},
            "redis.minReplicasToWrite 2 needs at least as many replicas per shard",
        ),
        (
            {"redis": {"mode": "cluster"}, "haproxy": {"enabled": True}},
            "haproxy.enabled is a master endpoint for Sentinel mode",
        ),
    ],
)
def test_cluster_values_that_cannot_work_are_refused_by_name(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_fewer_than_three_shards_are_refused_by_the_schema() -> None:
    with pytest.raises(helm.HelmValuesError, match="/redis/cluster/shards"):
        render({"redis": {"mode": "cluster", "cluster": {"shards": 2}}})


def test_a_scale_in_is_refused_until_the_shards_that_go_were_drained(tmp_path: Path) -> None:
    running = {"spec": {"replicas": 8}}  # 4 shards installed

    with pytest.raises(helm.HelmRenderError) as refused:
        render_with_lookup(CLUSTER, STATEFULSET_LOOKUP, running, tmp_path / "refused")
    allowed = render_with_lookup(
        with_cluster(redis={"mode": "cluster", "cluster": {"allowScaleIn": True}}),
        STATEFULSET_LOOKUP,
        running,
        tmp_path / "allowed",
    )
    scaled_out = render_with_lookup(
        with_cluster(redis={"mode": "cluster", "cluster": {"shards": 5}}),
        STATEFULSET_LOOKUP,
        running,
        tmp_path / "out",
    )

    assert "redis.cluster.shards 3 would remove 2 of the 8 running cluster pods" in str(
        refused.value
    )
    assert "cluster-drain.sh 3" in str(refused.value)
    assert allowed.redis["spec"]["replicas"] == 6
    assert scaled_out.redis["spec"]["replicas"] == 10


def test_the_sentinel_only_checks_do_not_hold_a_cluster_back() -> None:
    # Three replicas per shard may all be required to acknowledge: redis.replicas (Sentinel's
    # node count, 3) has no say in cluster mode.
    rendered = render(
        {
            "redis": {
                "mode": "cluster",
                "minReplicasToWrite": 3,
                "cluster": {"replicasPerShard": 3},
                "coldStartWaitSeconds": 600,
            }
        }
    )
    assert rendered.redis["spec"]["replicas"] == 12
