"""kopf's handlers for Workflows and Sessions (`main.on_workflow`, `main.on_session`) return at once
and never wait for a reconcile: kopf hands a handler an object's next event only once the previous
call returned, and the Watchdog counts a version as delivered when the handler sees it. Handlers
that waited for their reconcile (queued behind pod news, or retrying against an API server coming
back) held back every later event of their object, and /readyz called a working watch stale (the
e2e API-server restart test failed so under load). Here every worker is busy: each event is still
seen at once, and the reconciles queued meanwhile run later on the newest version."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf
import pytest
from kudig_operator import main
from kudig_operator.health import Watchdog
from test_controller import NS, Harness

from kudig.api import SESSIONS, WORKFLOWS, encode_key

DIG = "+a:\n  sh>: echo a\n"


class Busy:
    """The controller's reconcile workers (one), occupied until `release()`."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.gate = threading.Event()
        self.executor.submit(self.gate.wait, 30)

    def release(self) -> None:
        self.gate.set()
        self.executor.shutdown(wait=True)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    saved = (main._rt.controller, main._rt.executor, main._rt.watchdog)
    main._rt.controller, main._rt.watchdog = h.ctl, Watchdog(h.ctl)
    yield h
    main._rt.controller, main._rt.executor, main._rt.watchdog = saved


def deliver(plural: str, obj: dict[str, Any], kind: str = "MODIFIED") -> None:
    """One watch event through kopf's handler, as kopf calls it; it must return at once."""
    handler = main.on_session if plural == SESSIONS else main.on_workflow
    meta = obj["metadata"]
    call = handler(event={"type": kind, "object": obj}, body=kopf.Body(obj), name=meta["name"], namespace=NS)
    asyncio.run(asyncio.wait_for(call, timeout=2))


def seen(plural: str, name: str) -> str | None:
    assert main._rt.watchdog is not None
    return main._rt.watchdog._seen.get((plural, NS, name))


def add_workflow(h: Harness, name: str = "wf") -> dict[str, Any]:
    h.kube.add_config_map(NS, f"{name}-files", {encode_key(f"{name}.dig"): DIG})
    body = {"metadata": {"name": name}, "spec": {"dig": DIG, "project": {"configMaps": [f"{name}-files"]}}}
    return h.kube.add(WORKFLOWS, NS, body)


def test_session_events_are_seen_while_every_worker_is_busy(h: Harness) -> None:
    h.ctl.on_workflow_event(NS, "wf", add_workflow(h))
    busy = Busy()
    main._rt.executor = busy.executor
    body = {
        "metadata": {"name": "s1"},
        "spec": {"workflow": "wf", "sessionTime": "2024-01-30T00:00:00+00:00"},
    }
    first = h.kube.add(SESSIONS, NS, body)
    deliver(SESSIONS, first, "ADDED")
    assert seen(SESSIONS, "s1") == first["metadata"]["resourceVersion"]
    second = h.kube.set_spec(SESSIONS, NS, "s1", params={"x": 1})
    deliver(SESSIONS, second)
    assert seen(SESSIONS, "s1") == second["metadata"]["resourceVersion"]
    assert h.pods() == []  # nothing reconciled yet: the only worker is busy
    busy.release()  # the queued reconciles run: the Session starts, once
    assert len(h.pods()) == 1
    assert h.status()["phase"] == "Running"


def test_queued_workflow_reconciles_use_the_newest_version_and_a_deletion_forgets_it(h: Harness) -> None:
    busy = Busy()
    main._rt.executor = busy.executor
    obj = add_workflow(h)
    deliver(WORKFLOWS, obj, "ADDED")
    assert seen(WORKFLOWS, "wf") == obj["metadata"]["resourceVersion"]
    deliver(WORKFLOWS, obj, "DELETED")
    assert seen(WORKFLOWS, "wf") is None
    busy.release()  # both queued reconciles read the newest version: deleted, so never compiled
    assert h.ctl.workflows.get((NS, "wf")) is None

    busy = Busy()
    main._rt.executor = busy.executor
    deliver(WORKFLOWS, obj, "ADDED")
    busy.release()
    compiled = h.ctl.workflows.get((NS, "wf"))
    assert compiled is not None and compiled.ok


def test_a_resync_queues_its_fresh_reconciles_once_and_never_waits_for_them() -> None:
    from fake_kube import FakeKube
    from test_scope import Resyncs

    class Running(Resyncs):
        def active_sessions(self) -> list[tuple[str, str]]:
            return [(NS, "s1")]

    ctl = Running(FakeKube())
    queued: list[Callable[[], None]] = []
    dog = Watchdog(ctl, period=5, submit=queued.append)
    dog.resync_once()
    dog.resync_once()  # the first is still queued: not queued again
    assert dog.last_ok is not None and ctl.reconciled == [] and len(queued) == 1
    queued.pop()()
    assert ctl.reconciled == [(NS, "s1")]
    dog.resync_once()
    assert len(queued) == 1
