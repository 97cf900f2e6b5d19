"""The controller's own pod watch: list, watch from the list's version, re-list on 410 Gone,
deletions noticed across a re-list, and health that goes bad when the watch goes quiet."""

from __future__ import annotations

from typing import Any

from fake_kube import FakeKube
from kudig_operator.podwatch import PodWatch


def pod(name: str, rv: str, phase: str = "Running", ns: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": rv,
            "labels": {"kudig.io/session": "s"},
        },
        "status": {"phase": phase},
    }


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, bool]] = []

    def __call__(self, namespace: str, body: Any, deleted: bool) -> None:
        self.events.append((namespace, body["metadata"]["name"], deleted))


def test_list_then_watch_then_relist_after_410() -> None:
    kube = FakeKube()
    kube.pods[("ns", "a")] = pod("a", "5")
    kube.pods[("ns", "b")] = pod("b", "6")
    kube.pods[("ns", "other")] = {
        "metadata": {"name": "other", "namespace": "ns", "labels": {}},
        "status": {},
    }
    seen = Recorder()
    now = [1000.0]
    watch = PodWatch(kube, seen, clock=lambda: now[0], timeout=300)
    assert watch.healthy()[0] is False
    watch.relist()
    assert sorted(seen.events) == [("ns", "a", False), ("ns", "b", False)], "the selector is the server's"
    assert watch.healthy() == (True, "ok")
    listed_at = watch.resource_version
    kube.watch_events = [
        {"type": "MODIFIED", "object": pod("a", "20", "Succeeded")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "25"}}},
        {"type": "DELETED", "object": pod("b", "26")},
    ]
    del kube.pods[("ns", "b")]
    assert watch.watch_once() is True
    assert kube.watched_from == [listed_at]
    assert seen.events[-2:] == [("ns", "a", False), ("ns", "b", True)]
    assert watch.resource_version == "26"
    # the server forgot our version: list again; a pod deleted meanwhile is reported deleted
    kube.watch_events = [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}]
    assert watch.watch_once() is False
    del kube.pods[("ns", "a")]
    seen.events.clear()
    watch.relist()
    assert seen.events == [("ns", "a", True)]
    assert watch.known == {}


def test_an_unchanged_pod_is_not_delivered_twice_by_a_relist() -> None:
    kube = FakeKube()
    kube.pods[("ns", "a")] = pod("a", "5")
    seen = Recorder()
    watch = PodWatch(kube, seen)
    watch.relist()
    watch.relist()
    assert seen.events == [("ns", "a", False)]


def test_a_quiet_watch_is_unhealthy() -> None:
    kube = FakeKube()
    now = [0.0]
    watch = PodWatch(kube, Recorder(), clock=lambda: now[0], timeout=300)
    watch.relist()
    now[0] = 300 + 89
    assert watch.healthy()[0] is True
    now[0] = 300 + 91
    healthy, why = watch.healthy()
    assert not healthy and "silent" in why


def test_a_failing_callback_does_not_stop_the_watch() -> None:
    kube = FakeKube()
    kube.pods[("ns", "a")] = pod("a", "5")
    kube.pods[("ns", "b")] = pod("b", "6")
    calls: list[str] = []

    def boom(namespace: str, body: Any, deleted: bool) -> None:
        calls.append(body["metadata"]["name"])
        raise ValueError("bad pod")

    watch = PodWatch(kube, boom)
    watch.relist()
    assert sorted(calls) == ["a", "b"] and watch.synced
