"""The controller installed the documented way — `kubectl apply -f crds/ -f deploy/operator.yaml` —
runs sessions, it is that in-cluster pod doing the work, and when the active replica dies the
other one takes over and finishes the running session with one pod per task.

What the host-process tests cannot check: the image builds without a registry and starts as
UID 65532 with no passwd entry, the in-cluster config and the RBAC of deploy/operator.yaml are
enough (leases included), /readyz turns ready and /healthz stays healthy on the leader and the
standby. The host controller is stopped first (and restarted at the end), the Session's
`status.controller` must name the Lease holder, and no replica may restart on its own: a
crash-looping controller fails this test, alone or in the suite.

The fail-over test kills the leader's process with SIGKILL from the node (on the offline cluster
the node is this machine, so the process is found in /proc by its pod name): nothing releases the
Lease, and the standby must wait for it to expire — the timeout path. The dead pod is then
force-deleted, so the kubelet does not restart the container in place (a restarted container
would wait as a standby too; deleting it keeps the test about the *other* replica). On a cluster
whose node is elsewhere (kind), the test falls back to a forced pod deletion, where the kubelet's
2 s SIGTERM lets the leader release the Lease: the hand-over path.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kube, wait_for
from .operator_fixtures import (
    ROOT,
    Operator,
    session,
    task_pods,
    tasks_by_name,
    wait_session,
)

pytestmark = pytest.mark.e2e
SYSTEM = "kudig-system"
SELECTOR = "app.kubernetes.io/name=kudig-operator"
LEASE = "kudig-operator"
REPLICAS = 2


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        cache = os.environ.get("KUDIG_CACHE", str(Path.home() / ".cache" / "kudig"))
        candidates = sorted(glob.glob(f"{cache}/bin/k8s-*/kubectl"))
        found = candidates[-1] if candidates else None
    assert found, "kubectl not found (set KUBECTL)"
    return found


def run(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def operator_pods(kube: Kube) -> list[Any]:
    """The controller's pods, not being deleted."""
    return [
        p
        for p in kube.core.list_namespaced_pod(SYSTEM, label_selector=SELECTOR).items
        if not p.metadata.deletion_timestamp
    ]


def all_operator_pods(kube: Kube) -> list[Any]:
    items: list[Any] = kube.core.list_namespaced_pod(SYSTEM, label_selector=SELECTOR).items
    return items


def is_ready(pod: Any) -> bool:
    return {c.type: c.status for c in pod.status.conditions or []}.get("Ready") == "True"


def lease_holder(kube: Kube) -> str | None:
    from kubernetes import client

    try:
        lease = client.CoordinationV1Api(kube.api).read_namespaced_lease(LEASE, SYSTEM)
    except client.exceptions.ApiException as e:
        if e.status == 404:
            return None
        raise
    holder: str | None = lease.spec.holder_identity
    return holder


def namespace_exists(kube: Kube) -> bool:
    return any(ns.metadata.name == SYSTEM for ns in kube.core.list_namespace().items)


def probe(kube: Kube, pod_name: str, path: str) -> str:
    """GET a controller pod's /healthz, /readyz or /metrics through the API server's pod proxy."""
    text: str = kube.core.connect_get_namespaced_pod_proxy_with_path(f"{pod_name}:8080", SYSTEM, path)
    return text


def assert_no_restarts(kube: Kube, pods: list[Any]) -> None:
    for pod in pods:
        for c in pod.status.container_statuses or []:
            assert c.restart_count == 0, (
                f"the controller restarted:\n{kube.describe_pod(SYSTEM, pod.metadata.name)}"
            )


class Install:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def wait_ready(self) -> tuple[str, list[str]]:
        """Both replicas Ready, one holding the Lease: (leader, standbys)."""

        def ready() -> tuple[str, list[str]] | None:
            pods = operator_pods(self.kube)
            assert_no_restarts(self.kube, pods)
            holder = lease_holder(self.kube)
            names = {p.metadata.name for p in pods if is_ready(p)}
            if len(names) != REPLICAS or holder not in names:
                return None
            return holder, sorted(names - {holder})

        result: tuple[str, list[str]] = wait_for(
            ready, 180, f"{REPLICAS} controller replicas Ready, one holding the Lease"
        )
        return result


