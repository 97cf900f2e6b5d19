"""The Helm chart (helm/kudig): lint, render with default and non-default values, least RBAC, CRDs.

Helm itself comes from `hack/helm` (built from the Go module proxy and cached under
~/.cache/kudig/bin; a no-op when cached, about 2 minutes cold). No cluster is needed: `helm template`
renders offline. The RBAC test ties every verb the chart grants to a call in the controller's code
(or in kopf's), so a grant the code does not use, or a wildcard, fails it.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kudig_operator.plan.settings import create_concurrency
from kudig_operator.podspec import task_pod_defaults

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kudig"
OPERATOR = ROOT / "operator" / "kudig_operator"
KOPF = Path(kopf.__file__).resolve().parent
RELEASE, NAMESPACE = "kudig", "kudig-system"

pytestmark = pytest.mark.slow  # the first run builds helm


@functools.cache
def helm() -> str:
    proc = subprocess.run([str(ROOT / "hack" / "helm")], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"hack/helm failed:\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)


def render(*args: str) -> list[dict[str, Any]]:
    proc = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


NON_DEFAULT: dict[str, Any] = {
    "replicas": 1,
    "leaderElection": {"enabled": False},
    "watchNamespaces": ["team-a"],
    "image": {"repository": "registry.example/kudig/operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "runner": {
        "image": {"repository": "registry.example/kudig/runner", "tag": "1.2.3"},
        "pod": {"nodeSelector": {"pool": "batch"}, "priorityClassName": "low", "labels": {"team": "data"}},
        "podRetention": "failed",
    },
    "logStore": {"url": "s3://logs/kudig/?endpoint=http://minio:9000", "credentialsSecret": "s3-creds"},
    "controller": {
        "workers": 4,
        "resyncSeconds": 10,
        "logLevel": "DEBUG",
        "taskMaxRun": 20000,
        "podCreateConcurrency": 32,
    },
    "serviceAccount": {"name": "kudig-sa", "annotations": {"team": "data"}},
    "extraEnv": [{"name": "EXTRA", "value": "yes"}],
    "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "nodeSelector": {"pool": "system"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}
                ]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
    "podAnnotations": {"a": "b"},
    "serviceMonitor": {
        "enabled": True,
        "additionalLabels": {"release": "kube-prometheus-stack"},
        "interval": "15s",
    },
    "podMonitor": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack", "team": "data"}},
    "grafanaDashboard": {"namespace": "monitoring", "annotations": {"grafana_folder": "kudig"}},
}


@pytest.fixture(scope="module")
def non_default_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "values.yaml"
    path.write_text(yaml.safe_dump(NON_DEFAULT))
    return path


def test_lint_default_and_non_default(non_default_values: Path) -> None:
    for args in ([], ["-f", str(non_default_values)]):
        proc = run_helm("lint", "--strict", str(CHART), *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def test_chart_version_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == version and chart["appVersion"] == version, (
        "helm/kudig/Chart.yaml version/appVersion must be pyproject.toml's version"
    )


def test_crds_are_the_repos_crds_byte_for_byte() -> None:
    ours = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert ours, "crds/ is empty"
    assert chart == ours, "helm/kudig/crds must be a copy of crds/: cp crds/*.yaml helm/kudig/crds/"


def test_default_render() -> None:
    docs = render()
    labels_required = {
        "helm.sh/chart": "kudig-0.1.0",
        "app.kubernetes.io/name": "kudig",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/version": "0.1.0",
    }
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        assert labels_required.items() <= labels.items(), f"{doc['kind']} {doc['metadata']['name']}: {labels}"
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE
    assert not find(docs, "ServiceMonitor") and not find(docs, "PodMonitor")

    dep = one(docs, "Deployment", "kudig")
    spec = dep["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "kudig"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    assert container["image"] == "localhost/kudig/operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = env_of(dep)
    assert env["KUDIG_RUNNER_IMAGE"] == "localhost/kudig/runner:0.1.0"
    assert env["KUDIG_HEALTH_ADDRESS"] == "0.0.0.0:8080"
    assert "KUDIG_TASK_POD" not in env  # no defaults: today's task pods
    assert (env["KUDIG_POD_RETENTION"], env["KUDIG_LOG_STORE"]) == ("all", "configmap")
    assert env["KUDIG_LEADER_ELECTION"] == "true" and env["KUDIG_LEADER_ELECTION_LEASE"] == "kudig"
    assert env["KUDIG_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["KUDIG_POD_NAME"] == env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "KUDIG_NAMESPACE" not in env
    assert pod["affinity"]["podAntiAffinity"], "two replicas are spread over nodes when possible"

    # the same security settings as deploy/operator.yaml
    deploy = [d for d in yaml.safe_load_all((ROOT / "deploy" / "operator.yaml").read_text()) if d]
    reference = one(deploy, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == reference["securityContext"]
    assert container["securityContext"] == reference["containers"][0]["securityContext"]
    assert container["resources"] == reference["containers"][0]["resources"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe] == reference["containers"][0][probe]

    svc = one(docs, "Service", "kudig-metrics")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]

    board = one(docs, "ConfigMap", "kudig-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["data"]["kudig.json"] == (CHART / "dashboards" / "kudig.json").read_text().rstrip("\n")

    assert one(docs, "PodDisruptionBudget", "kudig")["spec"]["maxUnavailable"] == 1
    lease_role = one(docs, "Role", "kudig-leader-election")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert one(docs, "RoleBinding", "kudig-leader-election")["subjects"][0]["name"] == "kudig"
    binding = one(docs, "ClusterRoleBinding", "kudig")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kudig", "namespace": NAMESPACE}]


def test_non_default_render(non_default_values: Path) -> None:
    docs = render("-f", str(non_default_values))
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert container["image"] == "registry.example/kudig/operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == NON_DEFAULT["resources"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == NON_DEFAULT["tolerations"]
    assert pod["affinity"] == NON_DEFAULT["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["serviceAccountName"] == "kudig-sa"
    assert spec["template"]["metadata"]["annotations"] == {"a": "b"}
    env = env_of(dep)
    assert env["KUDIG_NAMESPACE"] == "team-a"
    assert env["KUDIG_RUNNER_IMAGE"] == "registry.example/kudig/runner:1.2.3"
    assert (env["KUDIG_WORKERS"], env["KUDIG_RESYNC_SECONDS"], env["KUDIG_LOG_LEVEL"]) == ("4", "10", "DEBUG")
    assert env["KUDIG_TASK_MAX_RUN"] == "20000"
    assert create_concurrency(env["KUDIG_POD_CREATE_CONCURRENCY"]) == 32  # as the controller reads it
    assert env["EXTRA"] == "yes"
    assert json.loads(env["KUDIG_TASK_POD"]) == NON_DEFAULT["runner"]["pod"]
    assert task_pod_defaults(env["KUDIG_TASK_POD"]) is not None  # what the controller parses
    assert env["KUDIG_POD_RETENTION"] == "failed"
    assert env["KUDIG_LOG_STORE"] == "s3://logs/kudig/?endpoint=http://minio:9000"
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert "KUDIG_LEADER_ELECTION" not in env
    assert not find(docs, "PodDisruptionBudget")
    assert one(docs, "ServiceAccount", "kudig-sa")["metadata"]["annotations"] == {"team": "data"}

    # namespaced RBAC: a Role + RoleBinding in the watched namespace; cluster-wide only the CRDs
    role = one(docs, "Role", "kudig")
    assert role["metadata"]["namespace"] == "team-a"
    assert any("pods" in r["resources"] for r in role["rules"])
    binding = one(docs, "RoleBinding", "kudig")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kudig-sa", "namespace": NAMESPACE}]
    cluster_role = one(docs, "ClusterRole", "kudig")
    assert [r["resources"] for r in cluster_role["rules"]] == [["customresourcedefinitions"]]
    assert not find(docs, "Role", "kudig-leader-election")

    selector = spec["selector"]["matchLabels"]
    monitor = one(docs, "ServiceMonitor", "kudig")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["interval"] == "15s" and endpoint["honorLabels"] is True
    pod_monitor = one(docs, "PodMonitor", "kudig")
    pod_monitor_labels = pod_monitor["metadata"]["labels"]
    assert {"release": "kube-prometheus-stack", "team": "data"}.items() <= pod_monitor_labels.items()
    assert pod_monitor["spec"]["selector"]["matchLabels"] == selector
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"

    board = one(docs, "ConfigMap", "kudig-dashboard")
    assert board["metadata"]["namespace"] == "monitoring"
    assert board["metadata"]["annotations"] == {"grafana_folder": "kudig"}


def test_the_notifier_values_become_digdags_notification_keys(tmp_path: Path) -> None:
    """`notifications` (docs/notifications.md): none by default; set, the controller's
    KUDIG_NOTIFICATION holds digdag's `notification.*` keys (what notify> pods get)."""
    assert "KUDIG_NOTIFICATION" not in env_of(one(render(), "Deployment", "kudig"))
    template = '{"text": "${message} (${workflow_name})"}'
    values = {
        "notifications": {
            "type": "http",
            "http": {
                "url": "https://hooks.example/T1",
                "headers": {"X-Token": "t-1"},
                "bodyTemplate": template,
            },
            "retries": 2,
        }
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    docs = render("-f", str(tmp_path / "values.yaml"))
    settings = json.loads(env_of(one(docs, "Deployment", "kudig"))["KUDIG_NOTIFICATION"])
    assert settings["notification.type"] == "http" and settings["notification.retries"] == 2
    assert settings["notification.http.url"] == "https://hooks.example/T1"
    assert settings["notification.http.headers.X-Token"] == "t-1"
    assert settings["notification.http.body_template"] == template
    assert "notification.mail.host" not in settings  # empty values are left out
    docs = render("--set", "notifications.type=mail", "--set", "notifications.mail.host=smtp.example",
                  "--set", "notifications.mail.to={a@example.com,b@example.com}")  # fmt: skip
    settings = json.loads(env_of(one(docs, "Deployment", "kudig"))["KUDIG_NOTIFICATION"])
    assert settings["notification.mail.to"] == ["a@example.com", "b@example.com"]
    assert settings["notification.mail.port"] == 587 and settings["notification.mail.tls"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "notifications.type=sms"], "/notifications/type"),
        (["--set", "watchNamespaces={a,b}"], "maxItems"),
        (["--set", "replicas=2", "--set", "leaderElection.enabled=false"], "needs leaderElection.enabled"),
        (["--set", "replicas=two"], "want integer"),
        (["--set", "unknown=1"], "additional properties 'unknown' not allowed"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "runner.pod.nodeSelecter.a=b"], "additional properties 'nodeSelecter' not allowed"),
        (["--set", "runner.podRetention=some"], "podRetention"),
        (["--set", "logStore.url=ftp://x"], "logStore"),
    ],
)
def test_bad_values_are_refused(args: list[str], message: str) -> None:
    proc = run_helm("template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


# --- RBAC: every verb the chart grants, and where the controller (or kopf for it) uses it --------------

# (apiGroup, resource, verb) -> (where, regex): the grant is "used" when the regex matches a file
# there. The controller's calls go through kudig/cluster/kube.py (one method per verb: get -> get,
# list_objects/list_metadata/list_pods* -> list, watch_pods -> watch, create* -> create, patch ->
# patch, replace_status/replace_lease -> update, delete* -> delete, pod_log -> get pods/log).
USED: dict[tuple[str, str, str], tuple[Path, str]] = {
    ("kudig.io", "workflows", "get"): (OPERATOR, r"api\.get\(WORKFLOWS"),
    ("kudig.io", "workflows", "list"): (OPERATOR, r"for plural in \(WORKFLOWS, SESSIONS\)"),  # resync
    ("kudig.io", "workflows", "watch"): (OPERATOR, r"kopf\.on\.event\(GROUP, VERSION, WORKFLOWS\)"),
    ("kudig.io", "sessions", "get"): (OPERATOR, r"api\.get\(SESSIONS"),
    ("kudig.io", "sessions", "list"): (OPERATOR, r"api\.list_objects\(SESSIONS"),
    ("kudig.io", "sessions", "watch"): (OPERATOR, r"kopf\.on\.event\(GROUP, VERSION, SESSIONS\)"),
    ("kudig.io", "sessions", "patch"): (OPERATOR, r"api\.patch\(SESSIONS"),
    ("kudig.io", "sessions", "create"): (OPERATOR, r"api\.create\(SESSIONS"),
    ("kudig.io", "sessions", "delete"): (OPERATOR, r"api\.delete\(SESSIONS"),
    ("kudig.io", "workflows/status", "update"): (OPERATOR, r"api\.replace_status\(WORKFLOWS"),
    ("kudig.io", "sessions/status", "update"): (OPERATOR, r"api\.replace_status\(SESSIONS"),
    ("", "pods", "get"): (OPERATOR, r"api\.get_pod\("),
    ("", "pods", "list"): (OPERATOR, r"api\.list_pods(_version)?\("),
    ("", "pods", "watch"): (OPERATOR, r"api\.watch_pods\("),
    ("", "pods", "create"): (OPERATOR, r"api\.create_pod\("),
    ("", "pods", "delete"): (OPERATOR, r"api\.delete_pod\("),
    ("", "pods/log", "get"): (OPERATOR, r"api\.pod_log\("),
    ("", "configmaps", "get"): (OPERATOR, r"api\.get_config_map\("),
    ("", "configmaps", "create"): (OPERATOR, r"api\.create_config_map\("),
    ("", "configmaps", "delete"): (OPERATOR, r"api\.delete_config_map\("),
    ("", "events", "create"): (OPERATOR, r"api\.create_event\("),
    ("coordination.k8s.io", "leases", "get"): (OPERATOR, r"api\.get_lease\("),
    ("coordination.k8s.io", "leases", "create"): (OPERATOR, r"api\.create_lease\("),
    ("coordination.k8s.io", "leases", "update"): (OPERATOR, r"api\.replace_lease\("),
    # kopf discovers the resources it serves from the CRDs: list, then watch for changes
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): (KOPF, r"wait_for\(references\.CRDS\)"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): (KOPF, r"wait_for\(references\.CRDS\)"),
}


