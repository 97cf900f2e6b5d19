"""Session lifecycle on the cluster through the CLI a user types: `require>` with `rerun_on`, `sla:`
with `fail: true`, `kill` (no pod left running) and `retry --resume-from` (issue #8)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from .conftest import Kube, wait_for
from .operator_fixtures import Operator, kudig_cli, push, session, task_pods, tasks_by_name, wait_session

pytestmark = pytest.mark.e2e


def kudig(namespace: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return kudig_cli(*args, namespace=namespace, ok=ok)


def write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_require_reruns_a_failed_upstream(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = write(
        tmp_path / "req",
        {
            # the upstream fails in its first attempt and succeeds in any later one
            "upstream.dig": "+work:\n  sh>: test ${attempt_id} -ge 2\n",
            "downstream.dig": "+need:\n  require>: upstream\n  rerun_on: failed\n+after:\n  echo>: upstream is done\n",
        },
    )
    push(kube, namespace, root)
    kudig(namespace, "start", "upstream", "--session", "2024-01-01")
    up = "upstream-20240101t000000"
    assert wait_session(kube, operator, namespace, up)["status"]["phase"] == "Failed"
    kudig(namespace, "start", "downstream", "--session", "2024-01-01")
    down = wait_session(kube, operator, namespace, "downstream-20240101t000000")
    assert down["status"]["phase"] == "Succeeded", down["status"].get("failedTasks")
    upstream = session(kube, namespace, up)
    assert [a["phase"] for a in upstream["status"]["attempts"]] == ["Failed", "Succeeded"]
    assert tasks_by_name(down)["+downstream+after"]["state_params"]["log"] == "upstream is done\n"
    pods = Counter(
        p.metadata.annotations["kudig.io/task"] for p in task_pods(kube, namespace, down["metadata"]["name"])
    )
    assert pods == {}, "require> (and echo>) run in the controller, not in pods"


def test_sla_fail_fails_a_slow_session(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = write(
        tmp_path / "sla",
        {"late.dig": "sla:\n  duration: 00:00:03\n  fail: true\n+slow:\n  sh>: sleep 8\n"},
    )
    push(kube, namespace, root)
    kudig(namespace, "start", "late", "--session", "2024-01-01")
    obj = wait_session(kube, operator, namespace, "late-20240101t000000")
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["failedTasks"] == [{"name": "+late^sla^fail", "message": "SLA violation"}]
    tasks = tasks_by_name(obj)
    assert tasks["+late^sla^alert"]["state"] == "success"
    assert tasks["+late+slow"]["state"] == "success", "the late task was not stopped, only reported"


def test_kill_leaves_no_running_pod_and_resume_from(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = write(
        tmp_path / "life",
        {
            "hang.dig": "+p:\n  _parallel: true\n  +x:\n    sh>: sleep 300\n  +y:\n    sh>: sleep 300\n",
            "steps.dig": "+a:\n  sh>: echo a\n+b:\n  sh>: echo b\n+c:\n  sh>: test ${attempt_id} -ge 2\n",
        },
    )
    push(kube, namespace, root)
    kudig(namespace, "start", "hang", "--session", "2024-01-01")
    name = "hang-20240101t000000"
    wait_for(
        lambda: sum(p.status.phase == "Running" for p in task_pods(kube, namespace, name)) == 2,
        120,
        "both sleeping tasks to run",
    )
    assert "kill" in kudig(namespace, "kill", name).stdout.lower()
    wait_for(
        lambda: (
            not any(
                p.status.phase in ("Pending", "Running") and p.metadata.deletion_timestamp is None
                for p in task_pods(kube, namespace, name)
            )
        ),
        30,
        "no pod of the killed session left running",
    )
    assert wait_session(kube, operator, namespace, name)["status"]["phase"] == "Killed"
    assert "already finished" in kudig(namespace, "kill", name, ok=False).stderr

    kudig(namespace, "start", "steps", "--session", "2024-01-01")
    steps = "steps-20240101t000000"
    assert wait_session(kube, operator, namespace, steps)["status"]["phase"] == "Failed"
    assert (
        "No task matches '+nope'"
        in kudig(namespace, "retry", steps, "--resume-from", "+nope", ok=False).stderr
    )
    out = kudig(namespace, "retry", steps, "--resume-from", "+b").stdout
    assert "Started attempt 2" in out and "keeping 1 tasks" in out
    wait_for(lambda: session(kube, namespace, steps)["status"].get("attempt") == 2, 60, "attempt 2")
    obj = wait_session(kube, operator, namespace, steps)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    first = json.loads(kudig(namespace, "attempt", steps, "1", "-o", "json").stdout)
    assert first["phase"] == "Failed" and first["index"] == 1
    latest = json.loads(kudig(namespace, "attempt", steps, "-o", "json").stdout)
    assert latest["index"] == 2 and latest["phase"] == "Succeeded" and latest["progress"] == "4/4"
    assert "no attempt 3" in kudig(namespace, "attempt", steps, "3", ok=False).stderr
    runs = Counter(p.metadata.annotations["kudig.io/task"] for p in task_pods(kube, namespace, steps))
    assert runs == {"+steps+a": 1, "+steps+b": 2, "+steps+c": 2}, "+a kept, +b and after rerun"