@pytest.fixture(scope="module")
def installed(kube: Kube, operator: Operator) -> Iterator[Install]:
    """`kubectl apply -f crds/ -f deploy/operator.yaml` with the host controller stopped; all
    removed and the host controller back at the end."""
    run(str(ROOT / "hack" / "kudig-images"), "operator")
    wait_for(lambda: not namespace_exists(kube), 180, f"an earlier {SYSTEM} namespace to be gone")
    operator.stop()  # from here on only the in-cluster controller can run anything
    try:
        run(kubectl(), "apply", "-f", "crds/", "-f", "deploy/operator.yaml")
        yield Install(kube)
    finally:
        subprocess.run(
            [kubectl(), "delete", "-f", "deploy/operator.yaml", "--wait=false"], cwd=ROOT, capture_output=True
        )
        wait_for(lambda: not all_operator_pods(kube), 180, "the in-cluster controllers to stop")
        operator.start()
        wait_for(lambda: not namespace_exists(kube), 180, f"the {SYSTEM} namespace to be gone")


def cli_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def push_and_start(project: Path, workflow: str, namespace: str) -> str:
    cli = [sys.executable, "-m", "kudig.cli"]
    subprocess.run([*cli, "push", str(project), "-n", namespace], check=True, env=cli_env(), timeout=120)
    out = subprocess.run(
        [*cli, "start", workflow, "--session", "2024-01-30", "-n", namespace],
        check=True,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return out.split("Started a session: ", 1)[1].split()[0]


def test_the_documented_install_runs_sessions_in_cluster(
    kube: Kube, namespace: str, operator: Operator, installed: Install, tmp_path: Path
) -> None:
    leader, standbys = installed.wait_ready()

    project = tmp_path / "incluster"
    project.mkdir()
    (project / "incluster.dig").write_text(
        "+hello:\n  sh>: echo from-pod\n+store:\n  py>: tasks.rows\n+done:\n  echo>: rows=${rows.length}\n"
    )
    (project / "tasks.py").write_text(
        "import digdag\n\ndef rows():\n    digdag.env.store({'rows': [{'id': i, 'name': 'row-%d' % i} for i in range(300)]})\n"
    )
    name = push_and_start(project, "incluster", namespace)
    obj = wait_session(kube, operator, namespace, name, timeout=240)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["controller"] == leader, "the in-cluster controller holding the Lease ran the session"
    assert tasks_by_name(obj)["+incluster+done"]["state_params"]["log"] == "rows=300\n"

    assert probe(kube, leader, "healthz") == "ok" and probe(kube, leader, "readyz") == "ok"
    assert 'kudig_kube_requests_total{resource="pods",verb="create"}' in probe(kube, leader, "metrics")
    for standby in standbys:  # alive and Ready, doing nothing
        assert probe(kube, standby, "healthz") == "ok"
        assert probe(kube, standby, "readyz").startswith("ok (standby;"), probe(kube, standby, "readyz")
        assert 'resource="pods",verb="create"' not in probe(kube, standby, "metrics"), (
            "a standby writes nothing"
        )
    assert lease_holder(kube) == leader
    final = operator_pods(kube)
    assert sorted(p.metadata.name for p in final) == sorted([leader, *standbys])
    assert_no_restarts(kube, final)


def operator_processes(pod_name: str) -> list[int]:
    """PIDs of the controller process of `pod_name`, if its node is this machine (by its
    environment: the downward API put KUDIG_POD_NAME there)."""
    wanted = f"KUDIG_POD_NAME={pod_name}".encode()
    pids = []
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(environ, "rb") as f:
                if wanted in f.read().split(b"\0"):
                    pids.append(int(environ.split("/")[2]))
        except OSError:
            continue
    return pids


def test_killing_the_active_replica_hands_over_and_the_session_completes_once(
    kube: Kube, namespace: str, operator: Operator, installed: Install, tmp_path: Path
) -> None:
    leader, standbys = installed.wait_ready()
    assert len(standbys) == 1
    standby = standbys[0]

    steps = [f"t{i}" for i in range(1, 5)]
    project = tmp_path / "ha"
    project.mkdir()
    (project / "ha.dig").write_text("".join(f"+{s}:\n  sh>: sleep 4\n" for s in steps))
    name = push_and_start(project, "ha", namespace)

    def running(task: str) -> bool:
        return any(
            (p.metadata.annotations or {}).get("kudig.io/task") == task and p.status.phase == "Running"
            for p in task_pods(kube, namespace, name)
        )

    wait_for(lambda: running("+ha+t2"), 120, "the second task to run")
    assert session(kube, namespace, name)["status"]["controller"] == leader

    pids = operator_processes(leader)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # no SIGTERM: the Lease is not released
    killed = time.monotonic()
    kube.core.delete_namespaced_pod(leader, SYSTEM, grace_period_seconds=0)  # no restart in place
    path = "timeout (SIGKILL)" if pids else "release (forced deletion; the node is not this machine)"

    wait_for(lambda: lease_holder(kube) == standby, 30, f"the standby {standby} to hold the Lease")
    takeover = time.monotonic() - killed
    print(f"\nfail-over by {path}: {standby} holds the Lease {takeover:.1f}s after {leader} died")

    obj = wait_session(kube, operator, namespace, name, timeout=180)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["controller"] == standby, "the new leader finished the session"
    tasks = Counter(
        (p.metadata.annotations or {}).get("kudig.io/task") for p in task_pods(kube, namespace, name)
    )
    assert tasks == Counter({f"+ha+{s}": 1 for s in steps}), f"one pod per task, none twice: {tasks}"
    # the Deployment replaced the dead pod with a new standby; the new leader never restarted
    survivors = operator_pods(kube)
    assert standby in {p.metadata.name for p in survivors}
    assert_no_restarts(kube, [p for p in survivors if p.metadata.name == standby])
    assert lease_holder(kube) == standby


def test_a_rolling_update_hands_the_lease_over_on_sigterm(kube: Kube, installed: Install) -> None:
    """`strategy: RollingUpdate`: each new pod is Ready as a standby before an old one goes (else
    the rollout would stall), and an old leader releases the Lease on SIGTERM, so a standby takes
    over after a retry period rather than after the lease duration."""
    leader, _ = installed.wait_ready()
    old = {p.metadata.name for p in operator_pods(kube)}
    run(kubectl(), "rollout", "restart", "deployment/kudig-operator", "-n", SYSTEM)
    handovers: list[float] = []
    terminating_since: dict[str, float] = {}
    deadline = time.monotonic() + 180

    def rolled() -> bool:
        pods = all_operator_pods(kube)
        live = {p.metadata.name for p in pods if not p.metadata.deletion_timestamp}
        return (
            not (live & old)
            and len(live) == REPLICAS
            and all(is_ready(p) for p in pods if p.metadata.name in live)
        )

    holder: str | None = leader
    timeline: list[str] = []
    while True:
        now = time.monotonic()
        assert now < deadline, f"the rollout did not finish: {timeline}"
        for p in all_operator_pods(kube):
            if p.metadata.deletion_timestamp and p.metadata.name not in terminating_since:
                terminating_since[p.metadata.name] = now
                timeline.append(f"{p.metadata.name} terminating")
        current = lease_holder(kube)
        if current is not None and current != holder:
            timeline.append(f"{current} holds the Lease")
            if holder in terminating_since:
                handovers.append(now - terminating_since[holder])
            holder = current
        if holder not in old and rolled():  # a new pod leads (not merely: the old one released)
            break
        time.sleep(0.2)
    print(
        f"\nrolling update: hand-overs after the leader's SIGTERM: {', '.join(f'{h:.1f}s' for h in handovers)}"
    )
    assert handovers, f"the leader changed during the rollout: {timeline}"
    assert max(handovers) < 10, f"the old leader released the Lease: {handovers}"
    assert_no_restarts(kube, operator_pods(kube))
