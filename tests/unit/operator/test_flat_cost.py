"""A pod event costs the controller what it touches, not the session's size: the warm plan names
no pod but the new ones, observes only the pods with news, and a burst of pod events is one plan
and one status write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kudig_operator.plan import session as session_plan
from kudig_operator.plan.settings import create_concurrency
from kudig_operator.plumbing import Fanout
from kudig_operator.podspec import pod_name
from test_controller import NS, Harness

FAN = "+fan:\n  _parallel: true\n" + "".join(f"  +t{i:03d}:\n    sh>: 'true'\n" for i in range(60))


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_a_pod_event_names_and_observes_only_what_it_touches(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.workflow(FAN)
    h.session()
    assert len(h.pods()) == 60
    named: list[str] = []

    def counting(*args: Any) -> str:
        named.append(str(args[2]))
        return pod_name(*args)

    import kudig_operator.plan.view as view_module

    monkeypatch.setattr(session_plan, "pod_name", counting, raising=False)
    monkeypatch.setattr(view_module, "pod_name", counting)
    observed: list[str] = []
    original = session_plan.pod_event

    def observing(task: Any, view: Any) -> Any:
        observed.append(task.name)
        return original(task, view)

    monkeypatch.setattr(session_plan, "pod_event", observing)
    h.finish(h.pod_for("+t000"))
    assert named == [], "no pod name is computed again for the 59 tasks still running"
    assert observed == ["+wf+fan+t000"], "only the pod with news is observed"
    assert h.tasks()["+wf+fan+t000"]["state"] == "success"


def test_a_burst_of_pod_events_is_one_plan_and_one_status_write(h: Harness) -> None:
    h.workflow(FAN)
    h.session()
    writes = h.kube.requests[("update", "sessions/status")]
    pods = h.pods()[:20]
    for pod in pods:  # the watch notes each event and queues a reconcile for each
        h.ctl.note_pod(NS, h.kube.finish_pod(NS, pod, output={"error": None}), False)
    reconciles = h.ctl.stats["reconciles"]
    for _ in pods:
        h.ctl.reconcile_news(NS, "s1")
    assert h.ctl.stats["reconciles"] - reconciles == 1, "the first reconcile took all 20 events in"
    assert h.ctl.stats["coalesced"] == 19
    assert h.kube.requests[("update", "sessions/status")] - writes == 1
    assert h.status()["progress"] == "20/62"


def test_news_arriving_during_a_plan_gets_its_own(h: Harness) -> None:
    """A pod event noted while a plan runs (after it took its snapshot) is not lost to
    coalescing: the reconcile queued for it plans again."""
    h.workflow(FAN)
    h.session()
    first, second = h.pods()[:2]
    h.ctl.note_pod(NS, h.kube.finish_pod(NS, first, output={"error": None}), False)
    h.kube.before(
        "replace_status",
        lambda: h.ctl.note_pod(NS, h.kube.finish_pod(NS, second, output={"error": None}), False),
    )
    h.ctl.reconcile_news(NS, "s1")
    assert h.status()["progress"] == "1/62"
    h.ctl.reconcile_news(NS, "s1")
    assert h.status()["progress"] == "2/62"


def test_a_finished_pod_says_when_it_was_created_and_started(h: Harness) -> None:
    h.workflow("+a:\n  sh>: 'true'\n")
    h.session()
    pod = h.pod_for("+a")
    terminated = {"exitCode": 0, "message": '{"error": null}', "startedAt": "2024-01-30T00:00:03Z"}
    h.kube.set_pod_status(
        NS,
        pod,
        {"phase": "Succeeded", "containerStatuses": [{"name": "task", "state": {"terminated": terminated}}]},
    )
    h.ctl.on_pod_event(NS, h.kube.pod(NS, pod), False)
    row = h.tasks()["+wf+a"]
    assert row["pod_created_at"] == 1_706_572_800.0  # FakeKube's creationTimestamp
    assert row["running_at"] == 1_706_572_803.0


RETRIES = """
+g:
  _retry: 1
  +each:
    for_each>:
      n: [1, 2]
    _do:
      sh>: echo ${n}
  +flaky:
    sh>: exit 1
