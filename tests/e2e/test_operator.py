"""The operator on a real cluster: examples, isolation, failures, restarts (issue #4)."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kube, wait_for
from .operator_fixtures import (
    GROUP,
    ROOT,
    VERSION,
    Operator,
    engine_state,
    kudig_cli,
    pod_log_of,
    push,
    session,
    start,
    task_pods,
    tasks_by_name,
    wait_session,
)

pytestmark = pytest.mark.e2e
EXAMPLES = ROOT / "examples"


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_example_etl(kube: Kube, namespace: str, operator: Operator) -> None:
    push(kube, namespace, EXAMPLES / "etl")
    name = start(kube, namespace, "etl", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    tasks = tasks_by_name(obj)
    assert tasks["+etl+transform"]["store_params"] == {"transformed_count": 19, "transformed_total": 1203}
    assert "loading 19 orders (total 1203) from shop for 2024-01-30" in pod_log_of(
        kube, namespace, name, "+etl+load"
    )
    assert "ETL 20240130: extracted=20 kept=19 total=1203" in tasks["+etl+report"]["state_params"]["log"]
    assert obj["status"]["progress"] == "5/5"


def test_example_fanout_limit_and_error(kube: Kube, namespace: str, operator: Operator) -> None:
    push(kube, namespace, EXAMPLES / "fanout")
    name = start(kube, namespace, "fanout", "2024-01-30T00:00:00+09:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    tasks = tasks_by_name(obj)
    assert tasks["+fanout+fan_in"]["store_params"] == {"published": "br,eu,in,jp,us"}
    # {limit: 2} is batching: a batch starts only after the previous one finished
    groups = [t for n, t in tasks.items() if n.startswith("+fanout+per_region^sub+") and n.count("+") == 3]
    groups.sort(key=lambda t: t["id"])
    batches = [groups[i : i + 2] for i in range(0, len(groups), 2)]
    for earlier, later in itertools.pairwise(batches):
        assert min(t["started_at"] or 0 for t in _leaves(tasks, later)) >= max(
            t["finished_at"] for t in _leaves(tasks, earlier)
        )
    failing = start(kube, namespace, "fanout", "2024-01-31T00:00:00+09:00", {"fail_region": "eu"})
    obj = wait_session(kube, operator, namespace, failing)
    assert obj["status"]["phase"] == "Failed"
    assert any("Command failed with code 3" in f["message"] for f in obj["status"]["failedTasks"])
    notify = tasks_by_name(obj)["+fanout^error+notify"]
    assert notify["state"] == "success"
    assert "fan-out failed for 2024-01-31: Command failed with code 3" in notify["state_params"]["log"]


def _leaves(tasks: dict[str, dict[str, Any]], groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    prefixes = tuple(g["name"] + "+" for g in groups)
    return [t for n, t in tasks.items() if n.startswith(prefixes) and not t.get("group")]


def test_example_docker_image(kube: Kube, namespace: str, operator: Operator) -> None:
    push(kube, namespace, EXAMPLES / "docker-image")
    name = start(kube, namespace, "hello", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    pods = {p.metadata.annotations["kudig.io/task"]: p for p in task_pods(kube, namespace, name)}
    assert pods["+hello+in_busybox"].spec.containers[0].image == "docker.io/library/busybox:1.35"
    assert "hello from BusyBox" in pod_log_of(kube, namespace, name, "+hello+in_busybox")
    assert "hello from python 3." in pod_log_of(kube, namespace, name, "+hello+in_runner")


def test_workspace_isolation_and_project_files(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = project(
        tmp_path,
        {
            "iso.dig": "+p:\n  _parallel: true\n  +writer:\n    sh>: echo mine > scratch.txt && cat data/input.txt\n"
            "  +reader:\n    sh>: sleep 1; test ! -e scratch.txt && echo clean\n"
            "+after:\n  sh>: test ! -e scratch.txt && cat data/input.txt\n",
            "data/input.txt": "project file\n",
        },
    )
    push(kube, namespace, root, "iso")
    name = start(kube, namespace, "iso", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    assert "project file" in pod_log_of(kube, namespace, name, "+iso+p+writer")
    assert "clean" in pod_log_of(kube, namespace, name, "+iso+p+reader")
    assert "project file" in pod_log_of(kube, namespace, name, "+iso+after")


def test_deleted_pod_is_a_failure_and_retried(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = project(tmp_path, {"del.dig": "+slow:\n  _retry: 1\n  sh>: sleep 6 && echo finished\n"})
    push(kube, namespace, root, "del")
    name = start(kube, namespace, "del", "2024-01-30T00:00:00+00:00")

    def running_pod() -> Any:
        pods = [p for p in task_pods(kube, namespace, name) if p.status.phase == "Running"]
        return pods[0] if pods else None

    pod = wait_for(running_pod, 120, "the task pod to run")
    kube.core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    assert tasks_by_name(obj)["+del+slow"]["retry_count"] == 1
    pods = task_pods(kube, namespace, name)
    assert len(pods) == 1 and pods[0].metadata.name != pod.metadata.name


def test_malformed_workflow_gets_a_condition(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    bad = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {"name": "broken"},
        "spec": {"dig": "+a:\n  echo>: ok\n+b:\n  sh>: x\n  py>: y\n"},
    }
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", bad)

    def condition() -> dict[str, Any] | None:
        obj = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", "broken")
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
        return conds.get("Compiled")

    cond = wait_for(condition, 60, "Compiled condition")
    assert cond["status"] == "False"
    assert "broken.dig:5: A task can't have more than one operator" in cond["message"]
    broken_session = start(kube, namespace, "broken", "2024-01-30T00:00:00+00:00")
    root = project(tmp_path, {"fine.dig": "+a:\n  echo>: still serving\n"})
    push(kube, namespace, root, "fine")
    name = start(kube, namespace, "fine", "2024-01-30T00:00:00+00:00")
    assert wait_session(kube, operator, namespace, name)["status"]["phase"] == "Succeeded"
    status = session(kube, namespace, broken_session).get("status") or {}
    assert status.get("phase") == "Error" and "more than one operator" in status.get("message", "")


def test_a_malicious_config_map_writes_nothing_outside_the_project(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    """Keys that decode to `a/../../../../../../kudig-e2e-escape` (binaryData) and
    `/tmp/kudig-e2e-pwned` (data) — both accepted by the API server — are refused with a
    condition, and no file lands anywhere outside the project (the cache is shared by every
    namespace the controller serves)."""
    import base64

    evil_dig = "+a:\n  echo>: hi\n"
    from kudig.api import encode_key

    escape_key = encode_key("a/" + "../" * 6 + "kudig-e2e-escape")  # a_.._.._.._..
    assert not escape_key.startswith("..")  # so the API server accepts it
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "evil-files"},
        "data": {"evil.dig": evil_dig, "_.tmp_.kudig-e2e-pwned": "owned"},
        "binaryData": {escape_key: base64.b64encode(b"owned").decode()},
    }
    kube.core.create_namespaced_config_map(namespace, cm)
    before = {p for p in operator.log_path.parent.parent.rglob("*")}
    wf = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {"name": "evil"},
        "spec": {"dig": evil_dig, "project": {"configMaps": ["evil-files"]}},
    }
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", wf)

    def condition() -> dict[str, Any] | None:
        obj = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", "evil")
        return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}.get("Compiled")

    cond = wait_for(condition, 60, "the Compiled condition")
    assert (cond["status"], cond["reason"]) == ("False", "UnsafeProjectFile"), cond
    assert "outside" in cond["message"] or "absolute" in cond["message"], cond["message"]
    name = start(kube, namespace, "evil", "2024-01-30T00:00:00+00:00")
    status = wait_session(kube, operator, namespace, name)["status"]
    assert status["phase"] == "Error" and "Unsafe project file" in status["message"]
    created = {p for p in operator.log_path.parent.parent.rglob("*")} - before
    assert not [p for p in created if "kudig-e2e" in p.name], created
    assert not Path("/tmp/kudig-e2e-pwned").exists()
    assert task_pods(kube, namespace, name) == []


def test_controller_killed_mid_session_runs_each_task_once(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    tasks = "".join(f"  +t{i}:\n    sh>: sleep 2 && echo ran-{i}\n" for i in range(20))
    root = project(tmp_path, {"fan.dig": f"+fan:\n  _parallel: true\n{tasks}+done:\n  echo>: all done\n"})
    push(kube, namespace, root, "fan")
    name = start(kube, namespace, "fan", "2024-01-30T00:00:00+00:00")
    wait_for(lambda: len(task_pods(kube, namespace, name)) >= 5, 120, "some task pods")
    operator.kill()
    # while the controller is down, pods finish and nobody records it
    wait_for(
        lambda: sum(p.status.phase == "Succeeded" for p in task_pods(kube, namespace, name)) >= 3,
        120,
        "pods to finish while the controller is down",
    )
    operator.start()
    obj = wait_session(kube, operator, namespace, name, timeout=240)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    pods = task_pods(kube, namespace, name)
    per_task = Counter(p.metadata.annotations["kudig.io/task"] for p in pods)
    assert len(pods) == 20 and set(per_task.values()) == {1}, per_task
    for i in range(20):
        assert pod_log_of(kube, namespace, name, f"+fan+fan+t{i}").strip() == f"ran-{i}"


def test_kill_and_retry(kube: Kube, namespace: str, operator: Operator, tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "kr.dig": '+first:\n  sh>: echo first\n+second:\n  sh>: test "$mode" = good && echo fixed\n'
            "+third:\n  sh>: sleep 60\n",
        },
    )
    push(kube, namespace, root, "kr")
    name = start(kube, namespace, "kr", "2024-01-30T00:00:00+00:00", {"mode": "bad"})
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Failed"
    assert [f["name"] for f in obj["status"]["failedTasks"]] == ["+kr+second"]
    kube.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "sessions",
        name,
        {"spec": {"attempt": 2, "retryMode": "failed", "params": {"mode": "good"}}},
    )
    wait_for(
        lambda: any(
            p.status.phase == "Running" and p.metadata.annotations["kudig.io/task"] == "+kr+third"
            for p in task_pods(kube, namespace, name)
        ),
        120,
        "third task to run",
    )
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "sessions", name, {"spec": {"kill": True}}
    )
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Killed"
    assert obj["status"]["attempt"] == 2
    tasks = tasks_by_name(obj)
    assert tasks["+kr+second"]["state"] == "success"
    assert tasks["+kr+third"]["state"] == "canceled"
    wait_for(
        lambda: (
            not any(
                p.metadata.annotations["kudig.io/task"] == "+kr+third"
                for p in task_pods(kube, namespace, name)
            )
        ),
        60,
        "killed pod to be deleted",
    )
    # the resumed attempt did not rerun +first: one pod for it across both attempts
    firsts = [
        p for p in task_pods(kube, namespace, name) if p.metadata.annotations["kudig.io/task"] == "+kr+first"
    ]
    assert len(firsts) == 1
    assert [a["phase"] for a in obj["status"]["attempts"]] == ["Failed", "Killed"]
    # the Session's Events, as `kubectl describe session` shows them (the API server accepted them)
    expected = ["Started", "TaskFailed", "Failed", "Started", "Killed"]

    def session_events() -> list[Any]:
        listed = kube.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        ours = [e for e in listed.items if e.reporting_component == "kudig.io/controller"]
        return sorted(ours, key=lambda e: e.metadata.name)  # <session>.<commit nanoseconds, hex>...

    wait_for(lambda: len(session_events()) >= len(expected), 30, "the Session's events")
    events = session_events()
    assert [e.reason for e in events] == expected
    assert events[1].type == "Warning" and events[1].message.startswith("+kr+second failed: ")
    assert events[3].message == "Attempt 2 started (retry of the failed tasks)"
    assert {(e.involved_object.kind, e.involved_object.uid) for e in events} == {
        ("Session", obj["metadata"]["uid"])
    }
    # the status write that committed them recorded them (the CRD keeps the field), and creating
    # one again, as a controller that took over after a crash does, is a 409: no duplicate
    assert obj["status"]["lastEvents"]["events"][-1]["reason"] == "Killed"
    from kudig_operator.events import SessionEvent, event_body

    from kudig.cluster.kube import Kube as Client

    again = event_body(obj, events[-1].metadata.name, SessionEvent("Normal", "Killed", "x"), 0.0, "e2e")
    assert Client(kube.api).create_event(namespace, again) is False
    metrics = operator.probe("metrics")[1]
    assert f'kudig_sessions_finished_total{{namespace="{namespace}",outcome="killed",workflow="kr"}} 1.0' in (
        metrics
    )
    assert 'kudig_task_runs_total{operator="sh",outcome="failed"}' in metrics


def test_secrets_resolved_in_pod_never_written(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "kudig-secrets"}, "stringData": {"db.password": "s3cr3t-value"}}
    )
    root = project(
        tmp_path,
        {
            "sec.dig": "+plain:\n  _export:\n    docker:\n      image: docker.io/library/busybox:1.35\n"
            '  _env:\n    PW: ${secret:db.password}\n  sh>: test "$PW" = "$(printf s3cr3t-%s value)" && echo plain-ok\n'
            "+runner:\n  sh>: test '${secret:db.password}' = \"$(printf s3cr3t-%s value)\" && echo runner-ok\n",
        },
    )  # the scripts build the expected value, so it is not in the pod spec either
    push(kube, namespace, root, "sec")
    name = start(kube, namespace, "sec", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    assert "plain-ok" in pod_log_of(kube, namespace, name, "+sec+plain")
    assert "runner-ok" in pod_log_of(kube, namespace, name, "+sec+runner")
    for pod in task_pods(kube, namespace, name):
        assert "s3cr3t-value" not in str(kube.api.sanitize_for_serialization(pod))
    assert "s3cr3t-value" not in str(obj)
    assert "s3cr3t-value" not in str(engine_state(obj))


def test_push_render_is_applyable(tmp_path: Path) -> None:
    """`kudig push --dry-run` output is what GitOps commits: plain objects, no status."""
    from kudig.cluster.project import build_objects

    shutil.copytree(EXAMPLES / "etl", tmp_path / "etl")
    objects = build_objects(tmp_path / "etl", "etl", "ns")
    kinds = [o["kind"] for o in objects]
    assert kinds == ["ConfigMap", "Workflow"]
    assert "scripts_.etl.py" in objects[0]["data"] and "scripts_.____init____.py" in objects[0]["data"]
    assert objects[1]["spec"]["project"]["configMaps"] == ["etl-files"]


def test_cli_round_trip(kube: Kube, namespace: str, operator: Operator, tmp_path: Path) -> None:
    """The digdag-style CLI against the cluster: push, start, sessions, tasks, log, retry."""
    import os
    import subprocess
    import sys

    def kudig(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return kudig_cli(*args, namespace=namespace, ok=ok)

    root = project(
        tmp_path, {"cli.dig": '+greet:\n  sh>: echo hello-$who\n+check:\n  sh>: test "$who" = world\n'}
    )
    assert "workflow/cli created" in kudig("push", str(root), "--name", "cli").stdout
    started = kudig("start", "cli", "--session", "2024-01-30", "-p", "who=moon").stdout
    name = "cli-20240130t000000"
    assert f"Started a session: {name}" in started
    assert "already exists" in kudig("start", "cli", "--session", "2024-01-30", ok=False).stderr
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Failed"
    assert "Failed" in kudig("sessions").stdout
    kudig("start", "cli", "--session", "2024-01-31", "-p", "who=world")
    wait_session(kube, operator, namespace, "cli-20240131t000000")
    failed = json.loads(kudig("sessions", "--failed", "-o", "json").stdout)
    assert [s["name"] for s in failed] == [name], "exactly the failed ones"
    assert [s["name"] for s in json.loads(kudig("sessions", "--last", "1", "-o", "json").stdout)] == [
        "cli-20240131t000000"
    ]
    assert json.loads(kudig("sessions", "--running", "-o", "json").stdout) == []
    tasks = kudig("tasks", name).stdout
    assert "+cli+greet" in tasks and "success" in tasks and "Command failed with code 1" in tasks
    assert "hello-moon" in kudig("log", name, "+greet").stdout
    assert "Started attempt 2" in kudig("retry", name, "-p", "who=world").stdout
    wait_for(lambda: session(kube, namespace, name)["status"].get("attempt") == 2, 60, "attempt 2")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    attempts = kudig("attempts", name).stdout
    assert "Failed" in attempts and "Succeeded" in attempts
    assert [a["phase"] for a in json.loads(kudig("attempts", name, "-o", "json").stdout)] == [
        "Failed",
        "Succeeded",
    ]
    assert json.loads(kudig("session", name, "-o", "json").stdout)["phase"] == "Succeeded"
    tasks_json = json.loads(kudig("tasks", name, "-o", "json").stdout)
    assert {t["name"]: t["state"] for t in tasks_json}["+cli+check"] == "success"

    # log -f follows a running task, then the next ones, and ends with the session
    (root / "slow.dig").write_text(
        "+count:\n  sh>: for i in 1 2 3; do echo line-$i; sleep 1; done\n+after:\n  sh>: echo after-count\n"
    )
    kudig("push", str(root), "--name", "cli")
    kudig("start", "slow", "--session", "2024-01-30")
    follow = subprocess.Popen(
        [sys.executable, "-m", "kudig.cli", "log", "slow-20240130t000000", "-f", "-n", namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    out, err = follow.communicate(timeout=180)
    assert follow.returncode == 0, err
    positions = [out.find(text) for text in ("line-1", "line-2", "line-3", "after-count")]
    assert -1 not in positions and positions == sorted(positions), out


def test_py_generated_subtasks_and_exports(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    """digdag.env.add_subtask/export/store come back through the termination message."""
    root = project(
        tmp_path,
        {
            "gen.dig": "+plan:\n  py>: plan.make\n+after:\n  echo>: planned=${planned}\n",
            "plan.py": "import digdag\n\n\ndef make():\n"
            "    digdag.env.export({'batch': 'b7'})\n"
            "    digdag.env.store({'planned': 2})\n"
            "    for part in ('p1', 'p2'):\n"
            # `part` before `sh>`: a task's own key is visible to `${}` in the keys after it (digdag)
            "        digdag.env.add_subtask({'part': part, 'sh>': 'echo part=${part} batch=${batch}'})\n",
        },
    )
    push(kube, namespace, root, "gen")
    name = start(kube, namespace, "gen", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    tasks = tasks_by_name(obj)
    assert "part=p1 batch=b7" in pod_log_of(kube, namespace, name, "+gen+plan^sub+subtask0")
    assert "part=p2 batch=b7" in pod_log_of(kube, namespace, name, "+gen+plan^sub+subtask1")
    assert tasks["+gen+after"]["state_params"]["log"] == "planned=2\n"


def test_thousand_task_session_fits_in_status(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    """A 1,000-task session (control operators run in the controller, so no pods) stays compact."""
    import json

    root = project(
        tmp_path,
        {
            "big.dig": "+fan:\n  loop>: 990\n  _parallel: true\n  _do:\n    echo>: item ${i}\n+last:\n  sh>: echo done\n"
        },
    )
    push(kube, namespace, root, "big")
    name = start(kube, namespace, "big", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    assert obj["status"]["progress"] == "994/994"  # root, +fan, ^sub, 990 loops, +last
    size = len(json.dumps(obj))
    assert size < 256 * 1024, size
    assert len(task_pods(kube, namespace, name)) == 1


def test_finished_sessions_are_deleted_after_their_ttl(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = project(tmp_path, {"brief.dig": "+a:\n  sh>: echo short-lived\n"})
    push(kube, namespace, root, "brief")
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "workflows", "brief", {"spec": {"history": {"ttlSecondsAfterFinished": 5}}}
    )
    wait_for(
        lambda: (
            kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", "brief")
            .get("status", {})
            .get("revision")
            == 2
        ),
        30,
        "the new revision to compile",
    )
    name = start(kube, namespace, "brief", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded"
    assert "short-lived" in pod_log_of(kube, namespace, name, "+brief+a"), "logs readable until the TTL"

    def gone() -> bool:
        names = [
            s["metadata"]["name"]
            for s in kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "sessions")["items"]
        ]
        return name not in names and not task_pods(kube, namespace, name)

    wait_for(gone, 90, "the session and its pods to be deleted after the TTL")