@functools.cache
def _sources(where: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(where.rglob("*.py")))


def grants(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) a Role or ClusterRole of `docs` grants."""
    out: set[tuple[str, str, str]] = set()
    for doc in docs:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc["rules"]:
            assert "nonResourceURLs" not in rule, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((group, resource, verb))
    return out


def test_the_evidence_for_each_used_verb_is_in_the_code() -> None:
    missing = [key for key, (where, pattern) in USED.items() if not re.search(pattern, _sources(where))]
    assert not missing, f"no longer used by the code (drop them from the chart and from USED): {missing}"


@pytest.mark.parametrize("values", ["default", "non-default"])
def test_rbac_has_no_wildcard_and_nothing_the_controller_does_not_use(
    values: str, non_default_values: Path
) -> None:
    docs = render() if values == "default" else render("-f", str(non_default_values))
    granted = grants(docs)
    wildcards = sorted(g for g in granted if "*" in g)
    assert not wildcards, f"wildcards in the chart's RBAC: {wildcards}"
    unused = sorted(granted - USED.keys())
    assert not unused, f"the chart grants what the controller never uses: {unused}"


def test_rbac_grants_everything_the_controller_uses() -> None:
    """Cluster-wide install (default values): all of USED; the Lease only in the release namespace."""
    docs = render()
    assert grants(docs) == set(USED)
    lease_rules = [r for d in find(docs, "Role") for r in d["rules"]]
    assert all(r["apiGroups"] == ["coordination.k8s.io"] for r in lease_rules)
    assert {tuple(r.get("resourceNames") or ()) for r in lease_rules} == {(), ("kudig",)}
    # namespaced install: the namespaced part moves to the Role, nothing is lost
    namespaced = render("--set", "watchNamespaces={team-a}")
    assert grants(namespaced) == set(USED)


def test_deploy_operator_yaml_grants_what_the_chart_grants() -> None:
    """deploy/operator.yaml (kubectl apply) and the chart are two installs of the same controller."""
    deploy = [d for d in yaml.safe_load_all((ROOT / "deploy" / "operator.yaml").read_text()) if d]
    missing = sorted(grants(render()) - grants(deploy))
    assert not missing, f"deploy/operator.yaml lacks what the controller uses: {missing}"
    extra = sorted(grants(deploy) - grants(render()))
    assert not extra, f"deploy/operator.yaml grants what the controller never uses: {extra}"
