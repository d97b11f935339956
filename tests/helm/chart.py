"""The Helm chart as the tests see it: rendered and linted in-process by helm-python-sdk
(Helm's own Go engine in a shared library, no helm binary), objects parsed into dicts."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "sessionlib-ha"
SCRIPTS_DIR = CHART_DIR / "files" / "scripts"
# The scripts of redis.mode cluster, mounted beside SCRIPTS_DIR's in the pods.
CLUSTER_SCRIPTS_DIR = CHART_DIR / "files" / "cluster"
RELEASE = "shop"
NAMESPACE = "sessions"
# The Kubernetes versions the issue asks for: the oldest and newest a team is likely to run.
KUBE_VERSIONS = ("1.29.0", "1.33.0")
# Kinds that come from CRDs, which kubernetes-validate ships no schema for.
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})

K8sObject = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """One `helm template`: every object, and NOTES.txt."""

    objects: list[K8sObject]
    notes: str

    def of_kind(self, kind: str) -> list[K8sObject]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> K8sObject:
        """The single object of `kind` (of one component, by its app.kubernetes.io label)."""
        found = [
            o
            for o in self.of_kind(kind)
            if component is None or labels(o).get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"want one {kind} of {component}, found {len(found)}"
        return found[0]

    @property
    def redis(self) -> K8sObject:
        return self.one("StatefulSet", "redis")

    def containers(self) -> Iterator[tuple[K8sObject, K8sObject]]:
        """(workload, container) for every container and init container of every pod."""
        for workload in self.objects:
            pod = pod_spec(workload)
            if pod is not None:
                for container in [*pod.get("initContainers", []), *pod["containers"]]:
                    yield workload, container


def render(values: Mapping[str, Any] | None = None, chart_dir: Path = CHART_DIR) -> Rendered:
    """The chart rendered as `helm install` would for release RELEASE in NAMESPACE.

    Offline: `lookup` finds nothing, so a generated Secret gets fresh passwords.
    """
    with helm.Chart.load(chart_dir) as chart:
        files = chart.render(dict(values or {}), name=RELEASE, namespace=NAMESPACE)
    objects: list[K8sObject] = []
    notes = ""
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(objects, notes)


# The one `lookup` of the TLS Secret (templates/_helpers.tpl, "sessionlib-ha.tls.secretData").
TLS_SECRET_LOOKUP = '(lookup "v1" "Secret" .Release.Namespace .Values.tls.existingSecret)'


def render_with_cluster_secret(
    values: Mapping[str, Any],
    secret_data: Mapping[str, str],
    workdir: Path,
    lookup: str = TLS_SECRET_LOOKUP,
) -> Rendered:
    """The chart rendered as `helm upgrade` would in a cluster that holds a Secret with
    `secret_data` (the TLS Secret unless `lookup` names another of the chart's lookups): a copy
    of the chart whose lookup of that Secret answers with it (offline, lookup finds nothing)."""
    return render_with_lookup(values, lookup, {"data": dict(secret_data)}, workdir)


def render_with_lookup(
    values: Mapping[str, Any], lookup: str, found: Mapping[str, Any], workdir: Path
) -> Rendered:
    """The chart rendered in a cluster where one of its lookups (the expression `lookup` in
    _helpers.tpl) finds the object `found`: a copy of the chart whose lookup answers with it."""
    copy = workdir / CHART_DIR.name
    shutil.copytree(CHART_DIR, copy, symlinks=False)
    helpers = copy / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    assert text.count(lookup) == 1, f"the lookup {lookup} moved; update this test"
    answer = f"(fromJson `{json.dumps(dict(found))}`)"
    helpers.write_text(text.replace(lookup, answer))
    return render(values, chart_dir=copy)


def lint(values: Mapping[str, Any] | None, kube_version: str) -> dict[str, Any]:
    """`helm lint --strict --kube-version` on the chart with `values`."""
    return helm.lint(
        CHART_DIR,
        dict(values or {}),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{kube_version}",
    )


def labels(obj: K8sObject) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def pod_spec(workload: K8sObject) -> K8sObject | None:
    if workload["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        spec: K8sObject = workload["spec"]["template"]["spec"]
        return spec
    return None


def container(workload: K8sObject, name: str) -> K8sObject:
    pod = pod_spec(workload)
    assert pod is not None, f"{workload['kind']} has no pod template"
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


def secret_values(secret: K8sObject) -> dict[str, str]:
    """A Secret's data, decoded."""
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
