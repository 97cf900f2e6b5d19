"""The path a user takes with the Helm chart: install, run the examples, watch in Prometheus, upgrade,
uninstall — on the test cluster, with the controller in-cluster and the host controller stopped.

One release for the module (`release` fixture), tests in order:

1. install (`helm install` with the locally built images) runs the examples to success, and it is
   a pod of the release that runs them (`status.controller`, the Lease's holder);
2. a real Prometheus (Debian's) scrapes the controllers behind the metrics Service, and every PromQL
   expression of the dashboard JSON returns data (read from helm/kudig/dashboards/kudig.json);
3. `helm upgrade` with changed values rolls the Deployment and the new controller runs a session;
4. `helm uninstall` leaves nothing of the release but the CRDs (the chart's crds/ convention).

The chart part (1, 3, 4) does not depend on the metrics (2). Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kudig.api import GROUP, TERMINAL, VERSION

from .conftest import Kube, wait_for
from .operator_fixtures import ROOT, Operator
from .prometheus import Prometheus

pytestmark = pytest.mark.e2e

RELEASE = "kudig-e2e"  # contains the chart's name: objects are named kudig-e2e, kudig-e2e-metrics, ...
RELEASE_NS = "kudig-helm-e2e"
WORKLOAD_NS = "kudig-helm-e2e-work"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
CHART = ROOT / "helm" / "kudig"
DASHBOARD = CHART / "dashboards" / "kudig.json"
IMAGE_VALUES = [
    "--set",
    "image.repository=localhost/kudig/operator",
    "--set",
    "image.tag=dev",
    "--set",
    "image.pullPolicy=Never",  # imported into containerd by hack/kudig-images; no registry here
    "--set",
    "runner.image.repository=localhost/kudig/runner",
    "--set",
    "runner.image.tag=dev",
    "--set",
    "controller.resyncSeconds=5",
]


def helm_bin() -> str:
    proc = subprocess.run([str(ROOT / "hack" / "helm")], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"hack/helm failed:\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


def run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def kudig(*args: str) -> str:
    return run(sys.executable, "-m", "kudig.cli", *args).stdout


def namespace_exists(kube: Kube, name: str) -> bool:
    return any(ns.metadata.name == name for ns in kube.core.list_namespace().items)


def gone(kube: Kube, name: str) -> bool:
    return not namespace_exists(kube, name)


def release_pods(kube: Kube) -> list[Any]:
    return [
        p
        for p in kube.core.list_namespaced_pod(RELEASE_NS, label_selector=SELECTOR).items
        if not p.metadata.deletion_timestamp
    ]


def controller_logs(kube: Kube) -> str:
    out = []
    for pod in release_pods(kube):
        with contextlib.suppress(Exception):
            tail = kube.core.read_namespaced_pod_log(pod.metadata.name, RELEASE_NS, tail_lines=30)
            out.append(f"--- {pod.metadata.name}\n{tail}")
    return "\n".join(out)


def deployment(kube: Kube) -> Any:
    return kube.apps.read_namespaced_deployment(RELEASE, RELEASE_NS)


def rolled_out(kube: Kube) -> Any:
    """The Deployment's newest template runs on every replica, all Ready, nothing else left; no restarts."""
    dep = deployment(kube)
    st = dep.status
    want = dep.spec.replicas
    for pod in release_pods(kube):
        for c in pod.status.container_statuses or []:
            assert c.restart_count == 0, f"controller {pod.metadata.name} restarted:\n{controller_logs(kube)}"
    done = (
        (st.observed_generation or 0) >= dep.metadata.generation
        and st.updated_replicas == want
        and st.ready_replicas == want
        and st.replicas == want
        and len(release_pods(kube)) == want
    )
    return dep if done else None


def lease_holder(kube: Kube) -> str | None:
    from kubernetes import client

    lease = client.CoordinationV1Api(kube.api).read_namespaced_lease(RELEASE, RELEASE_NS)
    return str(lease.spec.holder_identity) if lease.spec.holder_identity else None


def session_obj(kube: Kube, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        GROUP, VERSION, WORKLOAD_NS, "sessions", name
    )
    return obj