+after:
  sh>: echo after
  _retry: 1
"""


def test_progress_kept_by_the_engine_matches_a_recount(h: Harness) -> None:
    """The status's progress and failed tasks come from counts the engine keeps as states change
    (no walk of the state per plan): through generated tasks, a group retry that supersedes its
    children, a task's own retry and a failure, they equal a count over the stored rows."""
    from kudig_operator import results

    h.workflow(RETRIES)
    h.session()
    for _ in range(40):
        status = h.status()
        data = results.decode_json(status["engine"]["data"])
        fetched = {n: results.blob_of(cm) for (ns, n), cm in h.kube.config_maps.items() if ns == NS}
        rows = [r for r in results.rows(data, fetched) if not r.get("superseded")]
        done = sum(r["state"] in ("success", "error", "group_error", "canceled") for r in rows)
        assert status["progress"] == f"{done}/{len(rows)}"
        if status["phase"] != "Running":
            break
        running = [p for p in h.pods() if h.kube.pod(NS, p)["status"]["phase"] == "Pending"]
        if not running:  # a retry waits for its timer
            h.now += 60
            h.ctl.fire(("session", (NS, "s1")))
            continue
        task = h.task_of(running[0])
        if task.endswith(("+flaky", "+after")):
            h.fail(running[0])
        else:
            h.finish(running[0])
    assert h.status()["phase"] == "Failed"
    assert [f["name"] for f in h.status()["failedTasks"]] == ["+wf+g+flaky"]


def test_a_plan_creates_its_pods_side_by_side(h: Harness) -> None:
    """`KUDIG_POD_CREATE_CONCURRENCY`: the 60 creates of one plan overlap (each a round trip),
    each pod is created once, and the status commit comes after all of them."""
    h.ctl.creates = Fanout(8)
    h.kube.create_delay = 0.02
    h.workflow(FAN)
    committed: list[int] = []
    h.kube.before("replace_status", lambda: committed.append(len(h.kube.created_pods)))
    h.session()
    h.ctl.creates.stop()
    assert h.kube.most_creating_at_once == 8
    assert sorted(h.kube.created_pods) == sorted(set(h.kube.created_pods)) and len(h.pods()) == 60
    assert committed == [60], "the status is written once every pod exists"
    assert h.ctl.stats["pods_created"] == 60
    assert h.status()["progress"] == "0/62"


def test_a_failed_create_fails_the_plan_after_the_others_ended(h: Harness) -> None:
    """One create of a side-by-side batch fails: nothing is committed, and the next plan adopts
    the pods the others created (one pod per task still)."""
    h.ctl.creates = Fanout(4)
    h.workflow(FAN)
    h.kube.fail_next("create_pod", RuntimeError("apiserver went away"))
    writes = h.kube.requests[("update", "sessions/status")]
    with pytest.raises(RuntimeError):
        h.session()
    assert h.kube.requests[("update", "sessions/status")] == writes, "nothing committed"
    assert len(h.pods()) == 59
    h.ctl.reconcile_session(NS, "s1", fresh=True)
    h.ctl.creates.stop()
    assert len(h.pods()) == 60 and len(set(h.kube.created_pods)) == len(h.kube.created_pods)


@pytest.mark.parametrize(("text", "value"), [(None, 16), ("", 16), (" 1 ", 1), ("256", 256)])
def test_the_create_concurrency_setting_is_read(text: str | None, value: int) -> None:
    assert create_concurrency(text) == value


@pytest.mark.parametrize("text", ["0", "257", "-1", "many", "1.5"])
def test_a_bad_create_concurrency_says_what_is_expected(text: str) -> None:
    with pytest.raises(
        ValueError, match=f"KUDIG_POD_CREATE_CONCURRENCY must be a whole number from 1 to 256, got '{text}'"
    ):
        create_concurrency(text)
