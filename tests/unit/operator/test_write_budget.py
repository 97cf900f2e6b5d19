"""The per-session status write budget (plan/budget.py): pods finishing at 100/s cost at most 2
status writes per second, and a chain's next pod is still created at once."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from kudig_operator.plan.budget import DEFAULT_WRITE_INTERVAL, write_deferred_until
from kudig_operator.plan.sessionplan import SessionPlan
from test_controller import NS, Harness

TASKS = 300
FAN = "+fan:\n  _parallel: true\n" + "".join(f"  +t{i:03d}:\n    sh>: 'true'\n" for i in range(TASKS))
CHAIN = "".join(f"+s{i}:\n  sh>: 'true'\n" for i in range(5))


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    h.ctl.settings = replace(h.ctl.settings, status_write_interval=DEFAULT_WRITE_INTERVAL)
    return h


def writes(h: Harness) -> int:
    return h.kube.requests[("update", "sessions/status")]


def fire_due(h: Harness) -> None:
    """The controller's wake-up thread: fire the Session's timer when it is due."""
    assert h.ctl.wakeups is not None
    key = ("session", (NS, "s1"))
    due = h.ctl.wakeups.due(key)
    if due is not None and due <= h.now:
        h.ctl.wakeups.cancel(key)
        h.ctl.fire(key)


def test_pods_finishing_at_100_per_second_cost_at_most_2_writes_per_second(h: Harness) -> None:
    h.workflow(FAN)
    h.session()
    pods = h.pods()
    assert len(pods) == TASKS
    start = h.now
    per_second: Counter[int] = Counter()
    for pod in pods:  # one pod finishes every 10 ms; each event queues a reconcile
        h.now += 0.01
        before = writes(h)
        fire_due(h)
        h.ctl.note_pod(NS, h.kube.finish_pod(NS, pod, output={"error": None}), False)
        h.ctl.reconcile_news(NS, "s1")
        if pod != pods[-1]:  # (the last one finishes the Session: that write is never deferred)
            per_second[int(h.now - start)] += writes(h) - before
    assert h.status()["phase"] == "Succeeded"
    assert h.status()["progress"] == f"{TASKS + 2}/{TASKS + 2}"
    busiest = max(per_second.values())
    assert busiest <= 2, f"status writes per second: {dict(per_second)}"
    assert sum(per_second.values()) >= 3, "the budget still writes progress while the pods finish"
    assert h.ctl.stats["writes_deferred"] > TASKS / 2


def test_a_chain_creates_its_next_pod_at_once(h: Harness) -> None:
    h.workflow(CHAIN)
    h.session()
    for i in range(5):
        pod = h.pod_for(f"+s{i}")
        h.now += 0.01  # well inside the write interval of the write that created this pod
        h.ctl.note_pod(NS, h.kube.finish_pod(NS, pod, output={"error": None}), False)
        h.ctl.reconcile_news(NS, "s1")
        if i < 4:
            assert h.pod_for(f"+s{i + 1}"), "the next step's pod is created by the same reconcile"
    assert h.status()["phase"] == "Succeeded"
    assert h.ctl.stats["writes_deferred"] == 0


def test_a_write_that_creates_pods_or_finishes_is_never_deferred() -> None:
    status = {"phase": "Running"}
    decoded = object()
    plain = SessionPlan(status=status, decoded=decoded)  # type: ignore[arg-type]
    assert write_deferred_until(plain, 10.0, 10.1, 0.5) == 10.5
    assert write_deferred_until(plain, 10.0, 10.6, 0.5) is None, "the interval is over"
    assert write_deferred_until(plain, None, 10.1, 0.5) is None, "no write yet"
    assert write_deferred_until(plain, 10.0, 10.1, 0.0) is None, "no budget"
    for change in (
        {"create_pods": [{"metadata": {"name": "p"}}]},
        {"finished": True},
        {"delete_pods": ["p"]},
        {"labels": {"kudig.io/finished": "1"}},
        {"outcome": "succeeded"},
        {"wakeup": 10.1},
        {"status": None},
    ):
        assert write_deferred_until(replace(plain, **change), 10.0, 10.1, 0.5) is None, change  # type: ignore[arg-type]
