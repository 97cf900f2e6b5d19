"""The controller's own pod watch: list, watch from the list's version, re-list on 410 Gone,
deletions noticed across a re-list, and health that goes bad when the watch goes quiet."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
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


class _OutageKube(FakeKube):
    """A FakeKube that goes down as a restarting API server does: the open watch stream delivers
    its events, then breaks (the connection dropped), and the next `down` lists are refused."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down
        self.broken = False

    def watch_pods(
        self, namespace: str | None, selector: str, resource_version: str, timeout: int
    ) -> Iterator[dict[str, Any]]:
        yield from super().watch_pods(namespace, selector, resource_version, timeout)
        if not self.broken:
            self.broken = True
            for _ in range(self.down):
                self.fail_next("list_pods_version", ConnectionRefusedError("[Errno 111] Connection refused"))
            self.pods[("ns", "b")] = pod("b", "8", "Succeeded")  # finished during the outage
            raise ConnectionResetError("Response ended prematurely")
        time.sleep(0.01)  # later streams: healthy ones that the server ends at their timeout


def test_the_watch_comes_back_after_an_api_server_restart() -> None:
    """The stream breaks, the lists are refused while the server is down, then the loop lists
    again (a pod that finished meanwhile is delivered) and watches on: the failures, the list and
    the events are counted (/metrics: how an operator sees the watch came back), health is good."""
    kube = _OutageKube(down=3)
    kube.pods[("ns", "a")] = pod("a", "5")
    kube.pods[("ns", "b")] = pod("b", "6")
    kube.watch_events = [{"type": "MODIFIED", "object": pod("a", "7", "Succeeded")}]
    seen = Recorder()
    watch = PodWatch(kube, seen, backoff=(0.01, 0.04))
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while watch.counts["pod_watch_streams"] < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        watch.stop()
        thread.join(5)
    assert not thread.is_alive()
    counts = watch.counts
    assert counts["pod_watch_errors"] == 4, counts  # the broken stream, then 3 refused lists
    assert counts["pod_watch_lists"] >= 2 and counts["pod_watch_events"] == 1, counts
    assert counts["pod_watch_streams"] >= 3, counts
    assert ("ns", "b", False) in seen.events[2:], "the pod that finished during the outage"
    assert watch.healthy() == (True, "ok") and watch.last_error is None
