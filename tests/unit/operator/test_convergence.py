"""A controller that dies between any two API calls, or meets a pod event mid-reconcile, converges:
every task runs once, no task pod is deleted under a task that finished, a finished Session gets
its `kudig.io/finished` label and its Workflow's `history.keep` is applied, and every Event is
created once (none lost, none twice). Every post-commit effect is re-derived by the plan from the
committed state, so the next controller finishes it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fake_kube import Crash
from test_controller import NS, T0, Harness

from kudig.api import LABEL_FINISHED, SESSIONS, WORKFLOWS

FAN = "+p:\n  _parallel: true\n  +x:\n    sh>: echo x\n  +y:\n    sh>: echo y\n+z:\n  sh>: echo z\n"


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def pod_of(h: Harness, session: str) -> str:
    (pod,) = [p for p in h.pods() if h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/session"] == session]
    return pod


def restart(h: Harness) -> None:
    """A new controller after a crash: it remembers nothing and meets the world as its watches
    list it (Workflows, Sessions, task pods), then resyncs the Sessions."""
    h.ctl = h.controller()
    for (plural, ns, name), _ in sorted(h.kube.objects.items()):
        if plural == WORKFLOWS:
            h.ctl.on_workflow_event(ns, name, h.kube.obj(plural, ns, name))
    for (plural, ns, name), _ in sorted(h.kube.objects.items()):
        if plural == SESSIONS:
            h.ctl.on_session_event(ns, name, h.kube.obj(plural, ns, name))
    for ns, pod in sorted(h.kube.pods):
        h.ctl.on_pod_event(ns, h.kube.pod(ns, pod), False)
    for (plural, ns, name), _ in sorted(h.kube.objects.items()):
        if plural == SESSIONS:
            h.ctl.reconcile_session(ns, name, fresh=True)


def run_to_the_end(h: Harness, session: str) -> None:
    """Finish the Session's pods one by one (the way kubelet reports them), restarting the
    controller whenever it crashes, until the Session is finished and labelled."""
    for _ in range(50):
        try:
            pending = [
                p
                for p in h.pods()
                if h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/session"] == session
                and h.kube.pod(NS, p)["status"]["phase"] == "Pending"
            ]
            if pending:
                h.finish(pending[0])
                continue
            obj = h.kube.objects.get((SESSIONS, NS, session))
            if obj is None or LABEL_FINISHED in (obj["metadata"].get("labels") or {}):
                return
            restart(h)  # nothing to do, not done: only a restart can go on
        except Crash:
            restart(h)
    raise AssertionError(f"session {session} did not converge")


def scenario(h: Harness, crash_at: int | None) -> None:
    h.workflow(FAN, history={"keep": 1})
    h.session("s0")
    run_to_the_end(h, "s0")
    h.now += 10
    start_crashing(h, "s1", crash_at)
    run_to_the_end(h, "s1")


def start_crashing(h: Harness, name: str, crash_at: int | None) -> None:
    """Start Session `name` with a crash armed before API call `crash_at` (None: no crash); a
    crash restarts the controller."""
    if crash_at is not None:
        h.kube.crash_at(crash_at)
    try:
        h.session(name)
    except Crash:
        restart(h)


def requests_of_a_clean_run(tmp_path: Path) -> int:
    h = Harness(tmp_path / "clean")
    h.workflow(FAN, history={"keep": 1})
    h.session("s0")
    run_to_the_end(h, "s0")
    before = sum(h.kube.requests.values())
    h.now += 10
    h.session("s1")
    run_to_the_end(h, "s1")
    return sum(h.kube.requests.values()) - before


def test_a_crash_between_any_two_api_calls_converges(tmp_path: Path) -> None:
    total = requests_of_a_clean_run(tmp_path)
    assert total > 10
    for n in range(1, total + 1):
        h = Harness(tmp_path / str(n))
        scenario(h, n)
        tasks = Counter(
            (h.kube.pod(NS, p)["metadata"]["labels"]["kudig.io/session"], h.task_of(p)) for p in h.pods()
        )
        created = Counter(h.kube.created_pods)
        assert all(c == 1 for c in created.values()), (n, created)
        assert h.kube.deleted_pods == [], (n, "a task pod was deleted", h.kube.deleted_pods)
        s1 = h.kube.objects.get((SESSIONS, NS, "s1"))
        assert s1 is not None and s1["status"]["phase"] == "Succeeded", n
        assert LABEL_FINISHED in s1["metadata"]["labels"], (n, "the finished label is missing")
        assert "s0" in h.kube.deleted_objects and (SESSIONS, NS, "s0") not in h.kube.objects, (
            n,
            "history.keep: 1 was not applied",
        )
        assert sorted(t for t in tasks if tasks[t] > 1) == [], n
        assert h.kube.event_reasons("s1").count("Succeeded") >= 1, (n, "the outcome Event was lost")


def test_a_crash_before_the_finished_label_is_repaired(h: Harness) -> None:
    """The status commit lands, the controller dies before the label patch: the next controller
    sets the label (its value: when the Session finished) and applies `history.keep`."""
    h.workflow("+a:\n  sh>: echo a\n", history={"keep": 1})
    h.session("s0")
    h.finish(pod_of(h, "s0"))
    h.now += 10
    h.session("s1")
    h.kube.fail_next("patch")
    with pytest.raises(Crash):
        h.finish(pod_of(h, "s1"))
    assert h.kube.status(NS, "s1")["phase"] == "Succeeded"
    assert LABEL_FINISHED not in (h.kube.obj(SESSIONS, NS, "s1")["metadata"].get("labels") or {})
    restart(h)
    labels = h.kube.obj(SESSIONS, NS, "s1")["metadata"]["labels"]
    assert labels[LABEL_FINISHED] == str(int(h.now)), "the finished label is re-derived"
    assert h.kube.deleted_objects == ["s0"], "history.keep applies once the label is set"
    assert h.kube.event_reasons("s1") == ["Started", "Succeeded"], "the outcome Event, once"


def test_the_next_status_write_drops_the_events_of_the_last(h: Harness) -> None:
    """The outbox holds one write's Events: a write that reports none drops it (no write is made
    only for that), so it never grows with the Session."""
    h.workflow("+a:\n  sh>: echo a\n+b:\n  sh>: echo b\n")
    h.session()
    assert [e["reason"] for e in h.status()["lastEvents"]["events"]] == ["Started"]
    h.finish(h.pod_for("+a"))
    assert "lastEvents" not in h.status()
    h.finish(h.pod_for("+b"))
    assert [e["reason"] for e in h.status()["lastEvents"]["events"]] == ["Succeeded"]
    assert h.kube.event_reasons() == ["Started", "Succeeded"]


def test_a_finished_session_without_the_record_gets_its_outcome_event_once(h: Harness) -> None:
    """A Session finished by a controller that recorded no Events in its status (an older one),
    and died before the label: the outcome is derived from the status, created once however
    often controllers restart (its name derives from the Session's version)."""
    h.workflow("+a:\n  sh>: echo a\n")
    h.session()
    h.kube.fail_next("create_event")  # the outcome Event, before the label patch
    with pytest.raises(Crash):
        h.finish(pod_of(h, "s1"))
    h.kube.objects[(SESSIONS, NS, "s1")]["status"].pop("lastEvents")
    h.kube.fail_next("patch")  # dies again before the label
    with pytest.raises(Crash):
        restart(h)
    restart(h)
    assert LABEL_FINISHED in h.kube.obj(SESSIONS, NS, "s1")["metadata"]["labels"]
    assert h.kube.event_reasons("s1") == ["Started", "Succeeded"]


def test_a_pod_finishing_mid_reconcile_is_not_deleted_as_an_orphan(h: Harness) -> None:
    """The pod watch reports a task pod Succeeded while a reconcile is between taking its pod
    cache and observing the running tasks' pods: the pod is finished, never an orphan."""
    h.workflow("+a:\n  sh>: echo a\n+b:\n  sh>: echo b\n")
    h.session()
    pod = h.pod_for("+a")
    h.ctl = h.controller()  # restarted: the Workflow watch has not delivered yet
    assert h.ctl.note_session(NS, "s1", h.kube.obj(SESSIONS, NS, "s1"))
    h.ctl.on_pod_event(NS, h.kube.run_pod(NS, pod), False)

    def pod_succeeds() -> None:  # the watch thread, while the reconcile reads the Workflow
        h.ctl.note_pod(NS, h.kube.finish_pod(NS, pod, output={"error": None}), False)

    h.kube.before("get", pod_succeeds)
    h.ctl.reconcile_session(NS, "s1")
    assert h.kube.deleted_pods == [], "the finished task's pod was deleted: its log is lost"
    h.ctl.reconcile_session(NS, "s1")  # the one the watch queued with its event
    assert h.kube.deleted_pods == []
    assert h.tasks()["+wf+a"]["state"] == "success"


RETRIED = "sla:\n  duration: 00:10\n  fail: true\n+a:\n  sh>: exit 1\n  _retry: 2\n"


def fail_or_finish_with_an_sla(h: Harness, crash_at: int | None = None) -> None:
    """+a fails three times (two retries); its SLA passes between its first and second failure;
    every other pod (the SLA's alert) succeeds. Each step is taken from what the world shows, so
    a step a crash cut short is taken again or carried on by the restarted controller."""
    start_crashing(h, "s1", crash_at)
    for _ in range(60):
        try:
            pods = [p for p in h.pods() if h.kube.pod(NS, p)["status"]["phase"] == "Pending"]
            tries = sum(1 for p in h.pods() if h.task_of(p) == "+wf+a")
            if h.now < T0 + 600 and tries >= 2:
                h.now = T0 + 600  # the SLA deadline
                h.ctl.fire(("session", (NS, "s1")))
            elif pods:
                if h.task_of(pods[0]) == "+wf+a":
                    h.fail(pods[0], "boom")
                else:
                    h.finish(pods[0])
            elif LABEL_FINISHED in (h.kube.obj(SESSIONS, NS, "s1")["metadata"].get("labels") or {}):
                return
            else:
                restart(h)
        except Crash:
            restart(h)
    raise AssertionError("session s1 did not converge")


def events_of(h: Harness) -> Counter[tuple[str, str]]:
    return Counter((e["reason"], e["message"]) for e in h.kube.events)


def test_a_crash_between_any_two_api_calls_loses_no_event_and_repeats_none(tmp_path: Path) -> None:
    """Task failures, retries, the SLA miss and the outcome: the same Events, each once, wherever
    the controller dies (their names derive from the commit, and the status write that commits
    them records them, so the next controller creates what its predecessor could not)."""
    clean = Harness(tmp_path / "clean")
    clean.workflow(RETRIED)
    before = sum(clean.kube.requests.values())
    fail_or_finish_with_an_sla(clean)
    total = sum(clean.kube.requests.values()) - before
    expected = events_of(clean)
    assert clean.kube.event_reasons() == [
        "Started",
        "Retrying",
        "SLAMissed",
        "TaskFailed",
        "Retrying",
        "TaskFailed",
        "Failed",
    ], clean.kube.events
    assert clean.kube.status(NS, "s1")["phase"] == "Failed"
    for n in range(1, total + 1):
        h = Harness(tmp_path / str(n))
        h.workflow(RETRIED)
        fail_or_finish_with_an_sla(h, n)
        got = events_of(h)
        assert set(got) == set(expected), (n, "lost or changed", set(expected) ^ set(got))
        assert max(got.values()) == 1, (n, "created twice", got)
        # the outbox holds the last write's Events only (the outcome, maybe a failure): no growth
        last = h.kube.status(NS, "s1")["lastEvents"]["events"]
        assert last[-1]["reason"] == "Failed" and len(last) <= 2, (n, last)
