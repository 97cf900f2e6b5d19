"""The controller driven through an in-memory Kubernetes API (`FakeKube`): every decision of a
reconcile — first attempt, retry/resume, kill, lost pods, image errors, conflicts, crashes,
timers, large results, unsafe project files — with no cluster, and the costs it pays."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fake_kube import Crash, FakeKube, kube_api
from kudig_operator.controller import Controller, Wakeups
from kudig_operator.health import Watchdog
from kudig_runner.protocol import INPUT_PART_KEY, dumps_pointer, frame_result

from kudig.api import SESSIONS, WORKFLOWS, encode_key, project_digest

NS = "data"
T0 = 1_706_572_800.0  # 2024-01-30T00:00:00Z


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.kube = FakeKube()
        self.now = T0
        self.ctl = self.controller()

    def controller(self) -> Controller:
        """A controller (a new one after a simulated crash: nothing remembered)."""
        ctl = Controller(
            kube_api(self.kube),
            runner_image="localhost/kudig/runner:test",
            cache_dir=self.tmp / "cache",
            identity="test-controller",
            clock=lambda: self.now,
        )
        ctl.wakeups = Wakeups(ctl.fire, clock=lambda: self.now)
        return ctl

    # ----- objects

    def workflow(self, dig: str, name: str = "wf", files: dict[str, str] | None = None, **spec: Any) -> None:
        files = {f"{name}.dig": dig, **(files or {})}
        data = {encode_key(k): v for k, v in files.items()}
        self.kube.add_config_map(NS, f"{name}-files", data)
        body = {
            "metadata": {"name": name},
            "spec": {"dig": dig, "project": {"configMaps": [f"{name}-files"]}, **spec},
        }
        obj = self.kube.add(WORKFLOWS, NS, body)
        self.ctl.on_workflow_event(NS, name, obj)

    def session(self, name: str = "s1", workflow: str = "wf", **spec: Any) -> str:
        body = {
            "metadata": {"name": name},
            "spec": {"workflow": workflow, "sessionTime": "2024-01-30T00:00:00+00:00", **spec},
        }
        obj = self.kube.add(SESSIONS, NS, body)
        self.ctl.on_session_event(NS, name, obj)
        return name

    def watch_session(self, name: str = "s1") -> None:
        """Deliver the Session's current version as the watch would."""
        self.ctl.on_session_event(NS, name, self.kube.obj(SESSIONS, NS, name))

    def patch(self, name: str = "s1", **spec: Any) -> None:
        obj = self.kube.set_spec(SESSIONS, NS, name, **spec)
        self.ctl.on_session_event(NS, name, obj)

    # ----- pods

    def pods(self) -> list[str]:
        return self.kube.pod_names(NS)

    def task_of(self, pod: str) -> str:
        return str(self.kube.pod(NS, pod)["metadata"]["annotations"]["kudig.io/task"])

    def pod_for(self, task: str) -> str:
        names = [p for p in self.pods() if self.task_of(p).endswith(task)]
        assert len(names) == 1, (task, names)
        return names[0]

    def task_input(self, pod: str) -> dict[str, Any]:
        """What the runner in that pod reads: the env var, or the input ConfigMaps it mounts."""
        spec = self.kube.pod(NS, pod)["spec"]
        env = spec["containers"][0]["env"]
        value = next((e["value"] for e in env if e["name"] == "KUDIG_TASK_INPUT"), None)
        if value is not None:
            return dict(json.loads(value.replace("$$(", "$(")))
        parts = [v["configMap"]["name"] for v in spec["volumes"] if v["name"].startswith("input-")]
        assert parts, "no task input in the pod"
        packed = b"".join(
            base64.b64decode(self.kube.config_maps[(NS, n)]["binaryData"][INPUT_PART_KEY]) for n in parts
        )
        return dict(json.loads(gzip.decompress(packed)))

    def finish(self, pod: str, store: dict[str, Any] | None = None, **kw: Any) -> None:
        output = kw.pop("output", {"store_params": store or {}, "error": None})
        self.kube.finish_pod(NS, pod, output=output, **kw)
        self.ctl.on_pod_event(NS, self.kube.pod(NS, pod), False)

    def fail(self, pod: str, message: str = "Command failed with code 1 (runtime)") -> None:
        output = {"error": {"message": message, "class": "RuntimeError", "backtrace": ""}}
        self.kube.finish_pod(NS, pod, output=output, exit_code=1)
        self.ctl.on_pod_event(NS, self.kube.pod(NS, pod), False)

    def delete_pod(self, pod: str) -> None:
        body = self.kube.pod(NS, pod)
        self.kube.delete_pod(NS, pod)
        self.ctl.on_pod_event(NS, body, True)

    def status(self, name: str = "s1") -> dict[str, Any]:
        return self.kube.status(NS, name)

    def tasks(self, name: str = "s1") -> dict[str, dict[str, Any]]:
        from kudig_operator import results

        data = results.decode_json(self.status(name)["engine"]["data"])
        fetched = {n: results.blob_of(cm) for (ns, n), cm in self.kube.config_maps.items() if ns == NS}
        return {t["name"]: t for t in results.rows(data, fetched) if not t.get("superseded")}


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


