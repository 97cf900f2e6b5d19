"""`KUDIG_NAMESPACE`: every namespace, one, or a pattern read as kopf reads it (kopf watches the
Workflows and Sessions, kudig's own loops the pods and the resync: they must agree on every
namespace), and the pod watch and the resync keep to it."""

from __future__ import annotations

from typing import Any

from fake_kube import FakeKube
from hypothesis import given
from hypothesis import strategies as st
from kopf._cogs.structs.references import NamespaceName, match_namespace
from kudig_operator.health import Watchdog
from kudig_operator.podwatch import PodWatch
from kudig_operator.scope import Scope
from test_podwatch import Recorder, pod

from kudig.api import SESSIONS

NAMES = st.text("ab-", min_size=1, max_size=5)
GLOBS = st.builds(
    lambda neg, body: ("!" if neg else "") + body, st.booleans(), st.text("ab-*?", min_size=1, max_size=4)
)


@given(st.lists(GLOBS, min_size=1, max_size=4), NAMES)
def test_a_pattern_serves_exactly_what_kopf_watches(globs: list[str], namespace: str) -> None:
    spec = ", ".join(globs)
    assert Scope.parse(spec).serves(namespace) == match_namespace(NamespaceName(namespace), spec)


def test_every_one_or_a_pattern() -> None:
    every, one, pattern = Scope.parse(None), Scope.parse(" team-a "), Scope.parse("e2e-a-*")
    assert (every.api_namespace, every.kopf_namespaces, every.serves("x")) == (None, [], True)
    assert (one.api_namespace, one.kopf_namespaces) == ("team-a", ["team-a"])
    assert one.serves("team-a") and not one.serves("team-ab")
    assert (pattern.api_namespace, pattern.kopf_namespaces) == (None, ["e2e-a-*"])
    assert pattern.serves("e2e-a-x1") and not pattern.serves("e2e-b-x1")
    all_but = Scope.parse("!kube-*,!kudig-system")
    assert (
        all_but.serves("team-a") and not all_but.serves("kube-system") and not all_but.serves("kudig-system")
    )


def test_the_pod_watch_delivers_only_the_served_namespaces() -> None:
    kube = FakeKube()
    kube.pods[("e2e-a-1", "p")] = pod("p", "5", ns="e2e-a-1")
    kube.pods[("e2e-b-1", "q")] = pod("q", "6", ns="e2e-b-1")
    seen = Recorder()
    watch = PodWatch(kube, seen, scope=Scope.parse("e2e-a-*"))
    watch.relist()
    assert seen.events == [("e2e-a-1", "p", False)]
    assert set(watch.known) == {("e2e-a-1", "p")}, "another group's pods are not even remembered"
    kube.watch_events = [
        {"type": "MODIFIED", "object": pod("q", "7", "Succeeded", ns="e2e-b-1")},
        {"type": "MODIFIED", "object": pod("p", "8", "Succeeded", ns="e2e-a-1")},
    ]
    assert watch.watch_once() is True
    assert seen.events[1:] == [("e2e-a-1", "p", False)]


class Resyncs:
    """What the resync asks of the controller."""

    def __init__(self, kube: FakeKube) -> None:
        self.api = kube
        self.reconciled: list[tuple[str, str]] = []

    def active_sessions(self) -> list[tuple[str, str]]:
        return []

    def reconcile_session(self, namespace: str, name: str, fresh: bool = False) -> None:
        self.reconciled.append((namespace, name))

    def on_session_event(self, namespace: str, name: str, body: Any) -> None: ...

    def on_workflow_event(self, namespace: str, name: str, body: Any) -> None: ...

    def reconcile_workflow(self, namespace: str, name: str) -> None: ...

    def recheck_workflow(self, namespace: str, name: str) -> None: ...


def test_the_resync_keeps_to_the_served_namespaces() -> None:
    kube = FakeKube()
    for ns in ("e2e-a-1", "e2e-b-1"):
        kube.add(SESSIONS, ns, {"metadata": {"name": "s"}, "spec": {"workflow": "wf"}})
    ctl = Resyncs(kube)
    now = [1000.0]
    dog = Watchdog(ctl, scope=Scope.parse("e2e-a-*"), period=5, clock=lambda: now[0])
    for _ in range(3):  # listed, then missed: reconciled, and never the other group's
        dog.resync_once()
        now[0] += 5
    assert set(ctl.reconciled) == {("e2e-a-1", "s")}
    assert [ref[1] for ref in dog.stale(now[0] + 100)] == ["e2e-a-1"]