def wait_sessions(kube: Kube, names: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    def done() -> dict[str, dict[str, Any]] | None:
        objs = {n: session_obj(kube, n) for n in names}
        phases = {n: (o.get("status") or {}).get("phase") for n, o in objs.items()}
        return objs if all(p in (*TERMINAL, "Error") for p in phases.values()) else None

    try:
        return wait_for(done, timeout, f"sessions {names} to finish", interval=1)
    except AssertionError as e:
        states = {n: (session_obj(kube, n).get("status") or {}).get("phase") for n in names}
        raise AssertionError(f"{e}\nphases: {states}\n{controller_logs(kube)}") from None


def start(workflow: str, session: str, *params: str) -> str:
    out = kudig("start", workflow, "--session", session, "-n", WORKLOAD_NS, *params)
    return out.split("Started a session: ", 1)[1].split()[0]


def metrics_endpoints(kube: Kube) -> list[str]:
    """host:port of every ready endpoint of the release's metrics Service (its EndpointSlices)."""
    slices = kube.discovery.list_namespaced_endpoint_slice(
        RELEASE_NS, label_selector=f"kubernetes.io/service-name={RELEASE}-metrics"
    ).items
    out: list[str] = []
    for s in slices:
        port = next(p.port for p in s.ports or [] if p.name == "metrics")
        for ep in s.endpoints or []:
            if ep.conditions is None or ep.conditions.ready:
                out.extend(f"{addr}:{port}" for addr in ep.addresses)
    return sorted(out)


# Small projects that give every dashboard panel something to show: a schedule (schedule lag), an
# SLA miss, a retried task and failures.
TICK = "timezone: UTC\nschedule:\n  seconds_interval>: 10\n+tick:\n  echo>: tick ${session_time}\n"
LATE = "sla:\n  duration: 00:00:02\n+slow:\n  sh>: sleep 6\n"
FLAKY = "+flaky:\n  _retry: 1\n  sh>: exit 1\n"


@dataclass
class Release:
    kube: Kube
    helm: str
    prometheus: Prometheus
    sessions: dict[str, str] = field(default_factory=dict)  # what -> session name
    installed_pods: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def release(kube: Kube, operator: Operator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    helm = helm_bin()
    run(str(ROOT / "hack" / "kudig-images"), "operator", "runner")
    workdir = tmp_path_factory.mktemp("helm")
    prometheus = Prometheus(workdir)
    # what an aborted earlier run may have left
    run(helm, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", check=False)
    for ns in (RELEASE_NS, WORKLOAD_NS):
        with contextlib.suppress(Exception):
            kube.core.delete_namespace(ns)
        wait_for(functools.partial(gone, kube, ns), 180, f"an earlier {ns} to be gone")
    operator.stop()  # from here on only the release's controller can run anything
    try:
        kube.core.create_namespace({"metadata": {"name": WORKLOAD_NS, "labels": {"kudig.io/e2e": "true"}}})
        wait_for(
            lambda: kube.core.read_namespaced_service_account("default", WORKLOAD_NS),
            60,
            "the workload namespace's default ServiceAccount",
        )
        prometheus.start()
        yield Release(kube, helm, prometheus)
    finally:
        prometheus.stop()
        run(helm, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", check=False)
        wait_for(lambda: not release_pods(kube), 180, "the release's controllers to stop")
        for ns in (WORKLOAD_NS, RELEASE_NS):
            with contextlib.suppress(Exception):
                kube.core.delete_namespace(ns)
        operator.start()
        for ns in (WORKLOAD_NS, RELEASE_NS):
            wait_for(functools.partial(gone, kube, ns), 180, f"namespace {ns} to be gone")


def test_install_runs_the_examples_in_cluster(release: Release, tmp_path: Path) -> None:
    kube = release.kube
    t0 = time.monotonic()
    run(release.helm, "install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace", *IMAGE_VALUES)
    dep = wait_for(lambda: rolled_out(kube), 180, "the release's controllers to be Ready")
    assert dep.spec.replicas == 2, "the chart's default: two replicas, one leader"
    release.installed_pods = sorted(p.metadata.name for p in release_pods(kube))
    leader = wait_for(lambda: lease_holder(kube), 60, "a leader (the Lease's holder)")
    assert leader in release.installed_pods
    release.facts["ready_after"] = time.monotonic() - t0

    # Prometheus scrapes every controller behind the metrics Service from now on
    targets = wait_for(lambda: metrics_endpoints(kube), 60, "the metrics Service's endpoints")
    release.prometheus.set_targets(targets, {"service": f"{RELEASE}-metrics"})

    # the user's path: kudig push + kudig start
    for example in ("etl", "fanout"):
        kudig("push", str(ROOT / "examples" / example), "-n", WORKLOAD_NS)
    for name, text in (("tick", TICK), ("late", LATE), ("flaky", FLAKY)):
        project = tmp_path / name
        project.mkdir()
        (project / f"{name}.dig").write_text(text)
        kudig("push", str(project), "-n", WORKLOAD_NS)
    sessions = {
        "etl": start("etl", "2024-01-30", "-p", "orders=30"),
        "etl2": start("etl", "2024-01-31"),
        "fanout": start("fanout", "2024-01-30"),
        "fanout-failed": start("fanout", "2024-01-31", "-p", "fail_region=eu"),
        "late": start("late", "2024-01-30"),
        "flaky": start("flaky", "2024-01-30"),
    }
    release.sessions = sessions
    objs = wait_sessions(kube, list(sessions.values()), 240)
    phases = {what: objs[name]["status"]["phase"] for what, name in sessions.items()}
    assert phases == {
        "etl": "Succeeded",
        "etl2": "Succeeded",
        "fanout": "Succeeded",
        "fanout-failed": "Failed",
        "late": "Succeeded",
        "flaky": "Failed",
    }, phases
    for what in ("etl", "fanout"):
        assert objs[sessions[what]]["status"]["controller"] in release.installed_pods, (
            f"the release's controller ran {what}"
        )

    # the schedule fired (twice: a histogram series needs two observations for a rate)
    def ticks() -> list[dict[str, Any]]:
        items = kube.custom.list_namespaced_custom_object(GROUP, VERSION, WORKLOAD_NS, "sessions")["items"]
        done = [
            s
            for s in items
            if s["spec"]["workflow"] == "tick" and (s.get("status") or {}).get("phase") == "Succeeded"
        ]
        return done if len(done) >= 2 else []

    wait_for(ticks, 60, "two scheduled sessions of tick", interval=1)
    kudig("disable", "tick", "-n", WORKLOAD_NS)
    release.facts["examples_after"] = time.monotonic() - t0


def test_prometheus_scrapes_the_metrics_service_and_every_dashboard_query_returns_data(
    release: Release,
) -> None:
    from kudig_operator.dashboard import concrete, expressions

    assert release.sessions, "needs the install test's sessions"
    kube, prom = release.kube, release.prometheus
    svc = kube.core.read_namespaced_service(f"{RELEASE}-metrics", RELEASE_NS)

    # the Service's ClusterIP answers from this host (the cluster's only node) through kube-proxy
    def through_cluster_ip() -> str:
        with urllib.request.urlopen(f"http://{svc.spec.cluster_ip}:8080/metrics", timeout=3) as r:
            return str(r.read().decode())

    text = wait_for(through_cluster_ip, 30, f"/metrics through the ClusterIP {svc.spec.cluster_ip}")
    assert "kudig_controller_leader" in text

    def scraped() -> list[dict[str, Any]]:
        active = prom.active_targets()
        return active if active and all(t["health"] == "up" for t in active) else []

    active = wait_for(scraped, 60, "Prometheus to scrape every controller")
    assert len(active) == 2, active

    doc = json.loads(DASHBOARD.read_text())
    queries = expressions(doc)
    assert len(queries) >= 20
    # Grafana's $__rate_interval and $__range as a dashboard showing the whole test would set them
    window = f"{int(time.monotonic() - prom.started_at) + 60}s"
    pending = {(title, concrete(expr, window)) for title, expr in queries}

    def all_return_data() -> bool:
        for item in sorted(pending):
            if prom.values(item[1]):
                pending.discard(item)
        return not pending

    try:
        wait_for(all_return_data, 90, "every dashboard query to return data", interval=2)
    except AssertionError:
        raise AssertionError(
            "dashboard queries without data:\n" + "\n".join(f"  {t}: {e}" for t, e in sorted(pending))
        ) from None

    # and the numbers say what happened
    def total(expr: str) -> float:
        return sum(prom.values(expr))

    assert total('sum(kudig_sessions_finished_total{outcome="failed"})') >= 2
    assert total('sum(kudig_sessions_finished_total{outcome="succeeded"})') >= 5
    assert total('sum(kudig_sla_misses_total{workflow="late"})') >= 1
    assert total('sum(kudig_task_retries_total{operator="sh"})') >= 1
    assert total("sum(kudig_controller_leader)") == 1, "exactly one leader"
    assert total("count(kudig_controller_info)") == 2


def test_upgrade_with_changed_values(release: Release) -> None:
    kube = release.kube
    assert release.installed_pods, "needs the install test"
    before = deployment(kube)
    t0 = time.monotonic()
    run(
        release.helm,
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        RELEASE_NS,
        *IMAGE_VALUES,
        "--set",
        "resources.requests.cpu=100m",
        "--set",
        "resources.limits.memory=768Mi",
        "--set",
        "extraEnv[0].name=KUDIG_E2E_MARK",
        "--set",
        "extraEnv[0].value=upgraded",
    )
    dep = deployment(kube)
    assert dep.metadata.generation > before.metadata.generation
    container = dep.spec.template.spec.containers[0]
    assert container.resources.requests["cpu"] == "100m" and container.resources.limits["memory"] == "768Mi"
    assert {"KUDIG_E2E_MARK": "upgraded"}.items() <= {e.name: e.value for e in container.env}.items()

    def new_pods_only() -> list[str]:
        if rolled_out(kube) is None:
            return []
        names = sorted(p.metadata.name for p in release_pods(kube))
        return names if not set(names) & set(release.installed_pods) else []

    new_pods = wait_for(new_pods_only, 240, "the upgraded controllers to replace the old ones", interval=1)
    leader = wait_for(
        lambda: (h := lease_holder(kube)) in new_pods and h, 60, "an upgraded controller to lead", interval=1
    )
    name = start("etl", "2024-02-01")
    obj = wait_sessions(kube, [name], 180)[name]
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["controller"] == leader
    release.facts["upgrade_after"] = time.monotonic() - t0


def test_uninstall_leaves_only_the_crds(release: Release) -> None:
    kube = release.kube
    assert release.installed_pods, "needs the install test"
    run(release.helm, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "3m")
    wait_for(
        lambda: not kube.core.list_namespaced_pod(RELEASE_NS, label_selector=SELECTOR).items,
        120,
        "the controllers' pods to be gone",
        interval=1,
    )

    from kubernetes import client

    policy = client.PolicyV1Api(kube.api)
    left: list[str] = []
    for what, items in (
        ("deployments", kube.apps.list_deployment_for_all_namespaces(label_selector=SELECTOR).items),
        ("replicasets", kube.apps.list_replica_set_for_all_namespaces(label_selector=SELECTOR).items),
        ("pods", kube.core.list_pod_for_all_namespaces(label_selector=SELECTOR).items),
        ("services", kube.core.list_service_for_all_namespaces(label_selector=SELECTOR).items),
        ("configmaps", kube.core.list_config_map_for_all_namespaces(label_selector=SELECTOR).items),
        ("serviceaccounts", kube.core.list_service_account_for_all_namespaces(label_selector=SELECTOR).items),
        ("roles", kube.rbac.list_role_for_all_namespaces(label_selector=SELECTOR).items),
        ("rolebindings", kube.rbac.list_role_binding_for_all_namespaces(label_selector=SELECTOR).items),
        ("clusterroles", kube.rbac.list_cluster_role(label_selector=SELECTOR).items),
        ("clusterrolebindings", kube.rbac.list_cluster_role_binding(label_selector=SELECTOR).items),
        (
            "poddisruptionbudgets",
            policy.list_pod_disruption_budget_for_all_namespaces(label_selector=SELECTOR).items,
        ),
        ("secrets", kube.core.list_namespaced_secret(RELEASE_NS, label_selector=f"name={RELEASE}").items),
    ):
        left += [f"{what}/{o.metadata.name}" for o in items]
    # by name too, in case a label was lost
    names = {f"{RELEASE}", f"{RELEASE}-metrics", f"{RELEASE}-dashboard", f"{RELEASE}-leader-election"}
    left += [
        f"clusterroles/{r.metadata.name}"
        for r in kube.rbac.list_cluster_role().items
        if r.metadata.name in names
    ]
    left += [
        f"clusterrolebindings/{r.metadata.name}"
        for r in kube.rbac.list_cluster_role_binding().items
        if r.metadata.name in names
    ]
    left += [
        f"serviceaccounts/{a.metadata.name}"
        for a in kube.core.list_namespaced_service_account(RELEASE_NS).items
        if a.metadata.name in names
    ]
    assert not left, f"helm uninstall left: {left}"
    # run-time state, not Helm's: the leader's Lease (docs/helm.md); deleting the namespace removes it
    leases = [
        x.metadata.name for x in client.CoordinationV1Api(kube.api).list_namespaced_lease(RELEASE_NS).items
    ]
    assert set(leases) <= {RELEASE}, leases

    # the CRDs stay (crds/ convention), and with them every Workflow and Session
    from kubernetes.client import ApiextensionsV1Api

    crds = {c.metadata.name for c in ApiextensionsV1Api(kube.api).list_custom_resource_definition().items}
    assert {"workflows.kudig.io", "sessions.kudig.io"} <= crds
    assert session_obj(kube, release.sessions["etl"])["status"]["phase"] == "Succeeded"
    print(f"helm e2e timings: {json.dumps({k: round(v, 1) for k, v in release.facts.items()})}")
