"""The Helm chart as a team would install it: strict lint, rendering with the values people
change, every manifest valid for Kubernetes 1.29 and 1.33, and the production properties."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from sessionlib import load_settings
from tests.helm.chart import (
    CHART_DIR,
    CLUSTER_SCRIPTS_DIR,
    CRD_KINDS,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    SCRIPTS_DIR,
    K8sObject,
    Rendered,
    container,
    labels,
    lint,
    pod_spec,
    render,
    render_with_cluster_secret,
    render_with_lookup,
    secret_values,
)
from tests.helm.pod import ACL_USERS

FULLNAME = f"{RELEASE}-sessionlib-ha"
HEADLESS = f"{FULLNAME}-redis-headless"
RULE_GROUP = {"name": "extra", "rules": [{"alert": "Extra", "expr": "vector(1)"}]}

# The values people change, one variation each, plus everything optional at once.
VARIATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tls": {"tls": {"enabled": True, "existingSecret": "shop-redis-tls"}},
    "tls-client-certificates": {
        "tls": {"enabled": True, "existingSecret": "shop-redis-tls", "authClients": "yes"}
    },
    "network-policy-off": {"networkPolicy": {"enabled": False}},
    "existing-secret": {
        "auth": {
            "existingSecret": "shop-redis-auth",
            "existingSecretKeys": {
                "admin": "admin",
                "sessionlib": "app",
                "replica": "replica",
                "sentinel": "sentinel",
                "exporter": "exporter",
            },
        }
    },
    "five-replicas": {"redis": {"replicas": 5}},
    "cluster": {"redis": {"mode": "cluster"}},
    "cluster-tls-four-shards-monitored": {
        "redis": {"mode": "cluster", "cluster": {"shards": 4}},
        "tls": {"enabled": True, "existingSecret": "shop-redis-tls", "authClients": "yes"},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "dev-without-auth": {"auth": {"enabled": False}, "sessionlib": {"profile": "dev"}},
    "everything-optional-on": {
        "global": {"imageRegistry": "mirror.example.com", "imagePullSecrets": [{"name": "pull"}]},
        "redis": {
            "antiAffinity": "hard",
            "persistence": {"enabled": False},
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "redis"}},
                }
            ],
            "extraConfig": "latency-monitor-threshold 100",
        },
        "sentinel": {"extraConfig": "sentinel deny-scripts-reconfig yes"},
        "sessionlib": {
            "session": {"idle_timeout_seconds": 600, "durability": {"replicas": 2}},
            "redis": {"retry": {"deadline_seconds": 3}},
            "signingKeys": {"existingSecret": "shop-signing-keys"},
        },
        "gateway": {
            "ingress": {"enabled": True, "className": "nginx", "tls": [{"secretName": "web"}]},
            "extraEnv": [{"name": "FORWARDED_ALLOW_IPS", "value": "*"}],
        },
        "networkPolicy": {"gatewayFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "prometheusRule": {"enabled": True, "additionalGroups": [RULE_GROUP]},
        },
    },
}


@pytest.fixture(scope="module", params=sorted(VARIATIONS))
def variation(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    return request.param, render(VARIATIONS[request.param])


def env_of(workload: K8sObject, name: str) -> dict[str, Any]:
    """A container's env as {name: value or valueFrom}."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload, name)["env"]}


def selects(selector: dict[str, str], obj_labels: dict[str, str]) -> bool:
    return all(obj_labels.get(k) == v for k, v in selector.items())


# --- lint and render --------------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(VARIATIONS))
def test_strict_lint_is_clean(name: str, kube_version: str) -> None:
    report = lint(VARIATIONS[name], kube_version)
    # Severity 1 is INFO (only "icon is recommended"); strict lint fails on anything above.
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and findings == [], findings or report["errors"]


def test_lint_reports_values_the_schema_refuses() -> None:
    report = lint({"redis": {"replicas": 2, "image": {"tag": "latest"}}}, KUBE_VERSIONS[-1])
    errors = " ".join(m["error"] for m in report["messages"] if m["severity"] == 3)
    assert "/redis/replicas" in errors and "/redis/image/tag" in errors