CHAIN = """
+a:
  sh>: echo a
+b:
  echo>: between
+c:
  sh>: echo value=${x}
"""


def test_first_attempt_runs_the_tasks_in_order(h: Harness) -> None:
    h.workflow(CHAIN)
    h.session()
    assert [h.task_of(p) for p in h.pods()] == ["+wf+a"]
    assert h.status()["phase"] == "Running" and h.status()["progress"] == "0/4"
    h.finish(h.pod_for("+a"), {"x": 42})
    c = h.pod_for("+c")
    assert h.task_input(c)["config"]["_command"] == "echo value=42"
    assert h.tasks()["+wf+b"]["state_params"]["log"] == "between\n"
    h.finish(c)
    status = h.status()
    assert status["phase"] == "Succeeded" and status["progress"] == "4/4"
    assert status["controller"] == "test-controller"
    assert status["attempts"][0]["phase"] == "Succeeded"
    assert h.kube.deleted_pods == []
    assert h.ctl.memory()["sessions"] == 0, "a finished session leaves nothing behind"


def test_retry_resumes_failed_tasks_only(h: Harness) -> None:
    h.workflow(CHAIN)
    h.session()
    h.finish(h.pod_for("+a"), {"x": 1})
    h.fail(h.pod_for("+c"))
    status = h.status()
    assert status["phase"] == "Failed"
    assert status["failedTasks"] == [{"name": "+wf+c", "message": "Command failed with code 1 (runtime)"}]
    h.patch(attempt=2, retryMode="failed")
    assert h.status()["attempt"] == 2
    new = [p for p in h.pods() if h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/attempt"] == "2"]
    assert [h.task_of(p) for p in new] == ["+wf+c"], "+a succeeded in attempt 1 and is not rerun"
    assert h.task_input(new[0])["config"]["_command"] == "echo value=1", "its stored params carry over"
    h.finish(new[0])
    status = h.status()
    assert status["phase"] == "Succeeded"
    assert [a["phase"] for a in status["attempts"]] == ["Failed", "Succeeded"]


def test_retry_all_reruns_everything(h: Harness) -> None:
    h.workflow(CHAIN)
    h.session()
    h.finish(h.pod_for("+a"), {"x": 1})
    h.finish(h.pod_for("+c"))
    h.patch(attempt=2, retryMode="all")
    new = [p for p in h.pods() if h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/attempt"] == "2"]
    assert [h.task_of(p) for p in new] == ["+wf+a"]


def test_retry_resume_from_reruns_the_task_and_what_follows(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n+b:\n  sh>: echo b\n+c:\n  sh>: echo value=${x}\n")
    h.session()
    h.finish(h.pod_for("+a"), {"x": 7})
    h.finish(h.pod_for("+b"))
    h.fail(h.pod_for("+c"))
    h.patch(attempt=2, retryMode="from", resumeFrom="+b")
    new = [p for p in h.pods() if h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/attempt"] == "2"]
    assert [h.task_of(p) for p in new] == ["+wf+b"], "+a is kept, +b reruns"
    h.finish(new[0])
    c = [
        p
        for p in h.pods()
        if p not in new and h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/attempt"] == "2"
    ]
    assert [h.task_of(p) for p in c] == ["+wf+c"]
    assert h.task_input(c[0])["config"]["_command"] == "echo value=7", "+a's stored params carry over"


def test_retry_resume_from_an_unknown_task_says_why(h: Harness) -> None:
    h.workflow(CHAIN)
    h.session()
    h.fail(h.pod_for("+a"))
    h.patch(attempt=2, retryMode="from", resumeFrom="+nope")
    status = h.status()
    assert status["phase"] == "Failed" and "No task matches '+nope'" in status["message"]
    assert len(h.kube.created_pods) == 1


def test_sla_wakes_the_session_and_fails_it(h: Harness) -> None:
    h.workflow("sla:\n  duration: 00:10\n  fail: true\n+a:\n  sh>: sleep 3600\n")
    h.session()
    assert h.ctl.wakeups is not None and h.ctl.wakeups.due(("session", (NS, "s1"))) == T0 + 600
    h.now = T0 + 600
    h.ctl.fire(("session", (NS, "s1")))
    tasks = h.tasks()
    # the alert is a notify> task: a pod of its own (it sends through the operator's notifier)
    assert tasks["+wf^sla^fail"]["state"] == "error" and tasks["+wf^sla^alert"]["state"] == "running"
    h.finish(h.pod_for("^sla^alert"))
    assert h.tasks()["+wf^sla^alert"]["state"] == "success"
    assert h.status()["phase"] == "Running", "the running task goes on"
    h.finish(h.pod_for("+a"))
    status = h.status()
    assert status["phase"] == "Failed"
    assert status["failedTasks"] == [{"name": "+wf^sla^fail", "message": "SLA violation"}]


UP = "up-20240130t000000"  # the upstream's Session at the same session time: one name


def _require_setup(h: Harness, options: str = "") -> None:
    h.workflow("+u:\n  sh>: echo up\n", name="up")
    h.workflow(f"+r:\n  require>: up\n{options}+d:\n  sh>: echo down\n", name="down")
    h.session("s1", workflow="down")
    h.ctl.fire(("session", (NS, "s1")))  # the immediate re-plan the first plan asked for


def test_require_starts_the_upstream_and_waits_for_it(h: Harness) -> None:
    _require_setup(h, "  params: {day: 1}\n")
    up = h.kube.obj(SESSIONS, NS, UP)
    assert up["spec"]["workflow"] == "up" and up["spec"]["params"] == {"day": 1}
    assert up["metadata"]["annotations"]["kudig.io/required-by"] == "s1/+down+r"
    assert h.pods() == [], "a require> task has no pod"
    assert h.tasks()["+down+r"]["state"] == "running"
    h.watch_session(UP)
    h.finish(h.pod_for("+up+u"))
    assert h.status(UP)["phase"] == "Succeeded"
    # the upstream's end re-planned the waiting session at once: no polling
    assert sorted(h.task_of(p) for p in h.pods()) == ["+down+d", "+up+u"]
    h.finish(h.pod_for("+down+d"))
    assert h.status()["phase"] == "Succeeded"


def test_require_fails_when_the_upstream_fails(h: Harness) -> None:
    _require_setup(h)
    h.watch_session(UP)
    h.fail(h.pod_for("+up+u"))
    status = h.status()
    assert status["phase"] == "Failed"
    assert (
        "Dependent workflow failed. Session: up-20240130t000000, attempt: 1"
        in status["failedTasks"][0]["message"]
    )


def test_require_ignore_failure(h: Harness) -> None:
    _require_setup(h, "  ignore_failure: true\n")
    h.watch_session(UP)
    h.fail(h.pod_for("+up+u"))
    assert sorted(h.task_of(p) for p in h.pods()) == ["+down+d", "+up+u"]


@pytest.mark.parametrize(
    ("rerun_on", "upstream_fails", "attempts", "parent"),
    [
        ("none", False, 1, "Succeeded"),
        ("none", True, 1, "Failed"),
        ("all", False, 2, "Succeeded"),
        ("failed", True, 2, "Succeeded"),
        ("failed", False, 1, "Succeeded"),
    ],
)
def test_require_rerun_on_matrix(
    h: Harness, rerun_on: str, upstream_fails: bool, attempts: int, parent: str
) -> None:
    """digdag's RequireIT.testRerunOnParam: the upstream already ran when the task starts."""
    h.workflow("+u:\n  sh>: echo up\n", name="up")
    h.session(UP, workflow="up")
    (h.fail if upstream_fails else h.finish)(h.pod_for("+up+u"))
    h.workflow(f"+r:\n  require>: up\n  rerun_on: {rerun_on}\n+d:\n  sh>: echo down\n", name="down")
    h.session("s1", workflow="down")
    h.ctl.fire(("session", (NS, "s1")))
    if attempts == 2:
        h.watch_session(UP)  # the new attempt's spec change reaches the controller
        assert h.kube.obj(SESSIONS, NS, UP)["spec"]["attempt"] == 2
        rerun = [p for p in h.pods() if h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/attempt"] == "2"]
        h.finish(rerun[0])  # the second attempt succeeds
    assert len(h.status(UP)["attempts"]) == attempts
    if parent == "Succeeded":
        h.finish(h.pod_for("+down+d"))
    assert h.status()["phase"] == parent


def test_require_of_a_missing_workflow_fails_with_the_name(h: Harness) -> None:
    h.workflow("+r:\n  require>: nope\n", name="down")
    h.session("s1", workflow="down")
    status = h.status()
    assert status["phase"] == "Failed"
    assert "require>: workflow 'nope' not found in this project" in status["failedTasks"][0]["message"]


def test_kill_stops_a_waiting_require(h: Harness) -> None:
    _require_setup(h)
    h.patch("s1", kill=True)
    assert h.status()["phase"] == "Killed"
    assert h.tasks()["+down+r"]["state"] == "canceled"


def test_kill_deletes_running_pods_after_the_commit(h: Harness) -> None:
    h.workflow("+p:\n  _parallel: true\n  +x:\n    sh>: sleep 100\n  +y:\n    sh>: sleep 100\n")
    h.session()
    running = h.pods()
    assert len(running) == 2
    order: list[str] = []
    h.kube.before("delete_pod", lambda: order.append("delete:" + str(h.kube.status(NS, "s1").get("phase"))))
    h.patch(kill=True)
    assert sorted(h.kube.deleted_pods) == sorted(running)
    assert order and order[0] == "delete:Running", "pods are deleted after the status write"
    for pod in running:
        h.ctl.on_pod_event(
            NS, {"metadata": {"name": pod, "ownerReferences": [{"kind": "Session", "name": "s1"}]}}, True
        )
    status = h.status()
    assert status["phase"] == "Killed"
    assert {t["state"] for n, t in h.tasks().items() if n.endswith(("+x", "+y"))} == {"canceled"}


def test_a_pod_deleted_while_running_is_retried(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n  _retry: 1\n")
    h.session()
    first = h.pod_for("+a")
    h.delete_pod(first)
    second = h.pod_for("+a")
    assert second != first, "a retry gets a new pod name"
    assert h.tasks()["+wf+a"]["retry_count"] == 1
    h.finish(second)
    assert h.status()["phase"] == "Succeeded"


def test_image_pull_errors_fail_without_retry(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n  _retry: 3\n  docker:\n    image: nowhere/none:1\n")
    h.session()
    pod = h.pod_for("+a")
    waiting = {"waiting": {"reason": "ErrImagePull", "message": "pull access denied"}}
    h.kube.set_pod_status(
        NS, pod, {"phase": "Pending", "containerStatuses": [{"name": "task", "state": waiting}]}
    )
    h.ctl.on_pod_event(NS, h.kube.pod(NS, pod), False)
    status = h.status()
    assert status["phase"] == "Failed"
    assert "ErrImagePull: pull access denied" in status["failedTasks"][0]["message"]
    assert h.tasks()["+wf+a"].get("retry_count", 0) == 0
    assert h.kube.deleted_pods == [pod], "the pod stuck on its image is cleaned up"


def test_a_conflicting_status_write_is_planned_again_without_twins(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n+b:\n  sh>: echo b\n")
    obj = h.kube.add(
        SESSIONS,
        NS,
        {"metadata": {"name": "s1"}, "spec": {"workflow": "wf", "sessionTime": "2024-01-30T00:00:00Z"}},
    )
    # somebody else writes the Session between our read and our write (a label, say)
    h.kube.before("replace_status", lambda: h.kube.set_spec(SESSIONS, NS, "s1", params={"p": 1}))
    h.ctl.on_session_event(NS, "s1", obj)
    assert h.ctl.stats["conflicts"] == 1
    assert h.kube.created_pods == [h.pod_for("+a")], "the second plan adopted the first plan's pod"
    assert h.status()["phase"] == "Running"


def test_a_crash_between_pod_creation_and_status_write_adopts_the_pods(h: Harness) -> None:
    h.workflow(
        "+p:\n  _parallel: true\n  +x:\n    sh>: echo x\n  +y:\n    sh>: echo y\n  +z:\n    sh>: echo z\n"
    )
    h.kube.fail_next("replace_status")
    with pytest.raises(Crash):
        h.session()
    assert len(h.kube.created_pods) == 3 and "engine" not in h.status()
    h.ctl = h.controller()  # restarted: remembers nothing
    h.watch_session()
    assert len(h.kube.created_pods) == 3, "no twin pods"
    assert h.ctl.stats["pods_adopted"] == 3
    for pod in h.pods():
        h.finish(pod)
    assert h.status()["phase"] == "Succeeded"


def test_a_kill_planned_against_a_stale_session_leaves_no_orphan(h: Harness) -> None:
    h.workflow("+a:\n  sh>: sleep 100\n")
    obj = h.kube.add(
        SESSIONS,
        NS,
        {"metadata": {"name": "s1"}, "spec": {"workflow": "wf", "sessionTime": "2024-01-30T00:00:00Z"}},
    )
    # the plan creates +a's pod; before its status write lands, `kudig kill` patches the spec
    h.kube.before("replace_status", lambda: h.kube.set_spec(SESSIONS, NS, "s1", kill=True))
    h.ctl.on_session_event(NS, "s1", obj)
    assert h.status()["phase"] == "Killed"
    assert h.pods() == [], "the pod of the uncommitted plan was deleted"


def test_a_kill_after_a_restart_sweeps_pods_this_controller_never_saw(h: Harness) -> None:
    h.workflow("+a:\n  sh>: sleep 100\n")
    h.kube.fail_next("replace_status")
    with pytest.raises(Crash):
        h.session()
    assert len(h.pods()) == 1
    h.kube.set_spec(SESSIONS, NS, "s1", kill=True)
    h.ctl = h.controller()
    h.watch_session()
    assert h.status()["phase"] == "Killed" and h.pods() == []


def test_retry_intervals_wake_the_session_at_the_right_time(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n  _retry:\n    limit: 2\n    interval: 10\n")
    h.session()
    h.fail(h.pod_for("+a"))
    assert h.tasks()["+wf+a"]["state"] == "retry_waiting"
    assert h.ctl.wakeups is not None and h.ctl.wakeups.due(("session", (NS, "s1"))) == T0 + 10
    assert len(h.kube.created_pods) == 1
    h.now = T0 + 10
    h.ctl.fire(("session", (NS, "s1")))
    assert len(h.kube.created_pods) == 2
    h.finish(h.kube.created_pods[-1])
    assert h.status()["phase"] == "Succeeded"
    assert h.ctl.wakeups.due(("session", (NS, "s1"))) is None


def test_wait_operator_wakes_the_session(h: Harness) -> None:
    h.workflow("+w:\n  wait>: 30s\n+b:\n  sh>: echo b\n")
    h.session()
    assert h.pods() == []
    assert h.status()["nextWakeup"] == "2024-01-30T00:00:30Z"
    assert h.ctl.wakeups is not None and h.ctl.wakeups.due(("session", (NS, "s1"))) == T0 + 30
    h.now = T0 + 30
    h.ctl.fire(("session", (NS, "s1")))
    assert [h.task_of(p) for p in h.pods()] == ["+wf+b"]


def test_large_results_come_from_the_log(h: Harness) -> None:
    h.workflow("+a:\n  py>: m.f\n+b:\n  sh>: echo ${rows.length}\n")
    h.session()
    rows = [{"id": i, "name": f"row-{i}"} for i in range(300)]
    data = json.dumps({"store_params": {"rows": rows}, "error": None}).encode()
    pointer, lines = frame_result(data)
    log = "user output\n" + b"".join(lines).decode() + "noise after\n"
    pod = h.pod_for("+a")
    h.kube.finish_pod(NS, pod, message=dumps_pointer(pointer).decode(), log=log)
    h.ctl.on_pod_event(NS, h.kube.pod(NS, pod), False)
    assert h.ctl.stats["log_reads"] == 1
    assert h.task_input(h.pod_for("+b"))["config"]["_command"] == "echo 300"


def test_a_result_lost_from_the_log_fails_the_task_clearly(h: Harness) -> None:
    h.workflow("+a:\n  py>: m.f\n")
    h.session()
    pointer, _lines = frame_result(b'{"store_params": {"x": 1}}')
    pod = h.pod_for("+a")
    h.kube.finish_pod(NS, pod, message=dumps_pointer(pointer).decode(), log="the frame was rotated away\n")
    h.ctl.on_pod_event(NS, h.kube.pod(NS, pod), False)
    assert h.status()["phase"] == "Failed"
    assert "Task result lost: result frame incomplete" in h.status()["failedTasks"][0]["message"]


def test_large_results_live_in_config_maps_and_survive_a_restart(h: Harness) -> None:
    h.workflow(
        "+t:\n  for_range>:\n    from: 0\n    to: 40\n    step: 1\n  _parallel: true\n  _do:\n    sh>: echo ${range.index}\n"
        "+after:\n  sh>: echo ${big_39.length}\n"
    )
    h.session()
    for pod in h.pods():
        index = h.task_input(pod)["config"]["_command"].split()[-1]
        h.finish(pod, {f"big_{index}": "x" * 3000})
    status = h.status()
    engine = base64.b64decode(status["engine"]["data"])
    assert len(engine) < 16 * 1024, len(engine)
    assert h.tasks()["+wf+t"]["state"] == "success"
    result_cms = [n for (ns, n) in h.kube.config_maps if "-r-" in n]
    assert len(result_cms) >= 40  # each stored result, and the loop's generated subtasks
    cm = h.kube.config_maps[(NS, result_cms[0])]
    assert cm["immutable"] is True and cm["metadata"]["ownerReferences"][0]["name"] == "s1"
    h.ctl = h.controller()  # a restart reads them back
    h.watch_session()
    assert h.task_input(h.pod_for("+after"))["config"]["_command"] == "echo 3000"


def test_a_thousand_small_results_keep_the_session_small(h: Harness) -> None:
    h.workflow(
        "+t:\n  for_range>:\n    from: 0\n    to: 995\n    step: 1\n  _parallel: true\n  _do:\n    py>: m.f\n"
    )
    h.session()
    import random

    rng = random.Random(7)
    for pod in h.pods():
        h.kube.finish_pod(
            NS, pod, output={"store_params": {pod: "".join(rng.choices("abcdef0123456789", k=1024))}}
        )
    # the watch missed every one of them: the resync's fresh reconcile finds them all at once
    h.ctl.reconcile_session(NS, "s1", fresh=True)
    status = h.status()
    assert status["phase"] == "Succeeded"
    obj_size = len(json.dumps(h.kube.obj(SESSIONS, NS, "s1")))
    assert obj_size < 512 * 1024, obj_size  # etcd's limit is 1.5 MiB


def test_an_unsafe_project_file_is_refused_and_nothing_is_written_outside(h: Harness, tmp_path: Path) -> None:
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    h.kube.add_config_map(
        NS,
        "evil-files",
        {"evil.dig": "+a:\n  echo>: hi\n", "_.tmp_.kudig-pwned": "x"},
        binary={".._.._.._.._escape": b"owned"},
    )
    obj = h.kube.add(
        WORKFLOWS,
        NS,
        {
            "metadata": {"name": "evil"},
            "spec": {"dig": "+a:\n  echo>: hi\n", "project": {"configMaps": ["evil-files"]}},
        },
    )
    h.ctl.on_workflow_event(NS, "evil", obj)
    cond = h.kube.obj(WORKFLOWS, NS, "evil")["status"]["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("False", "UnsafeProjectFile")
    assert "escape" in cond["message"] or "kudig-pwned" in cond["message"]
    after = sorted(str(p) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and "cache" not in p] == []
    assert not any(p.endswith(("escape", "kudig-pwned")) for p in after)
    assert not Path("/tmp/kudig-pwned").exists()
    h.session("s2", workflow="evil")
    assert h.status("s2")["phase"] == "Error" and "Unsafe project file" in h.status("s2")["message"]


def test_a_digest_mismatch_waits_for_the_config_maps(h: Harness) -> None:
    dig = "+a:\n  echo>: hi\n"
    h.kube.add_config_map(NS, "wf-files", {"wf.dig": dig, "x.txt": "old"})
    wanted = project_digest([("wf.dig", dig.encode()), ("x.txt", b"new")])
    obj = h.kube.add(
        WORKFLOWS,
        NS,
        {
            "metadata": {"name": "wf"},
            "spec": {"dig": dig, "project": {"configMaps": ["wf-files"], "digest": wanted}},
        },
    )
    h.ctl.on_workflow_event(NS, "wf", obj)
    cond = h.kube.obj(WORKFLOWS, NS, "wf")["status"]["conditions"][0]
    assert cond["reason"] == "ProjectFilesPending"
    assert h.ctl.wakeups is not None and h.ctl.wakeups.due(("workflow", (NS, "wf"))) == T0 + 5
    h.kube.config_maps[(NS, "wf-files")]["data"]["x.txt"] = "new"
    h.ctl.fire(("workflow", (NS, "wf")))
    status = h.kube.obj(WORKFLOWS, NS, "wf")["status"]
    assert status["conditions"][0]["reason"] == "Compiled" and status["projectDigest"] == wanted


def test_a_session_waits_for_its_workflow(h: Harness) -> None:
    h.session()
    assert h.status()["phase"] == "Error" and "Workflow 'wf' not found" in h.status()["message"]
    h.workflow("+a:\n  sh>: echo a\n")
    assert h.status()["phase"] == "Running" and len(h.pods()) == 1


def test_reconciles_cost_few_requests_and_read_no_config_maps(h: Harness) -> None:
    h.workflow("\n".join(f"+t{i}:\n  sh>: echo {i}" for i in range(30)) + "\n")
    h.kube.requests.clear()
    h.session()
    for _ in range(30):
        running = [p for p in h.pods() if h.kube.pod(NS, p)["status"]["phase"] == "Pending"]
        assert len(running) == 1, running
        h.finish(running[0])
        h.watch_session()  # the watch echoes our own status write: no request
    assert h.status()["phase"] == "Succeeded"
    # two Events per Session (Started, Succeeded), none per task that succeeds
    assert h.kube.requests.pop(("create", "events")) == 2
    total = sum(h.kube.requests.values())
    assert total / 30 <= 2.1, dict(h.kube.requests)
    assert h.kube.requests[("get", "configmaps")] == 0
    assert h.kube.requests[("get", "sessions")] == 0


def test_memory_follows_the_live_objects(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n  _retry:\n    limit: 1\n    interval: 5\n")
    for i in range(20):
        h.session(f"s{i}")
        (pod,) = [
            p for p in h.pods() if h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/session"] == f"s{i}"
        ]
        h.fail(pod)
    assert h.ctl.memory()["wakeups"] == 20
    for i in range(20):
        h.ctl.on_session_event(NS, f"s{i}", None)
    h.ctl.on_workflow_event(NS, "wf", None)
    assert set(h.ctl.memory().values()) == {0}, h.ctl.memory()
    assert not (h.tmp / "cache" / NS / "wf").exists()


def test_watchdog_reconciles_what_the_watch_missed_and_reports_a_stale_watch(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n")
    dog = Watchdog(h.ctl, period=30, clock=lambda: h.now)
    assert dog.ready(h.now)[0] is False
    # a Session the watch never delivered
    h.kube.add(
        SESSIONS,
        NS,
        {"metadata": {"name": "missed"}, "spec": {"workflow": "wf", "sessionTime": "2024-01-30T00:00:00Z"}},
    )
    dog.saw(WORKFLOWS, NS, "wf", h.kube.obj(WORKFLOWS, NS, "wf")["metadata"]["resourceVersion"])
    dog.resync_once()
    assert h.pods() == [], "a version listed once may be on its way through the watch"
    h.now += 30
    dog.resync_once()
    assert len(h.pods()) == 1, "the resync started it"
    assert dog.ready(h.now) == (True, "ok")
    h.now += 170
    healthy, why = dog.healthy(h.now)
    assert not healthy and "watch is stale" in why and "missed" in why
    dog.saw(SESSIONS, NS, "missed", h.kube.obj(SESSIONS, NS, "missed")["metadata"]["resourceVersion"])
    dog.resync_once()
    assert dog.healthy(h.now) == (True, "ok")
    h.now += 1000
    assert "no successful resync" in dog.healthy(h.now)[1]


# --------------------------------------------------------------------------- schedules

SCHEDULED = "timezone: Asia/Tokyo\nschedule:\n  minutes_interval>: 1\n+t:\n  echo>: ${session_time} after ${last_executed_session_time}\n"


def scheduled_sessions(h: Harness) -> list[str]:
    return sorted(n for (p, ns, n) in h.kube.objects if p == SESSIONS)


def tick(h: Harness, seconds: float) -> None:
    """Advance the clock and fire whatever the controller's timers hold that is due."""
    h.now += seconds
    assert h.ctl.wakeups is not None
    for key in [("schedule", (NS, "wf"))]:
        due = h.ctl.wakeups.due(key)
        if due is not None and due <= h.now:
            h.ctl.fire(key)


def test_a_scheduled_workflow_starts_one_session_per_slot(h: Harness) -> None:
    h.now = T0 + 30  # 00:00:30 UTC: the first slot is 00:01
    h.workflow(SCHEDULED)
    status = h.kube.obj(WORKFLOWS, NS, "wf")["status"]
    assert status["nextSessionTime"] == "2024-01-30T09:01:00+09:00"
    assert status["nextRunTime"] == "2024-01-30T09:01:00+09:00"
    assert h.ctl.wakeups is not None and h.ctl.wakeups.due(("schedule", (NS, "wf"))) == T0 + 60
    assert scheduled_sessions(h) == []
    for _ in range(3):
        tick(h, 60)
    names = scheduled_sessions(h)
    assert names == ["wf-20240130t000100", "wf-20240130t000200", "wf-20240130t000300"]
    third = h.kube.obj(SESSIONS, NS, names[2])
    assert third["spec"]["scheduled"] is True
    assert third["spec"]["lastExecutedSessionTime"] == "2024-01-30T09:02:00+09:00"
    h.watch_session(names[2])
    log = h.tasks(names[2])["+wf+t"]["state_params"]["log"]
    assert log == "2024-01-30T09:03:00+09:00 after 2024-01-30T09:02:00+09:00\n"
    status = h.kube.obj(WORKFLOWS, NS, "wf")["status"]
    assert status["lastScheduledSessionTime"] == "2024-01-30T09:03:00+09:00"


def test_a_restart_mid_schedule_neither_misses_nor_repeats_a_slot(h: Harness) -> None:
    h.now = T0 + 30
    h.workflow(SCHEDULED)
    tick(h, 60)
    # the controller dies right after creating the 00:02 session, before moving the pointer on
    h.now += 60
    h.kube.fail_next("replace_status")
    with pytest.raises(Crash):
        h.ctl.fire(("schedule", (NS, "wf")))
    assert scheduled_sessions(h) == ["wf-20240130t000100", "wf-20240130t000200"]
    h.ctl = h.controller()
    h.now += 140  # down for a while (until 00:04:50): 00:03 and 00:04 are missed
    h.ctl.on_workflow_event(NS, "wf", h.kube.obj(WORKFLOWS, NS, "wf"))
    assert scheduled_sessions(h) == [f"wf-20240130t00{m:02d}00" for m in (1, 2, 3, 4)]
    assert h.kube.requests[("create", "sessions")] == 5, "00:02 was tried twice and existed the second time"


def test_disable_and_enable_without_a_flood(h: Harness) -> None:
    h.now = T0 + 30
    h.workflow(SCHEDULED)
    obj = h.kube.set_spec(WORKFLOWS, NS, "wf", suspend=True)
    h.ctl.on_workflow_event(NS, "wf", obj)
    h.now += 600
    h.ctl.fire(("schedule", (NS, "wf")))
    assert scheduled_sessions(h) == []
    enabled_at = datetime.fromtimestamp(h.now, UTC).isoformat()
    obj = h.kube.set_spec(WORKFLOWS, NS, "wf", suspend=False, scheduleFrom=enabled_at)
    h.ctl.on_workflow_event(NS, "wf", obj)
    assert scheduled_sessions(h) == [], "the ten slots missed while disabled are not run"
    tick(h, 60)
    assert scheduled_sessions(h) == ["wf-20240130t001100"]


def test_chained_sessions_start_one_after_another(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n")
    h.session("s1")
    h.session("s2", after="s1")
    assert (
        h.status("s2")["phase"] == "Pending"
        and h.status("s2")["message"] == "waiting for session s1 to finish"
    )
    assert [h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/session"] for p in h.pods()] == ["s1"]
    h.fail(h.pods()[0])  # finished, not necessarily successfully: the chain goes on
    assert h.status("s1")["phase"] == "Failed"
    assert h.status("s2")["phase"] == "Running", "s1's end started s2 at once"
    assert h.ctl.memory()["waiting"] == 0


def test_a_pod_past_its_deadline_is_a_timed_out_task(h: Harness) -> None:
    h.workflow("+a:\n  timeout: 5\n  sh>: sleep 9\n  docker:\n    image: busybox\n")
    h.session()
    pod = h.pod_for("+a")
    assert h.kube.pod(NS, pod)["spec"]["activeDeadlineSeconds"] == 5
    h.kube.set_pod_status(
        NS,
        pod,
        {
            "phase": "Failed",
            "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline",
        },
    )
    h.ctl.on_pod_event(NS, h.kube.pod(NS, pod), False)
    assert h.status()["phase"] == "Failed"
    assert h.status()["failedTasks"][0]["message"].startswith(
        "Task timed out: Pod was active on the node longer"
    )


def test_history_ttl_deletes_finished_sessions_and_keep_bounds_them(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n", history={"ttlSecondsAfterFinished": 600, "keep": 2})
    for i in range(3):
        h.session(f"s{i}")
        (pod,) = [
            p for p in h.pods() if h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/session"] == f"s{i}"
        ]
        h.finish(pod)
        h.now += 10
        h.watch_session(f"s{i}")  # the label the controller set comes back through the watch
        assert h.kube.obj(SESSIONS, NS, f"s{i}")["metadata"]["labels"]["kudig.io/finished"]
    assert h.kube.deleted_objects == ["s0"], "only the two newest finished sessions are kept"
    assert h.ctl.wakeups is not None and h.ctl.wakeups.due(("ttl", (NS, "s1"))) == T0 + 10 + 600
    h.now = T0 + 10 + 600
    h.ctl.fire(("ttl", (NS, "s1")))
    assert h.kube.deleted_objects == ["s0", "s1"]


def test_keep_zero_deletes_a_session_once_it_finished(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n", history={"keep": 0})
    h.session()
    h.fail(h.pod_for("+a"))
    assert h.kube.deleted_objects == ["s1"]


def test_a_retried_session_is_not_finished_any_more(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n")
    h.session()
    h.fail(h.pod_for("+a"))
    assert "kudig.io/finished" in h.kube.obj(SESSIONS, NS, "s1")["metadata"]["labels"]
    h.patch(attempt=2)
    assert "kudig.io/finished" not in h.kube.obj(SESSIONS, NS, "s1")["metadata"]["labels"]


def test_a_trigger_starts_the_dependent_workflow_after_success_only(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo up\n", name="up")
    h.workflow(
        "trigger:\n  attempt>:\n  dependent_workflow_name: up\n+b:\n  echo>: down at ${session_time}\n",
        name="down",
    )
    h.session("up-1", workflow="up")
    h.fail(h.pod_for("+up+a"))
    assert h.status("up-1")["phase"] == "Failed"
    assert [n for (p, ns, n) in h.kube.objects if p == SESSIONS] == ["up-1"], "never after a failure"
    h.session("up-2", workflow="up", sessionTime="2024-01-31T00:00:00+00:00")
    h.kube.fail_next("replace_status")  # the controller dies right after starting the dependent
    with pytest.raises(Crash):
        h.finish(next(p for p in h.pods() if p.startswith("up-2-")))
    h.ctl = h.controller()
    h.ctl.on_workflow_event(NS, "up", h.kube.obj(WORKFLOWS, NS, "up"))
    h.ctl.on_workflow_event(NS, "down", h.kube.obj(WORKFLOWS, NS, "down"))
    h.watch_session("up-2")
    assert h.status("up-2")["phase"] == "Succeeded"
    down = [n for (p, ns, n) in h.kube.objects if p == SESSIONS and n.startswith("down")]
    assert down == ["down-20240131t000000"], "one session, same session time, no twin after the crash"
    assert h.kube.obj(SESSIONS, NS, down[0])["spec"]["triggeredBy"] == "up-2"
    h.watch_session(down[0])
    assert h.tasks(down[0])["+down+b"]["state_params"]["log"] == "down at 2024-01-31T00:00:00+00:00\n"


def test_a_trigger_naming_a_missing_workflow_says_so_until_it_exists(h: Harness) -> None:
    h.workflow(
        "timezone: UTC\ntrigger:\n  attempt>:\n  dependent_workflow_name: up\n+t:\n  echo>: after up\n",
        name="down",
    )

    def trigger_condition() -> dict[str, Any]:
        status = h.kube.obj(WORKFLOWS, NS, "down")["status"]
        return next(c for c in status["conditions"] if c["type"] == "TriggerReady")

    cond = trigger_condition()
    assert cond["status"] == "False" and cond["reason"] == "DependentWorkflowNotFound"
    assert cond["message"].startswith("down.dig:2: trigger: workflow 'up' not found in this namespace")
    compiled = next(
        c for c in h.kube.obj(WORKFLOWS, NS, "down")["status"]["conditions"] if c["type"] == "Compiled"
    )
    assert compiled["status"] == "True", "the workflow itself is fine: it waits for the other one"
    h.workflow("+u:\n  sh>: echo up\n", name="up")
    assert trigger_condition()["status"] == "True"


def test_a_chunked_state_survives_a_restart_and_replaced_chunks_are_deleted(h: Harness) -> None:
    h.workflow(
        "+t:\n  for_range>:\n    from: 0\n    to: 130\n    step: 1\n  _parallel: true\n  _do:\n    py>: m.f\n"
    )
    h.session()
    pods = h.pods()
    for i, pod in enumerate(pods):
        if i != len(pods) // 2:
            h.finish(pod, {f"k{i}": "x" * 1024})
            continue
        # it finishes while the controller is down; the restarted one reads the rows back from
        # the chunks and so knows which pods to look at
        h.kube.finish_pod(NS, pod, output={"store_params": {f"k{i}": "x" * 1024}, "error": None})
        h.ctl = h.controller()
        h.watch_session()
        assert h.ctl.stats["result_reads"] >= 2
        assert h.tasks()[h.task_of(pod)]["state"] == "success"
    assert h.status()["phase"] == "Succeeded"
    from kudig_operator import results

    data = results.decode_json(h.status()["engine"]["data"])
    chunks = {n for (ns, n) in h.kube.config_maps if "-c-" in n}
    assert chunks and chunks == set(results.refs(data))  # replaced chunks were deleted
    tasks = h.tasks()
    assert sum(1 for t in tasks.values() if t.get("store_params")) == len(pods)
    assert len(json.dumps(h.kube.obj(SESSIONS, NS, "s1"))) < 128 * 1024
