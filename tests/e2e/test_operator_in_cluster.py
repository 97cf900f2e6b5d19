"""The controller installed the documented way — `kubectl apply -f crds/ -f deploy/operator.yaml` —
runs sessions, and it is that in-cluster pod doing the work.

What the host-process tests cannot check: the image builds without a registry and starts as
UID 65532 with no passwd entry, the in-cluster config and the RBAC of deploy/operator.yaml are
enough, /readyz turns ready and /healthz stays healthy. The host controller is stopped first, the
Session's `status.controller` must name the in-cluster pod, and the pod must never have restarted:
a crash-looping controller fails this test, alone or in the suite.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kube, wait_for
from .operator_fixtures import (
    ROOT,
    Operator,
    tasks_by_name,
    wait_session,
)

pytestmark = pytest.mark.e2e
SYSTEM = "kudig-system"
SELECTOR = "app.kubernetes.io/name=kudig-operator"


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


def operator_pod(kube: Kube) -> Any:
    pods = [
        p
        for p in kube.core.list_namespaced_pod(SYSTEM, label_selector=SELECTOR).items
        if not p.metadata.deletion_timestamp
    ]
    return pods[0] if len(pods) == 1 else None


def namespace_exists(kube: Kube) -> bool:
    return any(ns.metadata.name == SYSTEM for ns in kube.core.list_namespace().items)


def test_the_documented_install_runs_sessions_in_cluster(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    run(str(ROOT / "hack" / "kudig-images"), "operator")
    wait_for(lambda: not namespace_exists(kube), 180, f"an earlier {SYSTEM} namespace to be gone")
    operator.stop()  # from here on only the in-cluster controller can run anything
    try:
        run(kubectl(), "apply", "-f", "crds/", "-f", "deploy/operator.yaml")

        def ready() -> Any:
            pod = operator_pod(kube)
            if pod is None:
                return None
            for c in pod.status.container_statuses or []:
                assert c.restart_count == 0, (
                    f"the controller restarted:\n{kube.describe_pod(SYSTEM, pod.metadata.name)}"
                )
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            return pod if conditions.get("Ready") == "True" else None

        pod = wait_for(ready, 180, "the in-cluster controller to be Ready (/readyz)")
        pod_name = pod.metadata.name

        project = tmp_path / "incluster"
        project.mkdir()
        (project / "incluster.dig").write_text(
            "+hello:\n  sh>: echo from-pod\n+store:\n  py>: tasks.rows\n+done:\n  echo>: rows=${rows.length}\n"
        )
        (project / "tasks.py").write_text(
            "import digdag\n\ndef rows():\n    digdag.env.store({'rows': [{'id': i, 'name': 'row-%d' % i} for i in range(300)]})\n"
        )
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        cli = [sys.executable, "-m", "kudig.cli"]
        subprocess.run([*cli, "push", str(project), "-n", namespace], check=True, env=env, timeout=120)
        out = subprocess.run(
            [*cli, "start", "incluster", "--session", "2024-01-30", "-n", namespace],
            check=True,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        name = out.split("Started a session: ", 1)[1].split()[0]
        obj = wait_session(kube, operator, namespace, name, timeout=240)
        status = obj["status"]
        assert status["phase"] == "Succeeded", status
        assert status["controller"] == pod_name, "the in-cluster controller ran the session"
        assert tasks_by_name(obj)["+incluster+done"]["state_params"]["log"] == "rows=300\n"

        def get(path: str) -> str:
            text: str = kube.core.connect_get_namespaced_pod_proxy_with_path(f"{pod_name}:8080", SYSTEM, path)
            return text

        assert get("healthz") == "ok" and get("readyz") == "ok"
        assert 'kudig_kube_requests_total{resource="pods",verb="create"}' in get("metrics")
        final = operator_pod(kube)
        assert final is not None and final.metadata.name == pod_name
        assert all(c.restart_count == 0 for c in final.status.container_statuses), "the controller restarted"
    finally:
        subprocess.run(
            [kubectl(), "delete", "-f", "deploy/operator.yaml", "--wait=false"], cwd=ROOT, capture_output=True
        )
        wait_for(lambda: operator_pod(kube) is None, 180, "the in-cluster controller to stop")
        operator.start()
        wait_for(lambda: not namespace_exists(kube), 180, f"the {SYSTEM} namespace to be gone")