def test_a_down_after_that_leaves_sentinel_no_time_to_reach_a_new_master_is_refused() -> None:
    with pytest.raises(helm.HelmValuesError, match="/sentinel/downAfterMilliseconds"):
        render({"sentinel": {"downAfterMilliseconds": 1000}})


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes_in_strict_mode(
    variation: tuple[str, Rendered], kube_version: str
) -> None:
    _, rendered = variation
    for obj in rendered.objects:
        if obj["kind"] in CRD_KINDS:
            continue  # no schema ships offline; test_service_monitors_* check them instead
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_every_object_lives_in_the_release_namespace(variation: tuple[str, Rendered]) -> None:
    _, rendered = variation
    assert {o["metadata"]["namespace"] for o in rendered.objects} == {NAMESPACE}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sentinel": {"quorum": 4}}, "sentinel.quorum 4 is more than there are sentinels"),
        ({"redis": {"minReplicasToWrite": 3}}, "redis.minReplicasToWrite 3 needs more than 3"),
        ({"redis": {"pdb": {"minAvailable": 3}}}, "redis.pdb.minAvailable 3 must be below"),
        ({"auth": {"enabled": False}}, "sessionlib.profile prod refuses Redis and Sentinel"),
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.existingSecret"),
        (
            {"redis": {"maxmemory": "384mb"}},
            "redis.maxmemory 384mb is more than half of redis.resources.limits.memory 512Mi",
        ),
        (
            {"redis": {"maxmemory": "200mb", "resources": {"limits": {"memory": None}}}},
            "redis.maxmemory 200mb needs redis.resources.limits.memory",
        ),
        ({"redis": {"extraConfig": "maxmemory 1gb"}}, "redis.extraConfig may not set maxmemory"),
        (
            {"redis": {"extraConfig": "client-output-buffer-limit replica 1gb 1gb 0"}},
            "redis.extraConfig may not set maxmemory, client-output-buffer-limit replica",
        ),
        (
            {"redis": {"terminationGracePeriodSeconds": 45}},
            "redis.terminationGracePeriodSeconds 45 is shorter than stopping a Redis pod may take",
        ),
        (
            {"redis": {"preStopTimeoutSeconds": 45}},
            "redis.terminationGracePeriodSeconds 60 is shorter than stopping a Redis pod may take:"
            " redis.preStopTimeoutSeconds 45",
        ),
        (
            {"redis": {"coldStartWaitSeconds": 90}},
            "sentinel.startupProbe allows 150 s (periodSeconds x failureThreshold), not more than"
            " twice redis.coldStartWaitSeconds 90",
        ),
    ],
)
def test_values_that_cannot_work_together_are_refused_by_name(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


# --- Redis and Sentinel -----------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [3, 4, 5, 7])
def test_sentinel_quorum_is_a_majority_of_the_redis_nodes(replicas: int) -> None:
    rendered = render({"redis": {"replicas": replicas}})
    env = env_of(rendered.redis, "sentinel")
    assert rendered.redis["spec"]["replicas"] == replicas
    assert int(env["QUORUM"]) == replicas // 2 + 1
    assert len(env["SENTINELS"].split()) == replicas


def test_redis_and_sentinel_announce_the_pods_stable_dns_name(rendered: Rendered) -> None:
    headless = next(s for s in rendered.of_kind("Service") if s["metadata"]["name"] == HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    # A pod's name must resolve while it starts and fails readiness: exactly when needed.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert rendered.redis["spec"]["serviceName"] == HEADLESS
    domain = f"{HEADLESS}.{NAMESPACE}.svc.cluster.local"
    for name in ("redis", "sentinel"):
        env = env_of(rendered.redis, name)
        assert env["ANNOUNCE_HOST"] == f"$(POD_NAME).{domain}"
        assert env["REDIS_NODES"].split() == [
            f"{FULLNAME}-redis-{i}.{domain}:6379" for i in range(3)
        ]
        assert env["SENTINELS"].split() == [
            f"{FULLNAME}-redis-{i}.{domain}:26379" for i in range(3)
        ]


def test_redis_runs_the_shared_config_templates_unchanged(rendered: Rendered) -> None:
    data = rendered.one("ConfigMap", "redis")["data"]
    for name in ("redis.conf", "sentinel.conf"):
        shared = (CHART_DIR.parents[1] / "deploy" / "redis" / name).read_text()
        assert data[name] == shared, f"{name} differs from deploy/redis/{name}"


def test_production_defaults_for_replication_and_failure_detection(rendered: Rendered) -> None:
    env = env_of(rendered.redis, "redis")
    assert env["MIN_REPLICAS_TO_WRITE"] == "1"
    assert env["DOWN_AFTER_MS"] == "5000"
    assert redis_directives(rendered)["maxmemory-policy"] == ["noeviction"]


def redis_directives(rendered: Rendered) -> dict[str, list[str]]:
    """What the chart appends to the shared redis.conf, as {directive: arguments}."""
    text = rendered.one("ConfigMap", "redis")["data"]["redis-extra.conf"]
    lines = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    return {words[0]: words[1:] for words in lines}


REDIS_UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 1024**2, "g": 10**9, "gb": 1024**3}
KUBERNETES_UNITS = {"": 1, "M": 10**6, "G": 10**9, "Mi": 1024**2, "Gi": 1024**3}


def size_bytes(size: str, units: dict[str, int]) -> int:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", size)
    assert match is not None, size
    return int(float(match[1]) * units[match[2]])


@pytest.mark.parametrize("limit", ["512Mi", "1.5Gi", "2G"])
def test_redis_memory_follows_the_container_limit_with_room_for_replicas_and_a_fork(
    limit: str,
) -> None:
    rendered = render({"redis": {"resources": {"limits": {"memory": limit}}}})

    directives = redis_directives(rendered)
    memory = size_bytes(limit, KUBERNETES_UNITS)
    data = size_bytes(directives["maxmemory"][0], REDIS_UNITS)
    kind, hard, soft, seconds = directives["client-output-buffer-limit"]
    hard_bytes, soft_bytes = size_bytes(hard, REDIS_UNITS), size_bytes(soft, REDIS_UNITS)
    # Half the limit is data, a quarter the replica output buffer (which maxmemory does not
    # count), and a quarter stays free for the copy-on-write of a fork.
    assert kind == "replica"
    assert data == memory // 2
    assert hard_bytes == memory // 4 and soft_bytes == hard_bytes // 2 and seconds == "60"
    assert data + hard_bytes <= memory * 3 // 4
    container_limit = container(rendered.redis, "redis")["resources"]["limits"]["memory"]
    assert container_limit == limit


def test_a_smaller_maxmemory_is_kept_and_the_buffer_still_follows_the_limit() -> None:
    directives = redis_directives(render({"redis": {"maxmemory": "100mb"}}))
    assert directives["maxmemory"] == ["100mb"]
    assert directives["client-output-buffer-limit"] == ["replica", "128mb", "64mb", "60"]


def test_without_a_memory_limit_redis_keeps_its_own_memory_defaults() -> None:
    rendered = render({"redis": {"resources": {"limits": {"memory": None}}}})
    directives = redis_directives(rendered)
    assert "maxmemory" not in directives and "client-output-buffer-limit" not in directives
    assert "redis.resources.limits.memory" in rendered.notes


def test_the_master_hands_over_before_its_pod_stops(rendered: Rendered) -> None:
    hook = container(rendered.redis, "redis")["lifecycle"]["preStop"]["exec"]["command"]
    assert "redis-prestop.sh" in " ".join(hook)
    sentinel_hook = container(rendered.redis, "sentinel")["lifecycle"]["preStop"]["exec"]
    assert "sentinel-prestop.sh" in " ".join(sentinel_hook["command"])


def test_the_grace_period_covers_both_prestop_hooks_and_redis_shutdown(
    rendered: Rendered,
) -> None:
    pod = pod_spec(rendered.redis)
    assert pod is not None
    # Both hooks run side by side, each up to PRESTOP_TIMEOUT_SECONDS; then Redis shuts down
    # within shutdown-timeout; the rest is the margin for the hook's last calls and the fsync.
    for name in ("redis", "sentinel"):
        assert env_of(rendered.redis, name)["PRESTOP_TIMEOUT_SECONDS"] == "30"
    shutdown = int(redis_directives(rendered)["shutdown-timeout"][0])
    assert pod["terminationGracePeriodSeconds"] >= 30 + shutdown + 10


def test_both_prestop_hooks_write_to_the_container_log(rendered: Rendered) -> None:
    # Kubernetes logs no hook output: each hook sends its own to PID 1's stdout (the server).
    for name, script in (("redis", "redis-prestop.sh"), ("sentinel", "sentinel-prestop.sh")):
        command = container(rendered.redis, name)["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:2] == ["sh", "-c"], name
        assert command[2] == (
            "if [ -w /proc/1/fd/1 ]; then exec >/proc/1/fd/1 2>&1; fi;"
            f" exec sh /opt/sessionlib/scripts/{script}"
        )


def test_a_cold_start_cannot_deadlock_on_ordered_pod_creation(rendered: Rendered) -> None:
    # Readiness needs a Sentinel quorum, which needs the other pods to exist.
    assert rendered.redis["spec"]["podManagementPolicy"] == "Parallel"


# --- probes -----------------------------------------------------------------------------------

PORT_ENV_OF_MODE = {
    "cluster-ready": "REDIS_PORT",
    "redis-alive": "REDIS_PORT",
    "redis-ready": "REDIS_PORT",
    "sentinel-alive": "SENTINEL_PORT",
    "sentinel-ready": "SENTINEL_PORT",
}


PROBE_SCRIPTS = ("/opt/sessionlib/scripts/probe.sh", "/opt/sessionlib/scripts/cluster-probe.sh")


def test_every_probe_points_at_a_port_its_container_declares(
    variation: tuple[str, Rendered],
) -> None:
    name, rendered = variation
    checked = 0
    for workload, c in rendered.containers():
        ports = {p["containerPort"] for p in c.get("ports", [])}
        names = {p["name"] for p in c.get("ports", [])}
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            checked += 1
            where = f"{name}: {workload['metadata']['name']}/{c['name']} {kind}"
            handler = probe.get("httpGet") or probe.get("tcpSocket")
            if handler is not None:
                assert handler["port"] in names | ports, where
            else:
                # probe.sh MODE talks to the port in the container's env: it must be declared.
                command = probe["exec"]["command"]
                assert command[0] == "sh", where
                assert command[1] in PROBE_SCRIPTS, where
                assert int(env[PORT_ENV_OF_MODE[command[2]]]) in ports, where
    # Sentinel mode: 3 Redis, 3 Sentinel, 2 exporters, 3 each service; cluster mode has no
    # Sentinel and one exporter.
    assert checked >= 10


def test_redis_readiness_needs_replication_and_sentinel_readiness_a_quorum(
    rendered: Rendered,
) -> None:
    redis_probe = container(rendered.redis, "redis")["readinessProbe"]["exec"]["command"]
    sentinel_probe = container(rendered.redis, "sentinel")["readinessProbe"]["exec"]["command"]
    assert redis_probe[-1] == "redis-ready"
    assert sentinel_probe[-1] == "sentinel-ready"
    for component in ("gateway", "cart"):
        app = container(rendered.one("Deployment", component), component)
        assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert app["livenessProbe"]["httpGet"]["path"] == "/healthz"


# --- scheduling and disruption ----------------------------------------------------------------


@pytest.mark.parametrize(("mode", "rule"), [("soft", "preferred"), ("hard", "required")])
def test_pods_of_a_component_keep_apart_across_nodes(mode: str, rule: str) -> None:
    rendered = render({c: {"antiAffinity": mode} for c in ("redis", "gateway", "cart")})
    for workload in [rendered.redis, *rendered.of_kind("Deployment")]:
        pod = pod_spec(workload)
        assert pod is not None
        terms = pod["affinity"]["podAntiAffinity"][f"{rule}DuringSchedulingIgnoredDuringExecution"]
        term = terms[0]["podAffinityTerm"] if rule == "preferred" else terms[0]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        own = labels(workload["spec"]["template"])
        assert selects(term["labelSelector"]["matchLabels"], own)
        assert (
            term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"]
            == own["app.kubernetes.io/component"]
        )


@pytest.mark.parametrize("replicas", [3, 5])
def test_redis_disruption_budget_keeps_a_sentinel_majority_yet_allows_drains(
    replicas: int,
) -> None:
    rendered = render({"redis": {"replicas": replicas}})
    budget = rendered.one("PodDisruptionBudget", "redis")
    quorum = int(env_of(rendered.redis, "sentinel")["QUORUM"])
    assert quorum <= budget["spec"]["minAvailable"] < replicas
    assert selects(
        budget["spec"]["selector"]["matchLabels"], labels(rendered.redis["spec"]["template"])
    )


def test_service_disruption_budgets_never_block_a_drain(rendered: Rendered) -> None:
    for component in ("gateway", "cart"):
        budget = rendered.one("PodDisruptionBudget", component)
        assert budget["spec"]["maxUnavailable"] >= 1
        pods = labels(rendered.one("Deployment", component)["spec"]["template"])
        assert selects(budget["spec"]["selector"]["matchLabels"], pods)


# --- security ---------------------------------------------------------------------------------


def test_no_container_runs_as_root_or_keeps_privileges(variation: tuple[str, Rendered]) -> None:
    name, rendered = variation
    for workload, c in rendered.containers():
        pod = pod_spec(workload)
        assert pod is not None
        where = f"{name}: {workload['metadata']['name']}/{c['name']}"
        effective = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        assert effective.get("runAsNonRoot") is True, where
        assert effective.get("runAsUser", 0) != 0, where
        assert effective.get("allowPrivilegeEscalation") is False, where
        assert effective.get("readOnlyRootFilesystem") is True, where
        assert effective["capabilities"]["drop"] == ["ALL"], where
        assert effective["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where


def test_secrets_are_never_inlined_in_configmaps_or_env(variation: tuple[str, Rendered]) -> None:
    name, rendered = variation
    passwords = [v for s in rendered.of_kind("Secret") for v in secret_values(s).values()]
    configmaps = json.dumps([c.get("data", {}) for c in rendered.of_kind("ConfigMap")])
    for password in passwords:
        assert password not in configmaps, name
    for _, c in rendered.containers():
        for entry in c.get("env", []):
            if re.search(r"PASSWORD|SIGNING_KEYS", entry["name"]):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name}: {entry['name']}"


def test_generated_passwords_are_one_per_acl_user_long_and_safe_for_sentinel_configs(
    rendered: Rendered,
) -> None:
    secret = secret_values(rendered.one("Secret", "auth"))
    assert set(secret) == {f"{user}-password" for user in ACL_USERS}
    for password in secret.values():
        assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert len(set(secret.values())) == len(ACL_USERS)


def test_an_existing_secret_is_used_and_none_is_generated() -> None:
    rendered = render(VARIATIONS["existing-secret"])
    assert rendered.of_kind("Secret") == []
    env = env_of(rendered.redis, "redis")
    for user, key in VARIATIONS["existing-secret"]["auth"]["existingSecretKeys"].items():
        assert env[f"{user.upper()}_PASSWORD"] == {
            "secretKeyRef": {"name": "shop-redis-auth", "key": key}
        }
    gateway = env_of(rendered.one("Deployment", "gateway"), "gateway")
    assert gateway["SESSIONLIB_REDIS__PASSWORD"] == env["SESSIONLIB_PASSWORD"]


def test_every_client_logs_in_as_its_own_acl_user(rendered: Rendered) -> None:
    for component in ("gateway", "cart"):
        env = env_of(rendered.one("Deployment", component), component)
        assert env["SESSIONLIB_REDIS__USERNAME"] == env["SESSIONLIB_REDIS__SENTINEL_USERNAME"]
        assert env["SESSIONLIB_REDIS__USERNAME"] == "sessionlib"
        for name in ("SESSIONLIB_REDIS__PASSWORD", "SESSIONLIB_REDIS__SENTINEL_PASSWORD"):
            assert env[name]["secretKeyRef"]["key"] == "sessionlib-password"
    for exporter in ("redis-exporter", "sentinel-exporter"):
        env = env_of(rendered.redis, exporter)
        assert env["REDIS_USER"] == "exporter"
        assert env["REDIS_PASSWORD"]["secretKeyRef"]["key"] == "exporter-password"
        # CONFIG GET would hand it masterauth; the exporter ACL user may not run it anyway.
        assert env["REDIS_EXPORTER_CONFIG_COMMAND"] == "-"
    # The pod scripts render the ACL files from every user's password.
    redis_env = env_of(rendered.redis, "redis")
    assert {f"{user.upper()}_PASSWORD" for user in ACL_USERS} <= set(redis_env)
    assert "REDIS_PASSWORD" not in redis_env


# Where a secret would be on a command line: redis-cli -a/--pass, redis-server
# --requirepass/--masterauth, Sentinel auth-pass, redis_exporter --redis.password.
SECRET_ON_COMMAND_LINE = re.compile(
    r"(?<![\w-])(-a|--pass|--requirepass|--masterauth|--redis\.password)(?=[ =])"
)


def test_no_secret_is_ever_on_a_command_line(variation: tuple[str, Rendered]) -> None:
    name, rendered = variation
    for workload, c in rendered.containers():
        argv = " ".join([*c.get("command", []), *c.get("args", [])])
        probes = [c.get(p) for p in ("startupProbe", "livenessProbe", "readinessProbe")]
        hooks = json.dumps([c.get("lifecycle"), *probes])
        where = f"{name}: {workload['metadata']['name']}/{c['name']}"
        assert not SECRET_ON_COMMAND_LINE.search(argv + hooks), where
    assert not SECRET_ON_COMMAND_LINE.search(rendered.notes), name
    for script in [*SCRIPTS_DIR.glob("*.sh"), *CLUSTER_SCRIPTS_DIR.glob("*.sh")]:
        for line in script.read_text().splitlines():
            if "redis-cli" in line or "redis-server" in line or "redis-sentinel" in line:
                assert not SECRET_ON_COMMAND_LINE.search(line), f"{script.name}: {line}"


def test_every_image_is_pinned_and_redis_is_the_official_image(
    variation: tuple[str, Rendered],
) -> None:
    name, rendered = variation
    for _, c in rendered.containers():
        image = c["image"]
        reference = image.rsplit("/", 1)[-1]
        assert "@sha256:" in image or ":" in reference, f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image}"
    redis_image = container(rendered.redis, "redis")["image"]
    assert re.fullmatch(r"(.+/)?redis:\d+\.\d+\.\d+-bookworm", redis_image), redis_image
    assert "bitnami" not in json.dumps(rendered.objects)


def test_network_policies_admit_only_the_clients_each_component_has(rendered: Rendered) -> None:
    redis_policy = rendered.one("NetworkPolicy", "redis")
    clients = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for peer in redis_policy["spec"]["ingress"][0]["from"]
    ]
    assert clients == ["redis", "gateway", "cart"]
    assert {p["port"] for p in redis_policy["spec"]["ingress"][0]["ports"]} == {"redis", "sentinel"}
    cart_policy = rendered.one("NetworkPolicy", "cart")
    assert (
        cart_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"][
            "app.kubernetes.io/component"
        ]
        == "gateway"
    )
    # The entry point stays open unless gatewayFrom narrows it.
    assert "from" not in rendered.one("NetworkPolicy", "gateway")["spec"]["ingress"][0]
    assert render(VARIATIONS["network-policy-off"]).of_kind("NetworkPolicy") == []


