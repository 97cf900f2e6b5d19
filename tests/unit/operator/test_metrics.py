"""Metrics and Kubernetes Events of the controller, driven through the in-memory API (`FakeKube`):
what a session, a retried failure, a kill, a schedule, an SLA miss and a failing reconcile count,
that a plan dropped on a 409 counts and emits nothing, and that /metrics serves every name."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kudig_operator.metrics import PUBLIC_METRICS, Metrics, standby_metrics
from kudig_operator.reactions import session as session_reaction
from prometheus_client.parser import text_string_to_metric_families
from test_controller import NS, SCHEDULED, T0, Harness, tick

from kudig.api import SESSIONS, WORKFLOWS

NAMES = [  # every name docs/metrics.md lists, and two the benches read
    *PUBLIC_METRICS,
    "kudig_controller_cached_objects",
    "kudig_controller_operations_total",
]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def value(h: Harness, name: str, **labels: str) -> float:
    got = h.ctl.metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def session_labels(outcome: str | None = None) -> dict[str, str]:
    labels = {"namespace": NS, "workflow": "wf"}
    return labels if outcome is None else {**labels, "outcome": outcome}


def test_a_session_that_succeeds(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n+b:\n  echo>: between\n+c:\n  sh>: echo c\n")
    assert value(h, "kudig_sessions_started_total", **session_labels()) == 0
    assert (
        h.ctl.metrics.registry.get_sample_value("kudig_sessions_finished_total", session_labels("failed"))
        == 0
    ), "a compiled Workflow's series exist from the start"
    h.session()
    assert value(h, "kudig_sessions_started_total", **session_labels()) == 1
    assert value(h, "kudig_tasks_running") == 1
    a = h.pod_for("+a")
    h.now = T0 + 1.5
    h.kube.run_pod(NS, a)
    h.ctl.on_pod_event(NS, h.kube.pod(NS, a), False)
    assert value(h, "kudig_pod_start_latency_seconds_count") == 1
    assert value(h, "kudig_pod_start_latency_seconds_sum") == 1.5
    # +a's pod is seen done at 00:00:10; its reconcile (and +c's pod, past the echo>) at 00:00:10.25
    h.now = T0 + 10
    h.kube.finish_pod(NS, a, output={"error": None})
    key = h.ctl.note_pod(NS, h.kube.pod(NS, a), False)
    assert key == (NS, "s1")
    h.now = T0 + 10.25
    h.ctl.reconcile_session(*key)
    assert value(h, "kudig_step_gap_seconds_count") == 1
    assert value(h, "kudig_step_gap_seconds_sum") == 0.25
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="succeeded") == 1
    assert value(h, "kudig_task_duration_seconds_sum", operator="sh") == 10.25
    assert value(h, "kudig_tasks_running") == 1
    h.now = T0 + 20
    h.finish(h.pod_for("+c"))
    assert h.status()["phase"] == "Succeeded"
    assert value(h, "kudig_sessions_finished_total", **session_labels("succeeded")) == 1
    assert value(h, "kudig_session_duration_seconds_count", **session_labels("succeeded")) == 1
    assert value(h, "kudig_session_duration_seconds_sum", **session_labels("succeeded")) == 20
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="succeeded") == 2
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="failed") == 0
    assert value(h, "kudig_task_duration_seconds_count", operator="sh") == 2
    assert value(h, "kudig_tasks_running") == 0
    assert value(h, "kudig_reconcile_errors_total", kind="session") == 0
    assert value(h, "kudig_reconcile_duration_seconds_count", kind="session") >= 3
    assert h.kube.event_reasons() == ["Started", "Succeeded"]
    started, succeeded = h.kube.events
    obj = h.kube.obj(SESSIONS, NS, "s1")
    assert started["involvedObject"] == {
        "apiVersion": "kudig.io/v1alpha1",
        "kind": "Session",
        "name": "s1",
        "namespace": NS,
        "uid": obj["metadata"]["uid"],
        "resourceVersion": started["involvedObject"]["resourceVersion"],
    }
    assert started["type"] == "Normal" and started["message"] == "Attempt 1 started"
    assert started["reportingComponent"] == "kudig.io/controller"
    assert started["reportingInstance"] == "test-controller"
    assert started["metadata"]["namespace"] == NS and started["metadata"]["name"].startswith("s1.")
    assert succeeded["message"] == "Attempt 1 succeeded: 4/4 tasks in 20s"
    assert started["metadata"]["name"] != succeeded["metadata"]["name"]


def test_a_failing_task_with_retry(h: Harness) -> None:
    h.workflow("+a:\n  sh>: exit 1\n  _retry: 2\n")
    h.session()
    for _ in range(3):
        pods = [p for p in h.pods() if h.kube.pod(NS, p)["status"]["phase"] == "Pending"]
        h.fail(pods[0], "Command failed with code 1")
    assert h.status()["phase"] == "Failed"
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="failed") == 3
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="succeeded") == 0
    assert value(h, "kudig_task_retries_total", operator="sh") == 2
    assert value(h, "kudig_sessions_finished_total", **session_labels("failed")) == 1
    assert value(h, "kudig_tasks_running") == 0
    assert h.kube.event_reasons() == ["Started", "Retrying", "Retrying", "TaskFailed", "Failed"]
    messages = [e["message"] for e in h.kube.events]
    assert messages[1] == "+wf+a failed, retry 1 of 2: Command failed with code 1"
    assert messages[3] == "+wf+a failed: Command failed with code 1"
    assert messages[4].startswith("Attempt 1 failed after 0s: +wf+a: Command failed with code 1")
    assert {e["type"] for e in h.kube.events[1:]} == {"Warning"}
    # a retry of the Session is another attempt
    h.patch(attempt=2, retryMode="failed")
    assert value(h, "kudig_sessions_started_total", **session_labels()) == 2
    assert h.kube.events[-1]["message"] == "Attempt 2 started (retry of the failed tasks)"


def test_a_group_retry_is_an_event(h: Harness) -> None:
    h.workflow("+g:\n  _retry: 1\n  +t:\n    sh>: exit 1\n")
    h.session()
    h.fail(h.pod_for("+t"))
    assert h.kube.event_reasons() == ["Started", "TaskFailed", "Retrying"]
    assert h.kube.events[2]["message"] == "+wf+g is retried (1 of 1) after +wf+g+t failed"
    assert value(h, "kudig_task_retries_total", operator="sh") == 0, "the task's own _retry did not run it"
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="failed") == 1


def test_a_kill(h: Harness) -> None:
    h.workflow("+p:\n  _parallel: true\n  +x:\n    sh>: sleep 100\n  +y:\n    sh>: sleep 100\n")
    h.session()
    assert value(h, "kudig_tasks_running") == 2
    running = h.pods()
    h.now = T0 + 30
    h.patch(kill=True)
    for pod in running:
        h.ctl.on_pod_event(
            NS, {"metadata": {"name": pod, "ownerReferences": [{"kind": "Session", "name": "s1"}]}}, True
        )
    assert h.status()["phase"] == "Killed"
    assert value(h, "kudig_sessions_finished_total", **session_labels("killed")) == 1
    assert value(h, "kudig_session_duration_seconds_sum", **session_labels("killed")) == 30
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="failed") == 0, "killed runs are not runs"
    assert value(h, "kudig_tasks_running") == 0
    assert h.kube.event_reasons() == ["Started", "Killed"]
    assert h.kube.events[1]["message"] == "Attempt 1 killed after 30s"


def test_a_scheduled_workflow_firing(h: Harness) -> None:
    h.now = T0 + 30
    h.workflow(SCHEDULED)
    assert value(h, "kudig_schedule_lag_seconds_count") == 0
    tick(h, 30.75)  # 00:01:00.75: the 00:01 slot, 0.75 s late
    assert value(h, "kudig_schedule_lag_seconds_count") == 1
    assert value(h, "kudig_schedule_lag_seconds_sum") == 0.75
    # a repeat after a crash meets AlreadyExists: no second observation
    obj = h.kube.obj(WORKFLOWS, NS, "wf")
    obj.pop("status")
    h.ctl = h.controller()
    h.ctl.on_workflow_event(NS, "wf", obj)
    assert value(h, "kudig_schedule_lag_seconds_count") == 0, "a new controller's own registry"
    assert value(h, "kudig_reconcile_errors_total", kind="workflow") == 0


def test_an_sla_miss(h: Harness) -> None:
    h.workflow("sla:\n  duration: 00:10\n  fail: true\n+a:\n  sh>: sleep 3600\n")
    h.session()
    assert value(h, "kudig_sla_misses_total", **session_labels()) == 0
    h.now = T0 + 600
    h.ctl.fire(("session", (NS, "s1")))
    assert value(h, "kudig_sla_misses_total", **session_labels()) == 1
    assert h.kube.event_reasons() == ["Started", "SLAMissed", "TaskFailed"]
    assert h.kube.events[2]["message"] == "+wf^sla^fail failed: SLA violation"
    h.ctl.fire(("session", (NS, "s1")))
    h.finish(h.pod_for("^sla^alert"))  # notify>: a pod of its own
    h.finish(h.pod_for("+a"))
    assert value(h, "kudig_sla_misses_total", **session_labels()) == 1
    assert value(h, "kudig_sessions_finished_total", **session_labels("failed")) == 1
    assert h.kube.event_reasons()[-1] == "Failed"


def test_reconcile_errors(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.workflow("+a:\n  sh>: echo a\n")
    h.kube.fail_next("create_pod", RuntimeError("API server unavailable"))
    with pytest.raises(RuntimeError):
        h.session()
    assert value(h, "kudig_reconcile_errors_total", kind="session") == 1
    assert value(h, "kudig_sessions_started_total", **session_labels()) == 0, "nothing committed"
    assert h.kube.events == []

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug")

    monkeypatch.setattr(session_reaction, "plan_session", broken)
    h.watch_session()
    h.ctl.reconcile_session(NS, "s1")
    assert value(h, "kudig_reconcile_errors_total", kind="session") == 2
    assert "kudig internal error" in h.status()["message"]
    assert value(h, "kudig_reconcile_errors_total", kind="workflow") == 0


def test_an_error_escaping_nested_reconciles_counts_once(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n")
    h.session("first")
    h.session("second", after="first")
    assert h.kube.status(NS, "second")["phase"] == "Pending"
    h.kube.fail_next("create_pod", RuntimeError("API server unavailable"))  # second's pod
    with pytest.raises(RuntimeError):
        h.finish(h.pod_for("+a"))  # first ends, and reconciles second from within its reconcile
    assert value(h, "kudig_reconcile_errors_total", kind="session") == 1


def test_no_twice_on_a_409(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n")
    obj = h.kube.add(
        SESSIONS,
        NS,
        {"metadata": {"name": "s1"}, "spec": {"workflow": "wf", "sessionTime": "2024-01-30T00:00:00Z"}},
    )
    h.kube.before("replace_status", lambda: h.kube.set_spec(SESSIONS, NS, "s1", params={"p": 1}))
    h.ctl.on_session_event(NS, "s1", obj)
    assert h.ctl.stats["conflicts"] == 1
    assert h.kube.event_reasons() == ["Started"]
    assert value(h, "kudig_sessions_started_total", **session_labels()) == 1
    h.kube.before("replace_status", lambda: h.kube.set_spec(SESSIONS, NS, "s1", params={"p": 2}))
    h.finish(h.pod_for("+a"))
    assert h.ctl.stats["conflicts"] == 2
    assert h.kube.event_reasons() == ["Started", "Succeeded"]
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="succeeded") == 1
    assert value(h, "kudig_sessions_finished_total", **session_labels("succeeded")) == 1


def test_a_failing_event_never_fails_the_reconcile(h: Harness) -> None:
    h.workflow("+a:\n  sh>: echo a\n")
    h.kube.fail_next("create_event", RuntimeError("events are forbidden"))
    h.session()
    assert h.status()["phase"] == "Running" and len(h.pods()) == 1
    assert h.kube.events == []
    assert value(h, "kudig_reconcile_errors_total", kind="session") == 0


def test_many_failures_in_one_step_are_summed_up(h: Harness) -> None:
    h.workflow("+p:\n  _parallel: true\n" + "".join(f"  +t{i}:\n    sh>: exit 1\n" for i in range(15)))
    h.session()
    for pod in h.pods():
        output = {"error": {"message": "no", "class": "E", "backtrace": ""}}
        h.kube.finish_pod(NS, pod, output=output, exit_code=1)
        h.ctl.note_pod(NS, h.kube.pod(NS, pod), False)
    h.ctl.reconcile_session(NS, "s1")
    reasons = h.kube.event_reasons()
    assert reasons == ["Started", *["TaskFailed"] * 11, "Failed"]
    assert h.kube.events[11]["message"] == "5 more task failures or retries"
    assert value(h, "kudig_task_runs_total", operator="sh", outcome="failed") == 15


def test_metrics_endpoint_serves_every_name(h: Harness) -> None:
    from kudig_operator import main
    from kudig_operator.health import HealthServer, Watchdog

    h.now = T0 + 30
    h.workflow(SCHEDULED)
    tick(h, 31)
    (name,) = [n for (p, _, n) in h.kube.objects if p == SESSIONS]
    h.watch_session(name)
    h.workflow("+a:\n  sh>: echo a\n", name="other")
    h.session("s2", workflow="other")
    h.finish(h.pod_for("+a"))
    server = HealthServer("127.0.0.1:0", Watchdog(h.ctl), main._metrics)
    previous = main._rt.controller
    main._rt.controller = h.ctl
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
            content_type = r.headers["Content-Type"]
    finally:
        server.stop()
        main._rt.controller = previous
    assert content_type.startswith("text/plain; version=")
    families = list(text_string_to_metric_families(text))
    samples = {s.name for f in families for s in f.samples}
    for metric in NAMES:
        assert metric in samples or f"{metric}_count" in samples, metric
    assert 'kudig_kube_requests_total{resource="pods",verb="create"}' in text
    assert "kudig_controller_leader 1.0" in text
    for f in families:  # bounded labels: never a Session, task or pod name
        for s in f.samples:
            assert not set(s.labels) & {"session", "task", "pod", "name"}, s
            assert name not in s.labels.values() and "s2" not in s.labels.values(), s
    assert not [s for s in samples if s.endswith("_created")]


def test_leader_gauge_and_standby() -> None:
    metrics = Metrics(identity="me")
    assert metrics.registry.get_sample_value("kudig_controller_leader") == 1
    metrics.set_leader(False)
    assert metrics.registry.get_sample_value("kudig_controller_leader") == 0
    assert (
        metrics.registry.get_sample_value(
            "kudig_controller_info", {"identity": "me", "version": metrics_version()}
        )
        == 1
    )
    standby = standby_metrics("standby-pod")
    assert standby is standby_metrics("standby-pod")
    assert standby.registry.get_sample_value("kudig_controller_leader") == 0
    assert standby.registry.get_sample_value("kudig_work_queue_depth") == 0


def metrics_version() -> str:
    from kudig_operator.metrics import version

    return version()


def test_a_retry_interval_is_in_the_event(h: Harness) -> None:
    h.workflow("+a:\n  sh>: exit 1\n  _retry:\n    limit: 1\n    interval: 10\n")
    h.session()
    h.fail(h.pod_for("+a"), "boom")
    assert h.kube.events[-1]["message"] == "+wf+a failed, retry 1 of 1 in 10s: boom"
    assert value(h, "kudig_tasks_running") == 0, "waiting for its retry, no pod runs"
    assert h.ctl.wakeups is not None
    h.now = T0 + 10
    h.ctl.fire(("session", (NS, "s1")))
    assert value(h, "kudig_tasks_running") == 1
    assert value(h, "kudig_step_gap_seconds_count") == 0, "a retry's pod is no step"


def test_step_gaps_of_a_join_and_an_error_handler(h: Harness) -> None:
    h.workflow(
        "+p:\n  _parallel: true\n  +x:\n    sh>: echo x\n  +y:\n    sh>: echo y\n"
        "+z:\n  sh>: exit 1\n  _error:\n    sh>: echo handled\n"
    )
    h.session()
    x, y = h.pod_for("+x"), h.pod_for("+y")
    h.now = T0 + 5
    h.finish(x)
    assert value(h, "kudig_step_gap_seconds_count") == 0, "+z waits for +y"
    h.now = T0 + 7
    h.kube.finish_pod(NS, y, output={"error": None})
    h.ctl.note_pod(NS, h.kube.pod(NS, y), False)
    h.now = T0 + 7.5
    h.ctl.reconcile_session(NS, "s1")  # +p done through its last child: +z starts
    assert value(h, "kudig_step_gap_seconds_count") == 1
    assert value(h, "kudig_step_gap_seconds_sum") == 0.5
    h.now = T0 + 9
    h.fail(h.pod_for("+z"))
    assert [h.task_of(p) for p in h.kube.created_pods][-1] == "+wf+z^error"
    assert value(h, "kudig_step_gap_seconds_count") == 2, "the error handler's pod follows +z's failure"
    assert value(h, "kudig_step_gap_seconds_sum") == 0.5


def test_more_operation_counters_join_the_controllers() -> None:
    """The pod watch's counters (main.py adds them) are served beside the controller's."""
    metrics = Metrics()
    metrics.stats_source = lambda: {"reconciles": 3}
    counts = {"pod_watch_lists": 2}
    metrics.add_stats(lambda: counts)
    counts["pod_watch_lists"] += 1  # read at scrape time
    get = metrics.registry.get_sample_value
    assert get("kudig_controller_operations_total", {"operation": "pod_watch_lists"}) == 3
    assert get("kudig_controller_operations_total", {"operation": "reconciles"}) == 3
