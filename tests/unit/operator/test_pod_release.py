"""Finished task pods go once their results are committed, their logs kept in the log store
(KUDIG_POD_RETENTION, KUDIG_LOG_STORE); a crash in between converges; no log is lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_kube import Crash
from kudig_operator.controller import Controller
from kudig_operator.plan.pods import PodView
from kudig_operator.plan.release import pods_to_release
from test_controller import NS, Harness

from kudig.cluster.logstore import ConfigMapLogStore, StoredLog, retention
from kudig.errors import KudigError

CHAIN = """
+a:
  sh>: echo a
+b:
  sh>: echo b
+c:
  sh>: exit 1
"""


def harness(tmp_path: Path, policy: str) -> Harness:
    h = Harness(tmp_path)

    def controller() -> Controller:
        ctl = Harness.controller(h)
        object.__setattr__(
            ctl, "settings", ctl.settings.__class__(**{**ctl.settings.__dict__, "pod_retention": policy})
        )
        return ctl

    h.controller = controller  # type: ignore[method-assign]
    h.ctl = h.controller()
    return h


def run_chain(h: Harness) -> list[str]:
    h.workflow(CHAIN)
    h.session()
    names = []
    for task, fail in (("+a", False), ("+b", False), ("+c", True)):
        pod = h.pod_for(task)
        names.append(pod)
        finish(h, pod, f"log of {task}\n", fail)
    return names


def finish(h: Harness, pod: str, log: str, fail: bool = False) -> None:
    """The pod's task ends, having written `log`; the watch delivers it."""
    output = {"error": {"message": "Command failed with code 1", "class": "RuntimeError"}} if fail else {}
    h.kube.finish_pod(NS, pod, output={"error": None, **output}, exit_code=1 if fail else 0, log=log)
    h.ctl.on_pod_event(NS, h.kube.pod(NS, pod), False)


def stored(h: Harness, pod: str) -> str | None:
    return ConfigMapLogStore(h.kube).get(NS, "s1", pod)  # type: ignore[arg-type]


def test_retention_all_keeps_every_pod(tmp_path: Path) -> None:
    h = harness(tmp_path, "all")
    pods = run_chain(h)
    assert h.status()["phase"] == "Failed"
    assert set(pods) <= set(h.pods())
    assert stored(h, pods[0]) is None


def test_retention_none_stores_each_log_then_deletes_the_pod(tmp_path: Path) -> None:
    h = harness(tmp_path, "none")
    a, b, c = run_chain(h)
    assert h.status()["phase"] == "Failed"
    assert h.pods() == []
    assert [stored(h, p) for p in (a, b, c)] == ["log of +a\n", "log of +b\n", "log of +c\n"]
    listed = ConfigMapLogStore(h.kube).list(NS, "s1")  # type: ignore[arg-type]
    assert {(s.task, s.pod) for s in listed} == {("+wf+a", a), ("+wf+b", b), ("+wf+c", c)}
    # the Session's ownership collects them with it
    cm = h.kube.config_maps[(NS, f"{a}-log")]
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "Session" and cm["immutable"] is True


def test_retention_failed_keeps_the_failed_pod(tmp_path: Path) -> None:
    h = harness(tmp_path, "failed")
    a, _, c = run_chain(h)
    assert h.pods() == [c]
    assert stored(h, a) == "log of +a\n" and stored(h, c) is None


def test_a_pod_goes_only_after_its_result_is_committed(tmp_path: Path) -> None:
    h = harness(tmp_path, "none")
    h.workflow(CHAIN)
    h.session()
    pod = h.pod_for("+a")
    h.kube.fail_next("replace_status", Crash("killed"))  # the commit fails: nothing may be released
    with pytest.raises(Crash):
        finish(h, pod, "a's log\n")
    assert pod in h.pods() and stored(h, pod) is None
    h.ctl = h.controller()  # a restart: the pod is finished, the state does not know yet
    h.watch_session()
    h.ctl.on_pod_event(NS, h.kube.pod(NS, pod), False)
    assert h.tasks()["+wf+a"]["state"] == "success"
    assert pod not in h.pods() and stored(h, pod) == "a's log\n"


def test_a_crash_between_storing_and_deleting_converges(tmp_path: Path) -> None:
    h = harness(tmp_path, "none")
    h.workflow(CHAIN)
    h.session()
    pod = h.pod_for("+a")
    h.kube.fail_next("delete_pod", Crash("killed"))
    with pytest.raises(Crash):
        finish(h, pod, "a's log\n")
    assert pod in h.pods() and stored(h, pod) == "a's log\n"
    assert h.tasks()["+wf+a"]["state"] == "success"
    h.ctl = h.controller()
    h.ctl.on_pod_event(NS, h.kube.pod(NS, pod), False)
    h.watch_session()
    assert pod not in h.pods()
    b = h.pod_for("+b")  # and the session went on, one pod per task
    assert h.task_of(b) == "+wf+b"


def test_a_log_that_cannot_be_stored_keeps_its_pod(tmp_path: Path) -> None:
    h = harness(tmp_path, "none")
    h.workflow(CHAIN)
    h.session()
    pod = h.pod_for("+a")
    h.kube.fail_next("create_config_map", RuntimeError("etcd is full"))
    finish(h, pod, "a's log\n")
    assert h.tasks()["+wf+a"]["state"] == "success"
    assert pod in h.pods()


def test_release_is_judged_by_the_observed_pod() -> None:
    running = PodView("p1", owner_uid="u", phase="Running")
    done = PodView("p1", owner_uid="u", phase="Succeeded")
    other = PodView("p2", owner_uid="someone-else", phase="Succeeded")
    failed = PodView("p3", owner_uid="u", phase="Failed")
    assert pods_to_release("u", set(), [running], {"p1": done}, "none") == [done]
    assert pods_to_release("u", set(), [done], {"p1": running}, "none") == []
    assert pods_to_release("u", {"p1"}, [done], {}, "none") == []
    assert pods_to_release("u", set(), [other], {}, "none") == []
    assert pods_to_release("u", set(), [done, failed], {}, "failed") == [done]
    assert pods_to_release("u", set(), [done, failed], {}, "all") == []


def test_retention_values() -> None:
    assert retention(None) == "all" and retention(" None ") == "none"
    with pytest.raises(KudigError, match="KUDIG_POD_RETENTION='some'"):
        retention("some")


def test_a_long_log_keeps_its_end(tmp_path: Path) -> None:
    import random

    h = Harness(tmp_path)
    store = ConfigMapLogStore(h.kube)  # type: ignore[arg-type]
    rng = random.Random(1)
    text = "".join(f"{rng.getrandbits(64):016x} line {i}\n" for i in range(200_000))
    h.kube.add("sessions", NS, {"metadata": {"name": "s1"}, "spec": {}})
    store.put(NS, h.kube.obj("sessions", NS, "s1"), StoredLog("+wf+t", "pod-1", "2024"), text)
    got = store.get(NS, "s1", "pod-1")
    assert got is not None and got.startswith("[kudig: the start of this log was dropped")
    assert got.endswith("line 199999\n") and len(got) < len(text)