# --- the services -----------------------------------------------------------------------------


def test_services_reach_redis_through_every_sentinel(rendered: Rendered) -> None:
    sentinels = env_of(rendered.redis, "sentinel")["SENTINELS"].split()
    for component in ("gateway", "cart"):
        env = env_of(rendered.one("Deployment", component), component)
        assert env["SESSIONLIB_REDIS__MODE"] == "sentinel"
        assert json.loads(env["SESSIONLIB_REDIS__SENTINELS"]) == sentinels
        assert env["SESSIONLIB_REDIS__MASTER_NAME"] == "mymaster"
    gateway = env_of(rendered.one("Deployment", "gateway"), "gateway")
    cart_service = rendered.one("Service", "cart")
    assert gateway["GATEWAY_CART_URL"] == (
        f"http://{cart_service['metadata']['name']}:{cart_service['spec']['ports'][0]['port']}"
    )


@pytest.mark.parametrize("name", ["defaults", "tls", "everything-optional-on"])
def test_the_services_environment_is_accepted_by_sessionlib_prod(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(VARIATIONS[name])
    env = env_of(rendered.one("Deployment", "cart"), "cart")
    for key, value in env.items():
        if isinstance(value, dict):  # from a Secret: any value a Secret could hold
            value = '["k1"]' if key.endswith("SIGNING_KEYS") else "from-a-secret"
        monkeypatch.setenv(key, value)

    settings = load_settings()

    assert settings.profile == "prod"
    assert settings.redis.mode == "sentinel"
    assert len(settings.redis.sentinels) == 3
    if name == "everything-optional-on":
        assert settings.session.idle_timeout_seconds == 600
        assert settings.session.durability.replicas == 2
        assert settings.redis.retry.deadline_seconds == 3
    if name.startswith("tls"):
        assert settings.redis.tls.enabled and settings.redis.tls.verify_hostname


def test_tls_reaches_every_connection() -> None:
    rendered = render(VARIATIONS["tls"])
    for name in ("redis", "sentinel"):
        assert env_of(rendered.redis, name)["TLS_ENABLED"] == "true"
    exporter = env_of(rendered.redis, "redis-exporter")
    assert exporter["REDIS_ADDR"].startswith("rediss://$(POD_NAME).")
    for component in ("gateway", "cart"):
        env = env_of(rendered.one("Deployment", component), component)
        assert env["SESSIONLIB_REDIS__TLS__CA_FILE"] == "/etc/sessionlib/tls/ca.crt"
    volumes = pod_spec(rendered.redis)["volumes"]  # type: ignore[index]
    assert {"secretName": "shop-redis-tls", "defaultMode": 0o440} in [
        v.get("secret") for v in volumes
    ]


def test_every_pod_that_mounts_the_tls_secret_can_read_it_as_its_own_user() -> None:
    rendered = render(VARIATIONS["tls-client-certificates"])
    for workload in [rendered.redis, *rendered.of_kind("Deployment")]:
        pod = pod_spec(workload)
        assert pod is not None
        (tls,) = [v["secret"] for v in pod["volumes"] if v["name"] == "tls"]
        # 0440: owner root, group fsGroup; the pod's user reads it through that group.
        assert tls["defaultMode"] == 0o440
        context = pod["securityContext"]
        assert context["fsGroup"] == context["runAsGroup"], workload["metadata"]["name"]


SIGNING_KEYS_LOOKUP = '(lookup "v1" "Secret" .Release.Namespace $keys.existingSecret)'


def test_rotated_signing_keys_change_the_services_checksum_so_they_roll(tmp_path: Path) -> None:
    values = {"sessionlib": {"signingKeys": {"existingSecret": "session-keys"}}}

    def checksums(keys: str) -> set[str]:
        data = {"signing-keys": base64.b64encode(keys.encode()).decode()}
        rendered = render_with_lookup(
            values, SIGNING_KEYS_LOOKUP, {"data": data}, tmp_path / str(len(keys))
        )
        services = rendered.of_kind("Deployment")
        assert {s["metadata"]["name"] for s in services} == {
            f"{RELEASE}-sessionlib-ha-{c}" for c in ("gateway", "cart")
        }
        return {
            s["spec"]["template"]["metadata"]["annotations"]["checksum/signing-keys"]
            for s in services
        }

    before, after = checksums('["old-key"]'), checksums('["new-key","old-key"]')

    assert len(before) == len(after) == 1
    assert before != after
    assert "checksum/signing-keys" not in json.dumps(render().objects)


def test_a_renewed_certificate_changes_the_pods_checksum_so_they_roll(tmp_path: Path) -> None:
    def checksums(certificate: str) -> set[str]:
        secret = {"tls.crt": certificate, "tls.key": "a2V5", "ca.crt": "Y2E="}
        rendered = render_with_cluster_secret(VARIATIONS["tls"], secret, tmp_path / certificate)
        pods = [rendered.redis, *rendered.of_kind("Deployment")]
        return {p["spec"]["template"]["metadata"]["annotations"]["checksum/tls"] for p in pods}

    before, after = checksums("b2xk"), checksums("bmV3")

    assert len(before) == len(after) == 1
    assert before != after
    assert "checksum/tls" not in json.dumps(render().objects)


# The one `lookup` of the auth Secret (templates/_helpers.tpl, "sessionlib-ha.auth.clusterData").
AUTH_SECRET_LOOKUP = (
    '(lookup "v1" "Secret" .Release.Namespace (include "sessionlib-ha.auth.secretName" .))'
)


def render_with_cluster_auth_secret(
    values: dict[str, Any], secret_data: dict[str, str], workdir: Path
) -> Rendered:
    """The chart rendered as `helm upgrade` would in a cluster that holds the auth Secret (the
    chart's own or auth.existingSecret) with `secret_data`."""
    return render_with_cluster_secret(values, secret_data, workdir, lookup=AUTH_SECRET_LOOKUP)


def auth_checksums(rendered: Rendered) -> dict[str, str]:
    """Each workload's checksum/auth, by component."""
    checksums = {}
    for workload in [rendered.redis, *rendered.of_kind("Deployment")]:
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        checksums[labels(workload)["app.kubernetes.io/component"]] = annotations["checksum/auth"]
    return checksums


def cluster_passwords(admin: str, sessionlib: str) -> dict[str, str]:
    """An auth Secret's data as the chart names its keys, base64 like any Secret's."""
    plain = {u: f"{u}pw" for u in ACL_USERS} | {"admin": admin, "sessionlib": sessionlib}
    return {f"{u}-password": base64.b64encode(p.encode()).decode() for u, p in plain.items()}


def test_the_pods_carry_the_checksum_of_the_passwords_the_chart_generated(
    rendered: Rendered,
) -> None:
    data = rendered.one("Secret", "auth")["data"]
    # The random passwords are made once per render: the checksum is of the Secret's own.
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    assert auth_checksums(rendered)["redis"] == digest.hexdigest()


def test_a_changed_password_changes_the_pods_checksum_so_they_roll(tmp_path: Path) -> None:
    def rendered(name: str, admin: str, sessionlib: str) -> Rendered:
        data = cluster_passwords(admin, sessionlib)
        return render_with_cluster_auth_secret({}, data, tmp_path / name)

    before = rendered("before", admin="old", sessionlib="old")
    admin_changed = rendered("admin", admin="new", sessionlib="old")
    sessionlib_changed = rendered("sessionlib", admin="old", sessionlib="new")

    # The chart keeps the passwords the cluster holds, and checksums what it keeps.
    assert before.one("Secret", "auth")["data"] == cluster_passwords("old", "old")
    assert auth_checksums(admin_changed)["redis"] != auth_checksums(before)["redis"]
    assert auth_checksums(sessionlib_changed)["redis"] != auth_checksums(before)["redis"]
    # The services read only the sessionlib password: only its change rolls them.
    for service in ("gateway", "cart"):
        assert auth_checksums(admin_changed)[service] == auth_checksums(before)[service]
        assert auth_checksums(sessionlib_changed)[service] != auth_checksums(before)[service]


def test_a_changed_existing_secret_changes_the_pods_checksum_so_they_roll(
    tmp_path: Path,
) -> None:
    values = {"auth": {"existingSecret": "shop-redis-auth"}}

    before = render_with_cluster_auth_secret(values, cluster_passwords("a", "b"), tmp_path / "1")
    after = render_with_cluster_auth_secret(values, cluster_passwords("a", "c"), tmp_path / "2")

    assert before.of_kind("Secret") == []
    for component, checksum in auth_checksums(after).items():
        assert checksum != auth_checksums(before)[component], component
    # Offline (helm template, Argo CD) the Secret cannot be looked up: the checksum stays put.
    assert auth_checksums(render(values)) == auth_checksums(render(values))
    assert "checksum/auth" not in json.dumps(render(VARIATIONS["dev-without-auth"]).objects)


# --- metrics ----------------------------------------------------------------------------------


def test_exporters_scrape_both_redis_and_sentinel(rendered: Rendered) -> None:
    assert env_of(rendered.redis, "redis-exporter")["REDIS_ADDR"] == "redis://localhost:6379"
    assert env_of(rendered.redis, "sentinel-exporter")["REDIS_ADDR"] == "redis://localhost:26379"
    image = container(rendered.redis, "redis-exporter")["image"]
    assert re.fullmatch(r"docker\.io/oliver006/redis_exporter:v\d+\.\d+\.\d+", image)


def test_service_monitors_select_services_and_ports_that_exist() -> None:
    rendered = render(VARIATIONS["everything-optional-on"])
    monitors = rendered.of_kind("ServiceMonitor")
    assert len(monitors) == 3
    jobs = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prom"
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in rendered.of_kind("Service") if selects(selector, labels(s))]
        port_names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            jobs.add(endpoint["relabelings"][0]["replacement"])
    assert jobs == {"redis", "sentinel", "gateway", "cart"}


def test_prometheus_rule_carries_the_chart_rule_files_and_extra_groups(tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    shared = {"groups": [{"name": "sessions", "rules": [{"alert": "A", "expr": "up == 0"}]}]}
    (chart / "files/prometheus/sessions.rules.yml").write_text(yaml.safe_dump(shared))

    rule = render_chart(
        chart, {"metrics": {"prometheusRule": {"enabled": True, "additionalGroups": [RULE_GROUP]}}}
    )

    (prometheus_rule,) = rule.of_kind("PrometheusRule")
    assert [g["name"] for g in prometheus_rule["spec"]["groups"]] == ["sessions", "extra"]


def test_grafana_dashboards_become_configmaps_with_the_sidecar_label(tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    dashboard = {"title": "Sessions", "panels": []}
    (chart / "files/grafana/dashboards/sessions.json").write_text(json.dumps(dashboard))

    rendered = render_chart(chart, {})

    (configmap,) = [
        c for c in rendered.of_kind("ConfigMap") if labels(c).get("grafana_dashboard") == "1"
    ]
    assert json.loads(configmap["data"]["sessions.json"]) == dashboard


def test_an_enabled_prometheus_rule_without_any_rules_is_refused(tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    with pytest.raises(helm.HelmRenderError, match="no files/prometheus/"):
        render_chart(chart, {"metrics": {"prometheusRule": {"enabled": True}}})


def copy_chart(tmp_path: Path) -> Path:
    """A copy of the chart without rule files or dashboards, for a test to add its own."""
    chart = tmp_path / "sessionlib-ha"
    shutil.copytree(CHART_DIR, chart, symlinks=False)
    for folder in ("files/prometheus", "files/grafana/dashboards"):
        shutil.rmtree(chart / folder, ignore_errors=True)
        (chart / folder).mkdir(parents=True)
    return chart


def render_chart(chart: Path, values: dict[str, Any]) -> Rendered:
    with helm.Chart.load(chart) as loaded:
        files = loaded.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = [
        doc
        for path, text in files.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return Rendered(objects, "")


# --- what the user reads ----------------------------------------------------------------------


def test_notes_tell_how_to_reach_the_gateway_and_check_sentinel(rendered: Rendered) -> None:
    notes = rendered.notes
    assert f"port-forward service/{FULLNAME}-gateway 8080:8080" in notes
    assert f"exec {FULLNAME}-redis-0 -c sentinel" in notes
    assert "SENTINEL get-master-addr-by-name mymaster" in notes
    assert "SENTINEL ckquorum mymaster" in notes


def test_values_schema_types_every_value_in_values_yaml() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    untyped = list(_untyped(values, schema, schema, ""))
    assert untyped == []


def _untyped(value: Any, node: dict[str, Any], schema: dict[str, Any], path: str):
    """Paths in `value` that the schema node does not describe."""
    while "$ref" in node or "allOf" in node:
        ref = node["$ref"] if "$ref" in node else node["allOf"][0]["$ref"]
        node = schema["definitions"][ref.rsplit("/", 1)[-1]]
    if "type" not in node:
        yield path
    elif isinstance(value, dict) and "properties" in node:
        if node.get("additionalProperties", True) is not False:
            yield f"{path} (open object)"
        for key, child in value.items():
            if key not in node["properties"]:
                yield f"{path}.{key}"
            else:
                yield from _untyped(child, node["properties"][key], schema, f"{path}.{key}")
